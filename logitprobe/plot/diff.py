"""Plots of a paired model comparison: the KL distribution and a rank-change scatter.

>>> from logitprobe.plot.diff import plot_model_diff              # doctest: +SKIP
>>> plot_model_diff(compare_models(probe, probe_bf16, prompts))   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidArgument
from ..model_diff import ModelDiff
from ._util import axes_or_new, expect
from .style import palette

__all__ = ["plot_kl_distribution", "plot_model_diff", "plot_rank_changes"]


def _diff_class() -> type:
    return ModelDiff


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    return axes_or_new(ax, figsize)


def plot_kl_distribution(diff: Any, *, ax: Any = None) -> Any:
    """Histogram of per-prompt KL(baseline || candidate) on a log axis, p50/p95 marked."""
    expect(diff, _diff_class(), "diff", "compare_models")
    ax = _axes(ax, (6, 3.5))
    values = [v for v in diff.values("kl") if math.isfinite(v)]
    colors = palette(ax)
    floor = 1e-9  # identical distributions: KL 0, drawn at the floor of the log axis
    shown = [max(v, floor) for v in values]
    if shown:
        lo, hi = math.log10(min(shown)), math.log10(max(shown))
        n = min(30, max(5, len(shown) // 2))
        wide = hi - lo > 1.0  # a log axis only when the values span more than a decade
        if wide:
            edges = [10 ** (lo + (hi - lo) * i / n) for i in range(n + 1)]
            ax.set_xscale("log")
        else:
            edges = n
        ax.hist(shown, bins=edges, color=colors["bar"], alpha=0.85, edgecolor="white")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for q, style in ((0.5, "--"), (0.95, ":")):
        v = diff.quantile("kl", q)
        if math.isfinite(v):
            ax.axvline(max(v, floor), color=colors["highlight"], linestyle=style,
                       label=f"p{q * 100:g} = {v:.3g} nats")
    infinite = len(diff) - len(values)
    title = f"KL({diff.baseline} || {diff.candidate}) over {len(diff)} prompts"
    ax.set_title(title + (f" ({infinite} infinite, not drawn)" if infinite else ""), fontsize=9)
    ax.set_xlabel("KL per prompt (nats)")
    ax.set_ylabel("prompts")
    ax.legend(fontsize=8)
    return ax


def plot_rank_changes(diff: Any, *, ax: Any = None) -> Any:
    """Rank before vs after (log-log) of the named tokens, else of the baseline's top-1 token.

    Points on the diagonal did not move; above it, the token fell under the candidate.
    """
    expect(diff, _diff_class(), "diff", "compare_models")
    ax = _axes(ax, (4.5, 4.5))
    colors = palette(ax)["cycle"]
    named = bool(diff.prompts and diff.prompts[0].changes)
    if named:
        series = {}
        for p in diff.prompts:
            for c in p.changes:
                series.setdefault(c.token, []).append((c.rank_before, c.rank_after))
    else:
        series = {"baseline's top-1": [(1, p.top1_rank_after) for p in diff.prompts]}
    top = 1
    for i, (label, pts) in enumerate(series.items()):
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        top = max(top, *xs, *ys)
        # jitter-free: overlapping points are drawn translucent
        ax.scatter(xs, ys, s=18, alpha=0.6, color=colors[i % len(colors)], label=repr(label)
                   if named else label)
    ax.plot([1, top], [1, top], color="gray", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.8, top * 1.25)
    ax.set_ylim(0.8, top * 1.25)
    ax.set_xlabel(f"rank under {diff.baseline}")
    ax.set_ylabel(f"rank under {diff.candidate}")
    ax.set_title("rank changes (diagonal: unchanged)", fontsize=9)
    ax.legend(fontsize=8)
    return ax


def plot_model_diff(diff: Any, *, axes: Any = None) -> Any:
    """Both panels side by side; returns the two Axes."""
    expect(diff, _diff_class(), "diff", "compare_models")
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained",
                               gridspec_kw={"width_ratios": [1.5, 1]})
    elif len(axes) != 2:
        raise InvalidArgument(f"axes: got {len(axes)} Axes; give two (KL histogram, ranks)")
    plot_kl_distribution(diff, ax=axes[0])
    plot_rank_changes(diff, ax=axes[1])
    return axes
