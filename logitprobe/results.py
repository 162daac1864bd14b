"""Immutable result objects: what the model predicts, ready to query and print.

Ranks are 1-based: the argmax has rank 1, and a token's rank is
``1 + (number of tokens with a strictly greater logit)``, so tied tokens share
a rank. (TransformerLens's ``test_prompt`` prints 0-based ranks.)
"""

from __future__ import annotations

import math
import numbers
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterator, Sequence, Union

import torch

from . import display, divergence, records
from ._text import Table
from .tokens import check_k

if TYPE_CHECKING:
    import pandas

    from .tokens import Vocabulary

__all__ = ["Candidate", "NextToken", "Score", "TokenScore", "TopK"]

TokenLike = Union[str, int]


@dataclass(frozen=True)
class Candidate:
    """One vocabulary entry with its score at one position.

    Equality means "the same token": a candidate equals another candidate with
    the same id and token text (whatever their logits, probabilities or ranks,
    so ``base.argmax == edited.argmax`` asks whether the edit changed the
    prediction), its token string and its id. ``hash`` is the id's, so
    candidates of the same token collapse in a set. Compare ``.prob`` or
    ``.logit`` to compare scores.

    >>> nt.argmax == " Paris", nt.argmax == nt.argmax.id    # doctest: +SKIP
    (True, True)
    """

    token: str
    id: int
    logit: float
    prob: float
    logprob: float
    rank: int

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Candidate):
            return self.id == other.id and self.token == other.token
        if isinstance(other, bool):
            return NotImplemented
        if isinstance(other, str):
            return self.token == other
        if isinstance(other, numbers.Integral):  # int, numpy ints
            return self.id == int(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def source(self) -> "NextToken | None":
        """The distribution this candidate was read from, while it is alive (else None).

        A weak reference: a list of candidates does not keep their vocabulary-sized
        logits alive. pytest's report for a failed ``assert nt.argmax == ' Rome'`` uses it.
        """
        ref = self.__dict__.get("_source")
        return ref() if ref is not None else None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_source", None)  # a weak reference does not pickle
        return state

    def __str__(self) -> str:
        return f"{self.token!r} (rank {self.rank}, p={self.prob:.4g})"


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits - logsumexp(logits)`` over the last axis.

    torch's float32 CPU ``log_softmax`` can be off by ~1e-5 on a 50k vocabulary
    (SmolLM2: -1.881648 where float64 gives -1.881660); ``logsumexp`` is not, and
    every log-probability logitprobe reports is computed this one way.
    """
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


_TABLE = Table(("rank", ">6"), ("token", "<20"), ("id", ">7"), ("logit", ">9.3f"),
               ("prob", ">8.4f"))


def format_table(rows: Sequence[Candidate], *, marked: int | None = None) -> str:
    """``rank | token | id | logit | prob`` table; the row whose id is ``marked`` gets ``>``."""
    lines = _TABLE.header()
    for c in rows:
        mark = ">" if marked is not None and c.id == marked else " "
        lines.append(_TABLE.row(c.rank, repr(c.token), c.id, c.logit, c.prob, mark=mark))
    return "\n".join(lines)


class TopK(Sequence[Candidate]):
    """The k most likely next tokens, best first.

    Supports ``" Paris" in top`` (by token string, id or :class:`Candidate`),
    indexing, iteration and ``len``; ``str(top)`` is a table. Two lists are equal
    when they hold the same tokens in the same order (candidates compare as tokens).
    """

    def __init__(self, candidates: Sequence[Candidate], *, prompt: str | None = None,
                 source: NextToken | None = None):
        self._candidates = tuple(candidates)
        self.prompt = prompt
        self.source = source  # the NextToken it came from: ranks of tokens outside the top k

    @property
    def k(self) -> int:
        return len(self._candidates)

    @property
    def tokens(self) -> list[str]:
        return [c.token for c in self._candidates]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self._candidates]

    def __len__(self) -> int:
        return len(self._candidates)

    def __getitem__(self, index):  # type: ignore[override]
        return self._candidates[index]

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._candidates)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Candidate):
            item = item.id
        if isinstance(item, bool):
            return False
        if isinstance(item, str):
            return item in self.tokens
        if isinstance(item, int):
            return item in self.ids
        return False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TopK):
            return self._candidates == other._candidates
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"TopK(k={self.k}, tokens={self.tokens!r})"

    def __str__(self) -> str:
        return format_table(self._candidates)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.top_k(self)

    def to_records(self) -> list[dict]:
        """One dict per row: prompt, rank, token, id, logit, prob, logprob."""
        return records.candidates(self, self.prompt)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())


class NextToken:
    """The model's distribution over the next token after a prompt (immutable).

    Built by :meth:`logitprobe.Probe.next_token`. ``logits``, ``probs`` and
    ``logprobs`` are float32 tensors of vocabulary size.
    """

    def __init__(self, logits: torch.Tensor, *, vocab: Vocabulary, prompt: str,
                 token_ids: Sequence[int], position: int):
        self._logits = logits.detach().to(torch.float32)
        self._vocab = vocab
        self.prompt = prompt
        self.token_ids = tuple(token_ids)
        self.position = position  # 0-based index of the position read, in token_ids

    @property
    def vocab(self) -> Vocabulary:
        """The model's :class:`~logitprobe.tokens.Vocabulary` (tokens <-> ids, as the probe's)."""
        return self._vocab

    @property
    def logits(self) -> torch.Tensor:
        return self._logits.clone()

    @cached_property
    def _logprobs(self) -> torch.Tensor:
        return log_softmax(self._logits)

    @cached_property
    def _lse(self) -> float:
        # log of the softmax denominator: a token's log-probability is its logit minus
        # this (one reduction, no vocabulary-sized tensor per query)
        return float(torch.logsumexp(self._logits, dim=-1))

    def _rank_of(self, logit: torch.Tensor) -> int:
        return int(torch.count_nonzero(self._logits > logit)) + 1

    @property
    def logprobs(self) -> torch.Tensor:
        return self._logprobs.clone()

    @property
    def probs(self) -> torch.Tensor:
        return self._logprobs.exp()

    @property
    def vocab_size(self) -> int:
        return self._logits.shape[-1]

    def _id(self, token: TokenLike) -> int:
        return self._vocab.token_id(token)

    def candidate(self, token: TokenLike) -> Candidate:
        """Everything about one token: id, logit, probability, rank."""
        tid = self._id(token)
        return self._candidate(tid)

    def _candidate(self, tid: int, rank: int | None = None) -> Candidate:
        logit = self._logits[tid]
        if rank is None:
            rank = self._rank_of(logit)
        value = float(logit)
        logprob = value - self._lse
        cand = Candidate(
            token=self._vocab.decode_one(tid),
            id=tid,
            logit=value,
            prob=math.exp(logprob),
            logprob=logprob,
            rank=rank,
        )
        object.__setattr__(cand, "_source", weakref.ref(self))  # for assertion reports
        return cand

    def top(self, k: int = 10) -> TopK:
        """The ``k`` most likely tokens, best first (ties broken by lower id)."""
        k = check_k(k, self.vocab_size)
        values, ids = torch.topk(self._logits, min(k + 1, self.vocab_size))
        if k < self.vocab_size and values[k] == values[k - 1]:
            # The k-th value is tied beyond the k, and torch.topk picks any of the tied
            # tokens: take the lowest ids (rare, so the common case costs one topk).
            kth = values[k - 1]
            greater = torch.nonzero(self._logits > kth).flatten()
            tied = torch.nonzero(self._logits == kth).flatten()[: k - greater.numel()]
            ids = torch.cat([greater, tied])
            values = self._logits[ids]
        # Order among exact ties: by id. Every token with a greater logit than one of the
        # k is among the k, so a rank (1 + the number strictly greater) is 1 + the position
        # of the first of the sorted k values equal to it: one pass, O(k log k) in all.
        pairs = sorted(zip(values[:k].tolist(), ids[:k].tolist()), key=lambda vi: (-vi[0], vi[1]))
        ranks: list[int] = []
        for i, (value, _) in enumerate(pairs):
            ranks.append(ranks[-1] if i and value == pairs[i - 1][0] else i + 1)
        lse = self._lse
        tokens = self._vocab.decode_each([tid for _, tid in pairs])
        source = weakref.ref(self)  # for assertion reports
        cands = []
        for token, (value, tid), rank in zip(tokens, pairs, ranks):
            cand = Candidate(token=token, id=tid, logit=value, prob=math.exp(value - lse),
                             logprob=value - lse, rank=rank)
            object.__setattr__(cand, "_source", source)
            cands.append(cand)
        return TopK(cands, prompt=self.prompt, source=self)

    def rank(self, token: TokenLike) -> int:
        """1-based rank: 1 + the number of tokens with a strictly greater logit."""
        return self.candidate(token).rank

    def logit(self, token: TokenLike) -> float:
        return float(self._logits[self._id(token)])

    def prob(self, token: TokenLike) -> float:
        return math.exp(self.logprob(token))

    def logprob(self, token: TokenLike) -> float:
        return float(self._logits[self._id(token)]) - self._lse

    def entropy(self) -> float:
        """Shannon entropy of the next-token distribution, in nats."""
        return float(divergence.entropy(self._logits))  # normalized in float64

    @property
    def argmax(self) -> Candidate:
        """The most likely token (the lowest id among exact ties)."""
        return self.top(1)[0]

    def __repr__(self) -> str:
        best = self.argmax
        return (f"NextToken(prompt={self.prompt!r}, argmax={best.token!r}, "
                f"p={best.prob:.4g}, vocab_size={self.vocab_size})")

    def __str__(self) -> str:
        return f"Next token after {self.prompt!r}:\n{self.top(10)}"

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.next_token(self)

    def to_records(self, k: int = 10) -> list[dict]:
        """The top ``k`` rows (as ``str`` shows, k=10): prompt, rank, token, id, logit, prob, logprob."""
        return records.next_token(self, k)

    def to_pandas(self, k: int = 10) -> "pandas.DataFrame":
        """``to_records(k)`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records(k))


@dataclass(frozen=True)
class TokenScore:
    """One continuation token under teacher forcing."""

    token: str
    id: int
    logprob: float
    rank: int
    greedy: bool  # was it the argmax at its position?

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


@dataclass(frozen=True)
class Score:
    """Log-probability of a continuation given a prompt, token by token."""

    prompt: str
    continuation: str
    tokens: tuple[TokenScore, ...]

    @property
    def logprob(self) -> float:
        """Sum of the per-token log-probabilities (nats)."""
        return sum(t.logprob for t in self.tokens)

    @property
    def logprobs(self) -> list[float]:
        return [t.logprob for t in self.tokens]

    @property
    def ranks(self) -> list[int]:
        return [t.rank for t in self.tokens]

    @property
    def is_greedy(self) -> bool:
        """True when greedy decoding from the prompt would produce this continuation."""
        return all(t.greedy for t in self.tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / len(self.tokens))

    def __str__(self) -> str:
        table = Table(("token", "<20"), ("logprob", ">9.4f"), ("prob", ">8.4f"), ("rank", ">6"))
        lines = [f"Score of {self.continuation!r} after {self.prompt!r}: "
                 f"logprob={self.logprob:.4f} (greedy={self.is_greedy})",
                 *table.header(rule=False)]
        for t in self.tokens:
            lines.append(table.row(repr(t.token), t.logprob, t.prob, t.rank))
        return "\n".join(lines)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.score(self)

    def to_records(self) -> list[dict]:
        """One dict per continuation token: position, token, id, logprob, prob, rank, greedy."""
        return records.score(self)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())
