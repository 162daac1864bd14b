"""What sampling and generation return: texts, choices and how likely each one was."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from . import display, records
from ._text import Table
from .sampling_stats import (ChiSquareResult, FrequencyCheck, binomial_interval, chi_square_test,
                             frequency_check)

if TYPE_CHECKING:
    import pandas
    import torch

    from .tokens import Vocabulary

__all__ = ["Generation", "GenerationStep", "SampleFrequencies"]


@dataclass(frozen=True)
class GenerationStep:
    """One generated token and how the model rated it when it was chosen.

    ``prob``, ``logprob`` and ``rank`` (1-based; ties share a rank) are under the
    model's own next-token distribution; ``warped_prob`` is the probability under
    the warped distribution it was actually drawn from (1.0 when greedy).
    """

    token: str
    id: int
    logprob: float
    rank: int
    warped_prob: float

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


@dataclass(frozen=True)
class Generation:
    """A generated continuation of ``prompt``.

    ``text`` is the decoded continuation only (the stop string or EOS token that
    ended it included, as Hugging Face ``generate`` returns it); ``full_text`` is
    ``prompt + text``. ``stop_reason`` is ``"length"`` (``max_new_tokens`` reached),
    ``"eos"`` or ``"stop"`` (``stop_string`` appeared). ``seed`` and ``index``
    (the sample number) reproduce a sampled generation: ``generate(prompt,
    do_sample=True, seed=g.seed, n=g.index + 1, ...)[g.index]`` has ``g``'s tokens.
    """

    prompt: str
    text: str
    token_ids: tuple[int, ...]
    steps: tuple[GenerationStep, ...]
    stop_reason: str
    stop_string: str | None = None
    seed: int | None = None
    index: int = 0

    @property
    def tokens(self) -> list[str]:
        return [s.token for s in self.steps]

    @property
    def full_text(self) -> str:
        return self.prompt + self.text

    @property
    def logprob(self) -> float:
        """Log-probability of the generated tokens under the (unwarped) model, in nats."""
        return sum(s.logprob for s in self.steps)

    @property
    def greedy(self) -> bool:
        """True when every token was the model's argmax (rank 1)."""
        return all(s.rank == 1 for s in self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return (f"Generation(prompt={self.prompt!r}, text={self.text!r}, "
                f"tokens={len(self.steps)}, stop_reason={self.stop_reason!r})")

    def __str__(self) -> str:
        why = self.stop_reason + (f" {self.stop_string!r}" if self.stop_string else "")
        table = Table(("step", ">4"), ("token", "<20"), ("id", ">7"), ("prob", ">8.4f"),
                      ("rank", ">6"), ("warped p", ">8.4f"))
        lines = [f"{self.prompt!r} -> {self.text!r} ({len(self.steps)} tokens, stopped by {why})",
                 *table.header(rule=False)]
        for i, s in enumerate(self.steps):
            lines.append(table.row(i, repr(s.token), s.id, s.prob, s.rank, s.warped_prob))
        return "\n".join(lines)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.generation(self)

    def to_records(self) -> list[dict]:
        """One dict per generated token: prompt, index, step, token, id, prob, logprob, rank,
        warped_prob."""
        return records.generation(self)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())


class SampleFrequencies:
    """How often each next token came up in ``n`` samples, next to its sampling probability.

    Built by :meth:`logitprobe.Probe.sample_frequencies`. ``probs`` is the warped
    distribution the samples were drawn from (what the frequencies estimate).
    """

    def __init__(self, counts: Mapping[int, int], n: int, *, probs: "torch.Tensor",
                 vocab: "Vocabulary", prompt: str, seed: int):
        self._counts = dict(counts)
        self.n = n
        self._probs = probs
        self._vocab = vocab
        self.prompt = prompt
        self.seed = seed

    @property
    def vocab(self) -> Vocabulary:
        """The model's :class:`~logitprobe.tokens.Vocabulary` (tokens <-> ids, as the probe's)."""
        return self._vocab

    @property
    def probs(self) -> "torch.Tensor":
        """The warped next-token distribution that was sampled (a copy)."""
        return self._probs.clone()

    @property
    def counts(self) -> dict[int, int]:
        """Token id -> count, most frequent first (ids: several ids can decode alike)."""
        return dict(self._sorted())

    def _sorted(self) -> list[tuple[int, int]]:
        return sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def count(self, token: Any) -> int:
        return self._counts.get(self._vocab.token_id(token), 0)

    def frequency(self, token: Any) -> float:
        return self.count(token) / self.n

    def prob(self, token: Any) -> float:
        """The token's probability under the sampled (warped) distribution."""
        return float(self._probs[self._vocab.token_id(token)])

    def interval(self, token: Any, *, confidence: float = 0.99,
                 method: str = "exact") -> tuple[float, float]:
        return binomial_interval(self.count(token), self.n, confidence=confidence, method=method)

    def check(self, token: Any, *, at_least: float | None = None, at_most: float | None = None,
              confidence: float = 0.99, method: str = "exact") -> FrequencyCheck:
        """:func:`frequency_check` for one token's count."""
        tid = self._vocab.token_id(token)
        return frequency_check(self._counts.get(tid, 0), self.n, at_least=at_least,
                               at_most=at_most, confidence=confidence, method=method,
                               token=self._vocab.decode_one(tid))

    def most_common(self, k: int | None = None) -> list[tuple[str, int]]:
        items = self._sorted()
        return [(self._vocab.decode_one(i), c) for i, c in (items if k is None else items[:k])]

    def chi_square(self, *, min_expected: float = 5.0) -> ChiSquareResult:
        """Goodness of fit of the counts to the warped distribution."""
        return chi_square_test(self._counts, self._probs, min_expected=min_expected)

    def __len__(self) -> int:
        """The number of distinct tokens sampled."""
        return len(self._counts)

    def __repr__(self) -> str:
        top = self.most_common(3)
        return f"SampleFrequencies(prompt={self.prompt!r}, n={self.n}, top={top!r})"

    def __str__(self, rows: int = 10) -> str:
        table = Table(("token", "<20"), ("count", ">7"), ("freq", ">7.4f"), ("p", ">7.4f"),
                      ("99% interval", ""))
        lines = [f"{self.n} samples after {self.prompt!r} (seed={self.seed}):",
                 *table.header(rule=False)]
        for tid, c in self._sorted()[:rows]:
            lo, hi = binomial_interval(c, self.n, confidence=0.99)
            lines.append(table.row(repr(self._vocab.decode_one(tid)), c, c / self.n,
                                   float(self._probs[tid]), f"[{lo:.4f}, {hi:.4f}]"))
        if len(self._counts) > rows:
            lines.append(f"  ... {len(self._counts) - rows} more tokens")
        return "\n".join(lines)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.frequencies(self)

    def to_records(self) -> list[dict]:
        """Every sampled token, most frequent first: prompt, token, id, count, freq, p, and the 99%
        interval (low, high)."""
        return records.frequencies(self)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())
