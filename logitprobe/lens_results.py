"""Result objects of :meth:`Probe.lens` and :meth:`Probe.attribute` (tables and tensors)."""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Sequence, Union

import torch

from . import display, records
from ._text import Table, clip
from .errors import InvalidArgument
from .results import Candidate, NextToken, TopK, log_softmax
from .tokens import check_k

if TYPE_CHECKING:
    import pandas

    from .tokens import Vocabulary

__all__ = ["Attribution", "LensResult"]

TokenLike = Union[str, int]


class LensResult:
    """A logit lens: the next-token prediction read after every block.

    Entry ``i`` is the residual stream after ``depths[i]`` blocks (0: the
    embeddings; the last entry: the model's output), put through the model's
    final norm and unembedding. ``logits`` is ``Float[Tensor, "entry vocab"]``;
    ``at(i)`` is entry ``i`` as a :class:`NextToken`.
    """

    def __init__(self, logits: torch.Tensor, *, vocab: Vocabulary, prompt: str,
                 token_ids: Sequence[int], position: int, labels: Sequence[str],
                 depths: Sequence[float], tracked: Sequence[int], k: int):
        self._logits = logits.detach().to(torch.float32)
        self._logprobs = log_softmax(self._logits)
        self._vocab = vocab
        self.prompt = prompt
        self.token_ids = tuple(token_ids)
        self.position = position  # 0-based index of the position read, in token_ids
        self.labels = list(labels)  # 'embed', 'block 0', ..., 'block 29'
        self.depths = list(depths)
        self.tracked_ids = tuple(tracked)
        self.k = k

    @property
    def tracked(self) -> list[str]:
        return [self._vocab.decode_one(t) for t in self.tracked_ids]

    @property
    def logits(self) -> torch.Tensor:
        return self._logits.clone()

    @property
    def logprobs(self) -> torch.Tensor:
        return self._logprobs.clone()

    @property
    def probs(self) -> torch.Tensor:
        return self._logprobs.exp()

    def __len__(self) -> int:
        return self._logits.shape[0]

    def at(self, entry: int) -> NextToken:
        """Entry ``entry`` (an index into ``labels``, negative from the end) as a NextToken."""
        n = len(self)
        try:
            i = operator.index(entry)
        except TypeError:
            i = None
        if i is None or isinstance(entry, bool) or not -n <= i < n:
            raise InvalidArgument(f"entry={entry!r}: `entry` must be an int index into "
                                  f"labels, in [{-n}, {n - 1}] (-1 is the model's output)")
        return NextToken(self._logits[i], vocab=self._vocab, prompt=self.prompt,
                         token_ids=self.token_ids, position=self.position)

    @property
    def final(self) -> NextToken:
        """The last entry: the model's own prediction."""
        return self.at(-1)

    # -- one token across layers ---------------------------------------------------
    def _column(self, token: TokenLike) -> int:
        return self._vocab.token_id(token)

    def rank(self, token: TokenLike) -> list[int]:
        """1-based rank of ``token`` at every entry (ties share the best rank)."""
        col = self._logits[:, self._column(token)]
        return ((self._logits > col[:, None]).sum(-1) + 1).tolist()

    def prob(self, token: TokenLike) -> list[float]:
        return self._logprobs[:, self._column(token)].exp().tolist()

    def logprob(self, token: TokenLike) -> list[float]:
        return self._logprobs[:, self._column(token)].tolist()

    def logit(self, token: TokenLike) -> list[float]:
        return self._logits[:, self._column(token)].tolist()

    @property
    def ranks(self) -> torch.Tensor:
        """Ranks of the tracked tokens: ``Int[Tensor, "entry tracked"]``."""
        ids = list(self.tracked_ids)
        return (self._logits[:, None, :] > self._logits[:, ids, None]).sum(-1) + 1

    def top(self, k: int | None = None) -> list[TopK]:
        """The top ``k`` (default: the ``k`` the lens was made with) at every entry."""
        k = check_k(self.k if k is None else k, self._logits.shape[-1])
        # One batched topk and rank count for all entries (not one NextToken each).
        values, ids = torch.topk(self._logits, k, dim=-1)  # [entry, k]
        ranks = (self._logits[:, None, :] > values[:, :, None]).sum(-1) + 1
        logprobs = self._logprobs.gather(-1, ids)
        tops = []
        for row in range(len(self)):
            order = sorted(range(k), key=lambda j: (-float(values[row, j]), int(ids[row, j])))
            tops.append(TopK([Candidate(
                token=self._vocab.decode_one(int(ids[row, j])), id=int(ids[row, j]),
                logit=float(values[row, j]), prob=math.exp(float(logprobs[row, j])),
                logprob=float(logprobs[row, j]), rank=int(ranks[row, j])) for j in order],
                prompt=self.prompt))
        return tops

    def __repr__(self) -> str:
        return (f"LensResult(prompt={self.prompt!r}, entries={len(self)}, "
                f"tracked={self.tracked!r}, final={self.final.argmax.token!r})")

    def __str__(self) -> str:
        tracked = self.tracked
        table = Table(("layer", "<14"), (f"top-{self.k}", "<44"), ("p(top1)", ">7.4f"),
                      *((clip(repr(tok), 16), ">16") for tok in tracked))
        lines = [f"Logit lens after {self.prompt!r} (position {self.position}):", *table.header()]
        ranks = self.ranks.tolist() if tracked else [[] for _ in range(len(self))]
        probs = self._logprobs[:, list(self.tracked_ids)].exp().tolist() if tracked else ranks
        for i, (label, top) in enumerate(zip(self.labels, self.top())):
            lines.append(table.row(label, " ".join(repr(t) for t in top.tokens), top[0].prob,
                                   *(f"#{r} p={p:.3f}" for r, p in zip(ranks[i], probs[i]))))
        return "\n".join(lines)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.lens(self)

    def to_records(self) -> list[dict]:
        """One dict per entry: prompt, layer, depth, top (the top-k tokens), p_top1, and
        ``rank '<tok>'`` / ``prob '<tok>'`` for each tracked token."""
        return records.lens(self)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())


class Attribution:
    """Direct logit attribution of one token's logit (or a logit difference).

    ``values[i]`` is what part ``labels[i]`` (embeddings, each layer's
    attention and MLP output) adds to the logit through the final norm,
    linearised at the position read; ``heads[layer, head]`` splits each
    attention output further (the rest of it is the attention output bias,
    ``attn - heads.sum(1)``). ``total = values.sum() + bias`` equals ``logit``,
    the model's own value, up to float error (``error``).
    """

    def __init__(self, *, prompt: str, position: int, vocab: Vocabulary, token_id: int,
                 versus_id: int | None, labels: Sequence[str], values: torch.Tensor,
                 heads: torch.Tensor, bias: float, logit: float):
        self.prompt = prompt
        self.position = position
        self.token_id = token_id
        self.versus_id = versus_id
        self.token = vocab.decode_one(token_id)
        self.versus = None if versus_id is None else vocab.decode_one(versus_id)
        self.labels = list(labels)
        self._values = values.detach().to(torch.float32)
        self._heads = heads.detach().to(torch.float32)
        self.bias = bias  # final-norm bias and unembedding bias along the direction
        self.logit = logit  # the model's logit (difference) at this position

    @property
    def quantity(self) -> str:
        if self.versus is None:
            return f"logit({self.token!r})"
        return f"logit({self.token!r}) - logit({self.versus!r})"

    @property
    def values(self) -> torch.Tensor:
        """Per-part attribution: ``Float[Tensor, "part"]``, aligned with ``labels``."""
        return self._values.clone()

    @property
    def heads(self) -> torch.Tensor:
        """Per-head attribution: ``Float[Tensor, "layer head"]``."""
        return self._heads.clone()

    def _by_kind(self, kind: str) -> torch.Tensor:
        return torch.stack([v for v, lab in zip(self._values, self.labels)
                            if lab.endswith(" " + kind)])

    @property
    def attn(self) -> torch.Tensor:
        """Each layer's attention output: ``Float[Tensor, "layer"]``."""
        return self._by_kind("attn")

    @property
    def mlp(self) -> torch.Tensor:
        """Each layer's MLP output: ``Float[Tensor, "layer"]``."""
        return self._by_kind("mlp")

    @property
    def total(self) -> float:
        return float(self._values.sum()) + self.bias

    @property
    def error(self) -> float:
        """``total - logit``: float error of the decomposition."""
        return self.total - self.logit

    def top(self, n: int = 5, *, heads: bool = False) -> list[tuple[str, float]]:
        """The ``n`` parts (or heads) with the largest absolute attribution."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument(f"n={n!r}: `n` must be a positive int (try n=5)")
        if heads:
            L, H = self._heads.shape
            pairs = [(f"L{l}H{h}", float(self._heads[l, h])) for l in range(L) for h in range(H)]
        else:
            pairs = [(lab, float(v)) for lab, v in zip(self.labels, self._values)]
        return sorted(pairs, key=lambda p: -abs(p[1]))[:n]

    def __repr__(self) -> str:
        return (f"Attribution({self.quantity}, prompt={self.prompt!r}, logit={self.logit:.4g}, "
                f"parts={len(self.labels)}, heads={tuple(self._heads.shape)})")

    def __str__(self) -> str:
        scale = max(float(self._values.abs().max()), abs(self.bias), 1e-12)
        # The third column (a bar, or the error note) has no title and no width.
        table = Table(("part", "<12"), ("attribution", ">+11.4f"), ("", ""))
        lines = [f"Direct logit attribution of {self.quantity} after {self.prompt!r} "
                 f"(position {self.position}):", table.header(rule=False)[0].rstrip()]
        rows = [*zip(self.labels, self._values.tolist()), ("bias", self.bias)]
        for label, value in rows:
            bar = "#" * round(10 * abs(value) / scale)
            bar = f"{bar:>10}|" if value < 0 else f"{'':>10}|{bar}"
            lines.append(table.row(label, value, bar))
        lines.append(table.row("sum", self.total, "").rstrip())
        lines.append(table.row("model", self.logit, f" (error {self.error:+.2g})"))
        return "\n".join(lines)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.attribution(self)

    def to_records(self) -> list[dict]:
        """One dict per part (and the bias): prompt, quantity, part, attribution."""
        return records.attribution(self)

    def to_pandas(self) -> "pandas.DataFrame":
        """``to_records()`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records())
