"""Plots of next-token predictions, logit lenses and attributions (matplotlib).

Each ``plot_x(result, ..., ax=None)`` draws on ``ax`` (or on a new figure) and
returns the Axes; the panel plots take ``axes=`` and return the array. Nothing
calls ``plt.show()``. ``style("dark")`` gives the tutorial's dark look.

>>> from logitprobe.plot import plot_logits, style                 # doctest: +SKIP
>>> with style("dark"):                                            # doctest: +SKIP
...     plot_logits(probe.next_token("I like oat milk in my"), highlight=" coffee")
"""

from .attribution import plot_attribution, plot_head_attribution
from .lens import plot_lens, plot_lens_top
from .logits import plot_log_softmax_panels, plot_logits, plot_softmax_panels, plot_top_k
from .style import Theme, palette, style

__all__ = [
    "Theme",
    "palette",
    "plot_attribution",
    "plot_head_attribution",
    "plot_lens",
    "plot_lens_top",
    "plot_log_softmax_panels",
    "plot_logits",
    "plot_softmax_panels",
    "plot_top_k",
    "style",
]
