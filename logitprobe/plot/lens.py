"""Logit-lens plots: tracked tokens across layers, and the top-k at every layer."""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from .._text import clip
from ..errors import InvalidArgument
from ..lens_results import LensResult
from ._util import axes_or_new, expect, short
from .style import palette

__all__ = ["plot_lens", "plot_lens_top"]

TokenLike = Union[str, int]
_MADE_BY = "probe.lens(prompt, tokens=[...])"
_METRICS = {"rank": "Rank (1 = top)", "prob": "Probability", "logprob": "Log-probability",
            "logit": "Logit"}


def _depth_axis(ax: Any, lens: LensResult) -> None:
    n = max(lens.depths)
    ax.set_xlim(min(lens.depths) - 0.3, n + 0.3)
    step = max(1, int(np.ceil(n / 15)))
    ticks = list(range(0, int(n) + 1, step))
    ax.set_xticks(ticks, ["embed" if t == 0 else str(t) for t in ticks])
    ax.set_xlabel("Blocks applied (0 = embeddings)")


def plot_lens(lens: LensResult, tokens: TokenLike | Sequence[TokenLike] | None = None, *,
              metric: str = "rank", ax: Any = None, title: str | None = None) -> Any:
    """Rank (or prob, logprob, logit) of tokens at every layer of a logit lens.

    ``tokens`` defaults to the lens's tracked tokens, or the final prediction
    when none were tracked. Ranks use a log scale with rank 1 at the top.
    """
    expect(lens, LensResult, "lens", _MADE_BY)
    if metric not in _METRICS:
        raise InvalidArgument(f"metric={metric!r}: `metric` must be one of {sorted(_METRICS)!r}")
    if tokens is None:
        tokens = list(lens.tracked_ids) or [lens.final.argmax.id]
    elif not isinstance(tokens, (list, tuple)):
        tokens = [tokens]
    ax = axes_or_new(ax, (8, 3.5))
    colors = palette(ax)
    for j, tok in enumerate(tokens):
        values = getattr(lens, metric)(tok)
        name = lens.final.candidate(tok).token
        ax.plot(lens.depths, values, marker="o", markersize=4, linewidth=1.8,
                color=colors["cycle"][j % len(colors["cycle"])], label=repr(name))
    if metric == "rank":
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.invert_yaxis()
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    elif metric == "prob":
        ax.set_ylim(-0.02, 1.02)
    _depth_axis(ax, lens)
    ax.set_ylabel(_METRICS[metric])
    ax.set_title(title if title is not None else f"Logit lens after {short(lens.prompt)}")
    ax.legend(fontsize="small")
    return ax


def plot_lens_top(lens: LensResult, k: int | None = None, *, ax: Any = None,
                  title: str | None = None) -> Any:
    """The top-``k`` tokens at every layer as a grid: cells coloured by probability."""
    expect(lens, LensResult, "lens", _MADE_BY)
    tops = lens.top(k)
    k = len(tops[0])
    probs = np.array([[c.prob for c in top] for top in tops])  # [entries, k]
    ax = axes_or_new(ax, (1.4 + 1.3 * k, 0.8 + 0.28 * len(tops)))
    colors = palette(ax)
    image = ax.imshow(probs, aspect="auto", cmap=colors["cmap"], vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    for i, top in enumerate(tops):
        for j, cand in enumerate(top):
            shade = "black" if probs[i, j] > 0.6 else "white"
            ax.text(j, i, _cell(cand.token), ha="center", va="center", fontsize=7, color=shade)
    ax.set_xticks(range(k), [str(r) for r in range(1, k + 1)])
    ax.set_yticks(range(len(tops)), lens.labels)
    ax.tick_params(axis="y", labelsize=7)
    ax.set(xlabel="Rank", ylabel="Layer")
    ax.set_title(title if title is not None else f"Top {k} per layer after {short(lens.prompt)}")
    ax.figure.colorbar(image, ax=ax, label="Probability")
    return ax


def _cell(token: str, width: int = 12) -> str:
    text = repr(token)[1:-1].replace(" ", "\u2423")  # spaces shown as '␣'
    return clip(text, width)
