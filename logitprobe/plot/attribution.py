"""Direct-logit-attribution plots: bars per layer part, and a layer x head heatmap."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..lens_results import Attribution
from ._util import axes_or_new, expect, short
from .style import palette

__all__ = ["plot_attribution", "plot_head_attribution"]

_MADE_BY = "probe.attribute(prompt, token)"


def plot_attribution(attribution: Attribution, *, ax: Any = None,
                     title: str | None = None) -> Any:
    """One bar per part: the embeddings, then each layer's attention and MLP side by side."""
    expect(attribution, Attribution, "attribution", _MADE_BY)
    ax = axes_or_new(ax, (10, 3.5))
    colors = palette(ax)
    embeds = [(lab, float(v)) for lab, v in zip(attribution.labels, attribution.values)
              if not lab.startswith("L")]
    layers = np.arange(len(attribution.attn))
    width = 0.4
    for j, (lab, v) in enumerate(embeds):
        ax.bar(-1.5 + (j - (len(embeds) - 1) / 2) * width, v, width, color=colors["embed"],
               label="embeddings" if j == 0 else "_embed")
    ax.bar(layers - width / 2, attribution.attn.numpy(), width, color=colors["attn"],
           label="attention")
    ax.bar(layers + width / 2, attribution.mlp.numpy(), width, color=colors["mlp"], label="MLP")
    ax.axhline(0.0, color=colors["text"], linewidth=0.6)
    step = max(1, int(np.ceil(len(layers) / 15)))
    ticks = [-1.5, *layers[::step]]
    ax.set_xticks(ticks, ["embed", *[str(t) for t in layers[::step]]])
    ax.set(xlabel="Layer", ylabel="Direct logit attribution")
    ax.set_title(title if title is not None else
                 f"{attribution.quantity} after {short(attribution.prompt)}: "
                 f"sum {attribution.total:+.3g} (bias {attribution.bias:+.3g})")
    ax.legend(fontsize="small")
    return ax


def plot_head_attribution(attribution: Attribution, *, ax: Any = None,
                          title: str | None = None) -> Any:
    """Every attention head's attribution as a layer x head heatmap (red +, blue -)."""
    expect(attribution, Attribution, "attribution", _MADE_BY)
    heads = attribution.heads.numpy()
    n_layers, n_heads = heads.shape
    ax = axes_or_new(ax, (1.8 + 0.45 * n_heads, 1.0 + 0.22 * n_layers))
    colors = palette(ax)
    limit = float(np.abs(heads).max()) or 1.0
    image = ax.imshow(heads, aspect="auto", cmap=colors["diverging"], vmin=-limit, vmax=limit,
                      interpolation="nearest")
    ax.set_xticks(range(n_heads))
    step = max(1, int(np.ceil(n_layers / 15)))
    ax.set_yticks(range(0, n_layers, step))
    ax.set(xlabel="Head", ylabel="Layer")
    ax.set_title(title if title is not None else
                 f"Head attribution to {attribution.quantity}", fontsize="medium")
    ax.figure.colorbar(image, ax=ax, label="Attribution")
    return ax
