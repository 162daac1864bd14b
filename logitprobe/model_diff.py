"""What changed between two models? Paired comparison of next-token distributions and verdicts.

:func:`compare_models` runs the same prompts through a baseline and a candidate
(two checkpoints, two dtypes, a model and its quantization, a model with and
without interventions) and measures, per prompt, KL in both directions, total
variation, top-1 agreement, top-k overlap and the named tokens' rank and
probability changes. Each model's forwards go through its engine once (one
batched ``next_token`` call per model). :func:`suite_flips` runs a behavioural
suite under both and counts verdict flips, with an exact McNemar test (defined in
:mod:`logitprobe._verdict_flips`, importable from here).

>>> diff = compare_models(probe, probe_bf16, prompts, tokens=[" Paris"])  # doctest: +SKIP
>>> diff.top1_agreement, diff.quantile("kl", 0.95)                        # doctest: +SKIP
(1.0, 0.0071)
>>> diff.assert_quantile("kl", 0.95, at_most=0.05)                        # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from . import divergence
from ._provenance import side_labels
from ._text import Table, clip
from ._verdict_flips import (CaseOutcome, Flips, failure_text, mcnemar_exact,  # noqa: F401
                             suite_flips)
from .assertions import LogitAssertionError
from .errors import InvalidArgument
from .interventions.compare import TokenChange
from .tokens import check_k

__all__ = ["CaseOutcome", "Flips", "ModelDiff", "PromptDiff", "compare_models", "mcnemar_exact",
           "suite_flips"]

STATS = ("kl", "kl_reverse", "tv", "top_k_overlap")
QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class PromptDiff:
    """One prompt under both models.

    ``kl`` is KL(baseline || candidate), ``kl_reverse`` KL(candidate || baseline)
    (nats); ``tv`` the total variation; ``top_k_overlap`` the fraction of the
    baseline's top k also in the candidate's top k; ``changes`` the named tokens.
    """

    index: int  # 0-based position in the prompts given
    prompt: str
    kl: float
    kl_reverse: float
    tv: float
    top1_agrees: bool
    top_k_overlap: float
    baseline_top1: str
    candidate_top1: str
    top1_rank_after: int = 1  # the baseline's top-1 token's rank under the candidate
    changes: tuple[TokenChange, ...] = ()


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), inf-safe."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    if frac == 0.0:
        return v[lo]
    a, b = v[lo], v[lo + 1]
    return b if math.isinf(b) else a + frac * (b - a)


def _fraction(value: Any, name: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a number in [0, 1] "
                              f"(e.g. {example})")
    return float(value)


class ModelDiff:
    """Per-prompt differences between a baseline and a candidate model; ``str()`` is a report.

    ``prompts`` keeps the order given; :meth:`worst` sorts them (largest first).
    """

    def __init__(self, prompts: Sequence[PromptDiff], *, baseline: str, candidate: str, k: int):
        self.prompts = tuple(prompts)
        self.baseline = baseline
        self.candidate = candidate
        self.k = k

    def __len__(self) -> int:
        return len(self.prompts)

    def values(self, stat: str) -> list[float]:
        """One statistic (``kl``, ``kl_reverse``, ``tv``, ``top_k_overlap``) per prompt."""
        if stat not in STATS:
            raise InvalidArgument(f"stat={stat!r}: `stat` must be one of {', '.join(STATS)}")
        return [getattr(p, stat) for p in self.prompts]

    def quantile(self, stat: str, q: float) -> float:
        """The ``q`` quantile of ``stat`` over prompts (linear interpolation, as numpy's)."""
        return _quantile(self.values(stat), _fraction(q, "q", "q=0.95"))

    def quantiles(self, stat: str, qs: Sequence[float] = QUANTILES) -> dict[float, float]:
        return {q: self.quantile(stat, q) for q in qs}

    @property
    def top1_agreement(self) -> float:
        """Fraction of prompts whose most likely next token is the same under both models."""
        return sum(p.top1_agrees for p in self.prompts) / len(self.prompts)

    @property
    def mean_top_k_overlap(self) -> float:
        return sum(p.top_k_overlap for p in self.prompts) / len(self.prompts)

    def worst(self, n: int | None = None, by: str = "kl") -> list[PromptDiff]:
        """Prompts that changed most first: by ``by`` (``top_k_overlap``: smallest first)."""
        self.values(by)  # validates `by`
        sign = 1.0 if by == "top_k_overlap" else -1.0
        ranked = sorted(self.prompts, key=lambda p: (sign * getattr(p, by), p.index))
        return ranked if n is None else ranked[:n]

    # -- assertions -----------------------------------------------------------------------
    def assert_top1_agreement(self, at_least: float, *, show: int = 10) -> float:
        """Top-1 agrees on at least ``at_least`` of the prompts; returns the agreement."""
        __tracebackhide__ = True
        at_least = _fraction(at_least, "at_least", "at_least=0.98")
        got = self.top1_agreement
        if got >= at_least:
            return got
        agree = sum(p.top1_agrees for p in self.prompts)
        flipped = [p for p in self.worst() if not p.top1_agrees]
        raise LogitAssertionError(
            f"top-1 agrees on {got:.1%} of prompts ({agree} of {len(self)}), below the required "
            f"{at_least:.1%} ({self.baseline} -> {self.candidate})",
            self.table(flipped[:show], title=f"prompts whose top-1 changed (largest KL first, "
                                            f"{min(show, len(flipped))} of {len(flipped)}):"))

    def assert_quantile(self, stat: str, q: float, *, at_most: float, show: int = 10) -> float:
        """The ``q`` quantile of ``stat`` (``kl``, ``kl_reverse``, ``tv``) is at most ``at_most``.

        ``diff.assert_quantile("kl", 0.95, at_most=0.05)``: "95th percentile KL at most 0.05".
        """
        __tracebackhide__ = True
        if stat == "top_k_overlap":
            raise InvalidArgument("stat='top_k_overlap': an overlap should be large, not small; "
                                  "bound kl, kl_reverse or tv")
        value = self.quantile(stat, q)
        if isinstance(at_most, bool) or not isinstance(at_most, (int, float)) or at_most < 0:
            raise InvalidArgument(f"at_most={at_most!r}: `at_most` must be a number >= 0 "
                                  "(e.g. at_most=0.05)")
        if value <= at_most:
            return value
        over = [p for p in self.worst(by=stat) if getattr(p, stat) > at_most]
        raise LogitAssertionError(
            f"{_percentile(q)} {stat} = {value:.4g} > {at_most:g} over {len(self)} prompts "
            f"({len(over)} above the bound; {self.baseline} -> {self.candidate})",
            self.table(over[:show], title=f"worst prompts by {stat} ({min(show, len(over))} of "
                                          f"{len(over)} above {at_most:g}):"))

    # -- reports --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The aggregate numbers: top-1 agreement, mean top-k overlap, quantiles per statistic."""
        return {"prompts": len(self), "k": self.k, "top1_agreement": self.top1_agreement,
                "mean_top_k_overlap": self.mean_top_k_overlap,
                "quantiles": {s: {_percentile(q): v for q, v in self.quantiles(s).items()}
                              for s in ("kl", "kl_reverse", "tv")}}

    def to_dict(self, worst: int | None = None) -> dict[str, Any]:
        """Everything, JSON-ready (floats may be ``inf``): summary, then prompts worst first."""
        rows = []
        for p in self.worst(worst):
            row = {f: getattr(p, f) for f in ("index", "prompt", "kl", "kl_reverse", "tv",
                                                "top1_agrees", "top_k_overlap", "baseline_top1",
                                                "candidate_top1", "top1_rank_after")}
            row["changes"] = [{"token": c.token, "id": c.id, "rank_before": c.rank_before,
                               "rank_after": c.rank_after, "prob_before": c.prob_before,
                               "prob_after": c.prob_after} for c in p.changes]
            rows.append(row)
        return {"baseline": self.baseline, "candidate": self.candidate, **self.summary(),
                "worst": rows}

    def table(self, rows: Sequence[PromptDiff], title: str | None = None) -> str:
        """``# | prompt | KL(b||c) | KL(c||b) | TV | top-1 | top-k`` plus named tokens' ranks."""
        named = [c.token for c in rows[0].changes] if rows else []
        table = Table(("#", ">4"), ("prompt", "<32"), ("KL(b||c)", ">9"), ("KL(c||b)", ">9"),
                      ("TV", ">6.3f"), ("top-1 (baseline -> candidate)", "<30"),
                      (f"top-{self.k}", ">6.0%"), *((clip(repr(t), 16), ">16") for t in named))
        lines = ([title] if title else []) + table.header()
        for p in rows:
            top1 = f"{p.baseline_top1!r} (same)" if p.top1_agrees else \
                f"{p.baseline_top1!r} -> {p.candidate_top1!r}"
            lines.append(table.row(p.index, repr(p.prompt), _fmt(p.kl), _fmt(p.kl_reverse), p.tv,
                                   top1, p.top_k_overlap,
                                   *(f"{c.rank_before} -> {c.rank_after}" for c in p.changes)))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ModelDiff(baseline={self.baseline!r}, candidate={self.candidate!r}, "
                f"prompts={len(self)}, top1_agreement={self.top1_agreement:.3f}, "
                f"p95_kl={self.quantile('kl', 0.95):.4g})")

    def __str__(self) -> str:
        qs = QUANTILES
        table = Table(("", "<10"), *((_percentile(q), ">9") for q in qs))
        lines = [f"{self.baseline} (baseline) vs {self.candidate} (candidate), "
                 f"{len(self)} prompt(s)",
                 f"top-1 agreement: {self.top1_agreement:.1%} "
                 f"({sum(p.top1_agrees for p in self.prompts)} of {len(self)}); "
                 f"mean top-{self.k} overlap: {self.mean_top_k_overlap:.1%}",
                 *table.header()]
        for stat, label in (("kl", "KL(b||c)"), ("kl_reverse", "KL(c||b)"), ("tv", "TV")):
            lines.append(table.row(label, *map(_fmt, self.quantiles(stat, qs).values())))
        lines += ["", self.table(self.worst(10), title="prompts that changed most (by KL):")]
        return "\n".join(lines)


def _percentile(q: float) -> str:
    return "max" if q == 1.0 else f"p{q * 100:g}"


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.4g}"


# -- computing a diff ----------------------------------------------------------------------
def compare_models(baseline: Any, candidate: Any, prompts: Sequence[str] | str, *,
                   tokens: Sequence[Any] = (), k: int = 10, position: int = -1,
                   baseline_interventions: Any = None, candidate_interventions: Any = None,
                   labels: tuple[str, str] | None = None) -> ModelDiff:
    """Compare two probes' next-token distributions over ``prompts``.

    ``baseline`` and ``candidate`` may be the same probe with different
    ``*_interventions`` (a model with and without an ablation). Both models must
    share a tokenizer (each prompt must encode to the same ids). ``tokens`` are
    followed by name (rank and probability before and after, per prompt).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InvalidArgument("prompts=[]: give at least one prompt to compare the models on")
    if baseline.vocab_size != candidate.vocab_size:
        raise InvalidArgument(f"candidate: its vocabulary has {candidate.vocab_size} tokens, the "
                              f"baseline's {baseline.vocab_size}; compare models that share a "
                              "tokenizer")
    for i, p in enumerate(prompts):
        if isinstance(p, str) and baseline.encode(p) != candidate.encode(p):
            raise InvalidArgument(f"prompts[{i}]={clip(repr(p), 60)}: the two models tokenize "
                                  "it differently; compare models that share a tokenizer")
    k = check_k(k, baseline.vocab_size)
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    ids = [baseline.token_id(t) for t in tokens]
    base = baseline.next_token(prompts, position=position, interventions=baseline_interventions)
    cand = candidate.next_token(prompts, position=position, interventions=candidate_interventions)
    lb = torch.stack([nt.logits for nt in base])  # [prompts, vocab]
    lc = torch.stack([nt.logits for nt in cand])
    kl_bc = divergence.kl(lb, lc).tolist()
    kl_cb = divergence.kl(lc, lb).tolist()
    tv = divergence.total_variation(lb, lc).tolist()
    rows = []
    for i, (nb, nc) in enumerate(zip(base, cand)):
        tb, tc = nb.top(k), nc.top(k)
        changes = []
        for tid in ids:
            b, a = nb.candidate(tid), nc.candidate(tid)
            changes.append(TokenChange(b.token, tid, b.rank, a.rank, b.prob, a.prob, b.logit,
                                       a.logit))
        rows.append(PromptDiff(index=i, prompt=prompts[i], kl=kl_bc[i], kl_reverse=kl_cb[i],
                               tv=tv[i], top1_agrees=tb[0].id == tc[0].id,
                               top_k_overlap=len(set(tb.ids) & set(tc.ids)) / k,
                               baseline_top1=tb[0].token, candidate_top1=tc[0].token,
                               top1_rank_after=nc.rank(tb[0].id), changes=tuple(changes)))
    names = side_labels(labels, baseline, candidate, baseline_interventions,
                        candidate_interventions)
    return ModelDiff(rows, baseline=names[0], candidate=names[1], k=k)
