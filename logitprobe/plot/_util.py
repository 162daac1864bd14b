"""Shared helpers of the plot modules: axes creation and argument checks."""

from __future__ import annotations

from typing import Any

from .. import _text
from ..errors import InvalidArgument

__all__ = ["axes_or_new", "expect", "short"]


def axes_or_new(ax: Any, figsize: tuple[float, float]) -> Any:
    """``ax`` itself, or the axes of a new pyplot figure (so notebooks display it)."""
    if ax is not None:
        if not hasattr(ax, "plot") or not hasattr(ax, "figure"):
            raise InvalidArgument(f"ax={ax!r}: `ax` must be a matplotlib Axes or None")
        return ax
    import matplotlib.pyplot as plt

    # A figure we make gets a layout engine so labels and colorbars are not clipped.
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def expect(value: Any, cls: type, name: str, made_by: str) -> None:
    if not isinstance(value, cls):
        raise InvalidArgument(f"{name}={type(value).__name__}(...): expected a {cls.__name__} "
                              f"(from {made_by})")


def short(text: str, width: int = 40) -> str:
    """``repr(text)`` cut to ``width`` characters, for titles."""
    return _text.short(text, width)
