"""Renamed public names: the old spelling keeps working and says what replaced it.

A module that renamed something keeps a ``_RENAMED = {old: new}`` table and a
module-level ``__getattr__`` (PEP 562) that calls :func:`renamed`, so only a use of
the old name warns, ``import`` of the module stays silent, and ``dir()`` and
``__all__`` list the new names alone.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["renamed"]


def renamed(module: str, old: str, new: str, value: Any) -> Any:
    """``value`` (the object now called ``new``), after a ``DeprecationWarning`` for ``old``.

    Called from a module's ``__getattr__``; the warning points at the caller's line.
    """
    warnings.warn(f"{module}.{old} is deprecated (renamed {new}) and will be removed in a future "
                  f"release; use {module}.{new}, the same object", DeprecationWarning, stacklevel=3)
    return value
