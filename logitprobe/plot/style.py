"""Themes: ``style("dark")`` (the tutorial's look) and ``style("light")`` (the default).

``style(name)`` applies a theme to matplotlib's rcParams at once and returns a
:class:`Theme`; used as a context manager it puts the previous values back on
exit::

    with logitprobe.plot.style("dark"):
        plot_logits(nt, highlight=" coffee")

Plot colours are picked per axes from its background (:func:`palette`), so a
figure drawn under either theme stays legible.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
from matplotlib.colors import to_rgba

from ..errors import InvalidArgument

__all__ = ["THEMES", "Theme", "palette", "style"]

_COMMON = {
    "axes.spines.right": False,
    "axes.spines.top": False,
    "axes.titleweight": "bold",
    "axes.labelweight": "bold",
}

THEMES: dict[str, dict[str, Any]] = {
    # The rcParams of the tutorial's dark-mode cell.
    "dark": {
        "figure.facecolor": "#020617",
        "figure.edgecolor": "#020617",
        "axes.facecolor": "#020617",
        "axes.edgecolor": "#DDE2F4",
        "axes.labelcolor": "#DDE2F4",
        "xtick.color": "#DDE2F4",
        "ytick.color": "#DDE2F4",
        "text.color": "#DDE2F4",
        "legend.facecolor": "#0f172a",
        "legend.edgecolor": "#334155",
        "savefig.facecolor": "#020617",
        "savefig.edgecolor": "#020617",
        **_COMMON,
    },
    "light": {
        "figure.facecolor": "white",
        "figure.edgecolor": "white",
        "axes.facecolor": "white",
        "axes.edgecolor": "#334155",
        "axes.labelcolor": "#0f172a",
        "xtick.color": "#334155",
        "ytick.color": "#334155",
        "text.color": "#0f172a",
        "legend.facecolor": "white",
        "legend.edgecolor": "#cbd5e1",
        "savefig.facecolor": "white",
        "savefig.edgecolor": "white",
        **_COMMON,
    },
}


class Theme:
    """A theme that has been applied; ``restore()`` (or leaving a ``with``) undoes it."""

    def __init__(self, name: str, saved: dict[str, Any]):
        self.name = name
        self._saved = saved

    def restore(self) -> None:
        mpl.rcParams.update(self._saved)

    def __enter__(self) -> "Theme":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"Theme({self.name!r})"


def style(name: str = "light") -> Theme:
    """Apply the ``"dark"`` or ``"light"`` theme now; a context manager that restores on exit."""
    params = THEMES.get(name) if isinstance(name, str) else None
    if params is None:
        raise InvalidArgument(f"name={name!r}: the theme must be one of {sorted(THEMES)!r} "
                              "(try style('dark'))")
    saved = {key: mpl.rcParams[key] for key in params}
    mpl.rcParams.update(params)
    return Theme(name, saved)


def is_dark(ax: Any) -> bool:
    r, g, b, _ = to_rgba(ax.get_facecolor())
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5


def palette(ax: Any) -> dict[str, Any]:
    """Colours for plots on ``ax``: the tutorial's tints on dark, deeper ones on light."""
    if is_dark(ax):
        return {
            "cloud_face": (0.7, 0.9, 0.7, 0.3), "cloud_edge": (0.3, 0.3, 0.3),
            "green": (0.7, 0.9, 0.7), "red": (0.9, 0.7, 0.7), "blue": (0.7, 0.7, 0.9),
            "highlight": "#ef4444", "argmax": "#facc15", "bar": "#94a3b8",
            "attn": "#60a5fa", "mlp": "#f472b6", "embed": "#a3e635", "text": "#DDE2F4",
            "cycle": ["#facc15", "#60a5fa", "#f472b6", "#a3e635", "#fb923c", "#c084fc"],
            "cmap": "magma", "diverging": "RdBu_r",
        }
    return {
        "cloud_face": (0.2, 0.6, 0.3, 0.25), "cloud_edge": (0.1, 0.4, 0.2, 0.35),
        "green": (0.2, 0.6, 0.3), "red": (0.8, 0.3, 0.3), "blue": (0.3, 0.3, 0.8),
        "highlight": "#dc2626", "argmax": "#d97706", "bar": "#64748b",
        "attn": "#2563eb", "mlp": "#db2777", "embed": "#65a30d", "text": "#0f172a",
        "cycle": ["#d97706", "#2563eb", "#db2777", "#65a30d", "#ea580c", "#7c3aed"],
        "cmap": "viridis", "diverging": "RdBu_r",
    }
