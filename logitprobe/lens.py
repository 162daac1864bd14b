"""Logit lens and attributions (work in progress: see issue 6)."""

from __future__ import annotations

__all__ = ["LensMixin"]


class LensMixin:
    """Probe methods for logit-lens views and attributions."""
