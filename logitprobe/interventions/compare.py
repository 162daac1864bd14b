"""Before / after an intervention: top-k, named tokens, KL divergence, logit difference.

>>> cmp = probe.compare("I like oat milk in my", [SetLogit(" tea", to="max+1")],
...                     tokens=[" coffee", " tea"])                       # doctest: +SKIP
>>> cmp.after.argmax.token, cmp.logit_diff                               # doctest: +SKIP
(' tea', (2.31, -1.0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .. import display, records
from ..divergence import kl
from .._text import Table
from ..results import NextToken, TopK

if TYPE_CHECKING:
    import pandas

__all__ = ["Comparison", "TokenChange"]


@dataclass(frozen=True)
class TokenChange:
    """One named token before and after: ranks are 1-based, probabilities in [0, 1]."""

    token: str
    id: int
    rank_before: int
    rank_after: int
    prob_before: float
    prob_after: float
    logit_before: float
    logit_after: float

    @property
    def rank_change(self) -> int:
        """Positive when the token moved up (rank 5 -> rank 1 is +4)."""
        return self.rank_before - self.rank_after

    @property
    def prob_change(self) -> float:
        return self.prob_after - self.prob_before

    @property
    def logit_change(self) -> float:
        return self.logit_after - self.logit_before


class Comparison:
    """What ``interventions`` changed in the next-token distribution after ``prompt``.

    ``before`` / ``after`` are :class:`~logitprobe.NextToken`; ``kl`` is
    KL(before || after) in nats (inf when the intervention gives probability 0
    to a token that had some, e.g. a ban). ``str(cmp)`` is a table.
    """

    def __init__(self, *, prompt: str, before: NextToken, after: NextToken,
                 token_ids: tuple[int, ...] = (), k: int = 10, specs: tuple = ()):
        self.prompt = prompt
        self.before = before
        self.after = after
        self.token_ids = tuple(token_ids)
        self.k = k
        self.specs = tuple(specs)

    @property
    def top_before(self) -> TopK:
        return self.before.top(self.k)

    @property
    def top_after(self) -> TopK:
        return self.after.top(self.k)

    @cached_property
    def kl(self) -> float:
        """KL(before || after) = sum p_before * (log p_before - log p_after), in nats."""
        return float(kl(self.before.logits, self.after.logits))  # normalized in float64

    @cached_property
    def changes(self) -> tuple[TokenChange, ...]:
        """The named tokens' ranks, probabilities and logits, before and after."""
        out = []
        for tid in self.token_ids:
            b, a = self.before.candidate(tid), self.after.candidate(tid)
            out.append(TokenChange(b.token, tid, b.rank, a.rank, b.prob, a.prob, b.logit, a.logit))
        return tuple(out)

    def logit_difference(self, a: Any, b: Any) -> tuple[float, float]:
        """``logit(a) - logit(b)`` before and after."""
        ca, cb = self.before.candidate(a), self.before.candidate(b)
        da, db = self.after.candidate(a), self.after.candidate(b)
        return ca.logit - cb.logit, da.logit - db.logit

    @property
    def logit_diff(self) -> tuple[float, float] | None:
        """``logit(tokens[0]) - logit(tokens[1])`` before and after, when two tokens were named."""
        if len(self.token_ids) != 2:
            return None
        return self.logit_difference(*self.token_ids)

    @property
    def argmax_changed(self) -> bool:
        return self.before.argmax.id != self.after.argmax.id

    def __repr__(self) -> str:
        return (f"Comparison(prompt={self.prompt!r}, argmax {self.before.argmax.token!r} -> "
                f"{self.after.argmax.token!r}, kl={self.kl:.4g})")

    def __str__(self) -> str:
        lines = [f"prompt {self.prompt!r}: {len(self.specs)} intervention(s); "
                 f"KL(before || after) = {_fmt(self.kl)} nats"]
        # Before and after side by side: two tables joined by `||`.
        left = Table(("#", ">3"), ("before", "<20"), ("prob", ">8.4f"))
        right = Table(("after", "<20"), ("prob", ">8.4f"))
        lines.append(left.header(rule=False)[0] + " ||" + right.header(rule=False)[0][1:])
        lines.append("  " + "-" * 70)
        for i, (b, a) in enumerate(zip(self.top_before, self.top_after), start=1):
            lines.append(left.row(i, repr(b.token), b.prob) + " ||"
                         + right.row(repr(a.token), a.prob)[1:])
        if self.changes:
            changes = Table(("token", "<20"), ("rank", "^16"), ("prob", "^18"), ("logit", "^20"))
            lines += ["", changes.header(rule=False)[0].rstrip(), "  " + "-" * 84]
            for c in self.changes:
                lines.append(changes.row(
                    repr(c.token), f"{c.rank_before:>6} -> {c.rank_after:<6}",
                    f"{c.prob_before:>7.4f} -> {c.prob_after:<7.4f}",
                    f"{_fmt(c.logit_before):>8} -> {_fmt(c.logit_after):<8}").rstrip())
        if self.logit_diff is not None:
            b, a = self.logit_diff
            names = " - ".join(repr(c.token) for c in self.changes)
            lines.append(f"\n  logit diff {names}: {_fmt(b)} -> {_fmt(a)}")
        return "\n".join(lines)

    # -- notebooks and data out (logitprobe.display, logitprobe.records) ------------
    def _repr_html_(self) -> str:
        return display.comparison(self)

    def to_records(self, table: str = "top") -> list[dict]:
        """``table="top"``: one dict per rank (prompt, rank, before, before_id, before_prob,
        after, after_id, after_prob); ``"changes"``: one per named token (ranks, probs, logits
        before and after)."""
        return records.comparison(self, table)

    def to_pandas(self, table: str = "top") -> "pandas.DataFrame":
        """``to_records(table)`` as a DataFrame (needs pandas)."""
        return records.to_pandas(self.to_records(table))


def _fmt(x: float) -> str:
    return str(x) if math.isinf(x) or math.isnan(x) else f"{x:.3f}"
