"""Sampling and generation (work in progress: see issue 4)."""

from __future__ import annotations

__all__ = ["GenerationMixin"]


class GenerationMixin:
    """Probe methods for sampling and generation."""
