"""The tutorial's figures of one next-token distribution, one call each.

Every point of the vocabulary is drawn (50k+ markers) with ``ax.plot`` and
``rasterized=True``: one path, drawn as pixels inside a vector figure, so a
figure renders in well under a second instead of the tutorial's 10-20 s.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from ..errors import InvalidArgument
from ..results import NextToken
from ._util import axes_or_new, expect, short
from .style import palette

__all__ = ["plot_log_softmax_panels", "plot_logits", "plot_softmax_panels", "plot_top_k"]

TokenLike = Union[str, int]
_MADE_BY = "probe.next_token(prompt)"


def _cloud(ax: Any, x: np.ndarray, y: np.ndarray | None, *, marker: str, size: float,
           face: Any, edge: Any = "none") -> Any:
    args = (x,) if y is None else (x, y)
    (line,) = ax.plot(*args, linestyle="none", marker=marker, markersize=size,
                      markerfacecolor=face, markeredgecolor=edge, markeredgewidth=0.5,
                      rasterized=True, label="_vocabulary")
    return line


def _vocab_xlim(ax: Any, n: int) -> None:
    pad = max(10, n // 300)
    ax.set_xlim(-pad, n - 1 + pad)


def _highlights(highlight: Any) -> list[TokenLike]:
    if highlight is None:
        return []
    if isinstance(highlight, (list, tuple)):
        return list(highlight)
    return [highlight]


def plot_logits(next_token: NextToken, highlight: TokenLike | Sequence[TokenLike] | None = None,
                *, argmax: bool = True, ax: Any = None, title: str | None = None) -> Any:
    """Every token's logit against its vocabulary index; ``highlight`` and the argmax marked.

    >>> nt = probe.next_token("I like oat milk in my")            # doctest: +SKIP
    >>> ax = plot_logits(nt, highlight=" coffee")                 # doctest: +SKIP
    """
    expect(next_token, NextToken, "next_token", _MADE_BY)
    tokens = _highlights(highlight)
    marked = [next_token.candidate(t) for t in tokens]
    ax = axes_or_new(ax, (10, 3))
    colors = palette(ax)
    logits = next_token.logits.numpy()
    _cloud(ax, np.arange(logits.size), logits, marker="h", size=5,
           face=colors["cloud_face"], edge=colors["cloud_edge"])
    best = next_token.argmax
    if argmax and best.id not in [c.id for c in marked]:
        label = f"Max logit ({best.token!r})"
        ax.plot([best.id], [best.logit], linestyle="none", marker="D", markersize=7,
                color=colors["argmax"], markeredgecolor="black", markeredgewidth=0.6,
                label=label, zorder=4)
    cycle = [colors["highlight"], *colors["cycle"][1:]]
    for j, cand in enumerate(marked):
        ax.plot([cand.id], [cand.logit], linestyle="none", marker="s", markersize=7,
                color=cycle[j % len(cycle)], markeredgecolor="black", markeredgewidth=0.6,
                label=f"{cand.token!r} (rank {cand.rank}" + (": max logit)" if cand.id == best.id
                                                            else ")"), zorder=5)
    _vocab_xlim(ax, logits.size)
    if title is None:
        title = f"Next-token logits after {short(next_token.prompt)}"
    ax.set(xlabel="Vocab index", ylabel="Logits (raw)", title=title)
    if argmax or marked:
        ax.legend(loc="lower right", fontsize="small")
    return ax


def _panel_axes(axes: Any) -> Any:
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(12, 3.3), layout="constrained")
        return axes
    flat = np.asarray(axes, dtype=object).ravel()
    if flat.size != 3 or not all(hasattr(a, "plot") for a in flat):
        raise InvalidArgument(f"axes={axes!r}: `axes` must be three matplotlib Axes "
                              "(e.g. plt.subplots(1, 3)[1]) or None")
    return np.asarray(axes, dtype=object)


def plot_softmax_panels(next_token: NextToken, *, axes: Any = None) -> Any:
    """Three panels: raw logits, softmax probabilities, and logits vs. softmax.

    Returns the array of three Axes.
    """
    expect(next_token, NextToken, "next_token", _MADE_BY)
    axes = _panel_axes(axes)
    a0, a1, a2 = axes.flat
    colors = palette(a0)
    logits = next_token.logits.numpy()
    probs = next_token.probs.numpy()
    x = np.arange(logits.size)
    _cloud(a0, x, logits, marker=".", size=3, face=colors["cloud_face"])
    a0.set(xlabel="Vocab index", ylabel="Logits (raw)", title="Raw logits")
    _cloud(a1, x, probs, marker=".", size=5, face=colors["red"])
    a1.set(xlabel="Vocab index", ylabel="Softmax probabilities", title="Softmax logits")
    for a in (a0, a1):
        _vocab_xlim(a, logits.size)
    _cloud(a2, logits, probs, marker=".", size=5, face=colors["blue"])
    a2.set(xlabel="Logits (raw)", ylabel="Softmax logits", title="Logits vs. softmax logits")
    return axes


def plot_log_softmax_panels(next_token: NextToken, *, axes: Any = None) -> Any:
    """Three panels: softmax, log-softmax, and softmax vs. log-softmax. Returns the Axes array."""
    expect(next_token, NextToken, "next_token", _MADE_BY)
    axes = _panel_axes(axes)
    a0, a1, a2 = axes.flat
    colors = palette(a0)
    probs = next_token.probs.numpy()
    logprobs = next_token.logprobs.numpy()
    x = np.arange(probs.size)
    _cloud(a0, x, probs, marker=".", size=5, face=colors["green"])
    a0.set(xlabel="Vocab index", ylabel="Softmax probabilities", title="Softmax logits")
    _cloud(a1, x, logprobs, marker=".", size=3, face=_alpha(colors["red"], 0.3))
    a1.set(xlabel="Vocab index", ylabel="Log-softmax", title="Log-softmax logits")
    for a in (a0, a1):
        _vocab_xlim(a, probs.size)
    _cloud(a2, probs, logprobs, marker=".", size=5, face=colors["blue"])
    a2.set(xlabel="Softmax", ylabel="Log-softmax", title="Softmax vs. log-softmax")
    return axes


def _alpha(color: Any, alpha: float) -> tuple:
    from matplotlib.colors import to_rgba

    return to_rgba(color, alpha)


_VALUES = {"prob": "Probability", "logit": "Logit", "logprob": "Log-probability"}


def plot_top_k(next_token: NextToken, k: int = 10, *, value: str = "prob",
               highlight: TokenLike | None = None, ax: Any = None,
               title: str | None = None) -> Any:
    """The top-``k`` table as horizontal bars, best on top (``value``: prob, logit, logprob)."""
    expect(next_token, NextToken, "next_token", _MADE_BY)
    if value not in _VALUES:
        raise InvalidArgument(f"value={value!r}: `value` must be one of {sorted(_VALUES)!r}")
    top = next_token.top(k)
    hid = None if highlight is None else next_token.candidate(highlight).id
    ax = axes_or_new(ax, (6, 0.5 + 0.32 * len(top)))
    colors = palette(ax)
    label = _VALUES[value]
    widths = [getattr(c, value) for c in top]
    bar_colors = [colors["highlight"] if c.id == hid else colors["bar"] for c in top]
    y = np.arange(len(top))
    ax.barh(y, widths, color=bar_colors)
    ax.set_yticks(y, [repr(c.token) for c in top])
    ax.invert_yaxis()  # rank 1 on top
    for yi, w in zip(y, widths):
        ax.annotate(f"{w:.3g}", (w, yi), xytext=(3 if w >= 0 else -3, 0),
                    textcoords="offset points", va="center", ha="left" if w >= 0 else "right",
                    fontsize="small")
    ax.margins(x=0.15)
    ax.set(xlabel=label, ylabel="Token",
           title=title if title is not None else f"Top {len(top)} after {short(next_token.prompt)}")
    return ax
