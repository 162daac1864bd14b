"""What the interventions keep per probe, declared once in :meth:`Probe.__init__`.

One object instead of attributes that several modules would hang on the probe: the
``intervene`` blocks open in each context, and caches of facts about the model that do
not change (hook names, activation layouts, reference activations).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .checks import HookInfo

__all__ = ["InterventionState"]


def _scope() -> contextvars.ContextVar:
    # One context variable per probe: an ``intervene`` block applies to the queries of
    # its own thread (or asyncio task) only, never to another thread's queries.
    return contextvars.ContextVar("logitprobe_intervene", default=None)


@dataclass(eq=False)
class InterventionState:
    """Per-probe state of the interventions (``probe._intervention_state``)."""

    scope: contextvars.ContextVar[Any] = field(default_factory=_scope)  # open intervene blocks
    hook_names: frozenset[str] | None = None  # probe.model.hook_dict's names, read once
    hook_info: dict[str, HookInfo] = field(default_factory=dict)  # activation layout per hook
    # (hook, prompt) -> the reference activation, oldest first (bounded by checks.py)
    activations: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
