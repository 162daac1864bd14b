"""Plots of interventions: a :class:`Comparison` and a :class:`PatchSweep` heatmap.

Each function draws on ``ax`` (or a new figure) and returns the Axes; nothing
calls ``plt.show()``. (Self-contained, so ``logitprobe.plot`` can re-export
these without an import cycle.)

>>> ax = plot_comparison(probe.compare(prompt, [spec], tokens=[" coffee"]))  # doctest: +SKIP
>>> ax = plot_patch_sweep(probe.patch_sweep(clean, corrupted, [" Paris", " Rome"]))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..plot._util import axes_or_new, expect
from .compare import Comparison
from .patching import PatchSweep

__all__ = ["plot_comparison", "plot_patch_sweep"]


_axes = axes_or_new  # shared with logitprobe.plot
_expect = expect


def plot_comparison(comparison: Comparison, *, k: int | None = None, ax: Any = None,
                    title: str | None = None) -> Any:
    """Paired bars: probability before and after, for the top tokens of either and named ones."""
    _expect(comparison, Comparison, "comparison", "probe.compare(prompt, interventions)")
    k = comparison.k if k is None else k
    ids: list[int] = []
    for c in [*comparison.before.top(k), *comparison.after.top(k)]:
        if c.id not in ids:
            ids.append(c.id)
    ids += [t for t in comparison.token_ids if t not in ids]
    before = [comparison.before.candidate(i) for i in ids]
    after = [comparison.after.candidate(i) for i in ids]
    ax = _axes(ax, (max(6.0, 0.55 * len(ids) + 2), 3.6))
    x = np.arange(len(ids))
    ax.bar(x - 0.2, [c.prob for c in before], width=0.4, label="before", color="#94a3b8")
    ax.bar(x + 0.2, [c.prob for c in after], width=0.4, label="after", color="#f97316")
    ax.set_xticks(x, [repr(c.token) for c in before], rotation=60, ha="right")
    for tick, tid in zip(ax.get_xticklabels(), ids):
        if tid in comparison.token_ids:
            tick.set_fontweight("bold")
    ax.set_ylabel("probability")
    ax.set_xlabel("token")
    ax.legend(loc="upper right")
    ax.set_title(title if title is not None else
                 f"{comparison.prompt[-40:]!r}: KL(before||after) = {comparison.kl:.3g} nats")
    return ax


def plot_patch_sweep(sweep: PatchSweep, *, normalized: bool = True, ax: Any = None,
                     cmap: str = "RdBu", title: str | None = None) -> Any:
    """Heatmap of a patching sweep: layers as rows, positions (or heads) as columns.

    ``normalized`` shows ``(value - corrupted) / (clean - corrupted)`` on a
    diverging scale centred on 0 (1 = the patch restores the clean answer).
    """
    _expect(sweep, PatchSweep, "sweep", "probe.patch_sweep(clean, corrupted, tokens)")
    matrix, rows, cols = sweep.heatmap(normalized=normalized)
    data = matrix.numpy()
    ax = _axes(ax, (max(4.0, 0.9 * len(cols) + 2.5), max(3.0, 0.22 * len(rows) + 1.5)))
    bound = float(np.nanmax(np.abs(data))) if data.size else 1.0
    bound = bound if bound > 0 else 1.0
    image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=-bound, vmax=bound,
                      interpolation="nearest")
    ax.set_yticks(np.arange(len(rows)), rows)
    ax.set_xticks(np.arange(len(cols)), cols, rotation=45 if len(cols) > 1 else 0, ha="right")
    ax.set_ylabel("layer")
    ax.set_xlabel({"pos": "position (corrupted prompt)", "head": "head"}.get(
        sweep.axes[-1], ""))
    ax.figure.colorbar(image, ax=ax, label="normalized metric" if normalized else sweep.metric)
    ax.set_title(title if title is not None else f"patching {sweep.activation}: {sweep.metric}")
    return ax
