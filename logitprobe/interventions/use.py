"""How a Probe applies interventions (work in progress: see issue 5)."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument

__all__ = ["InterventionMixin"]


class InterventionMixin:
    """Probe methods for interventions."""

    def _compile_interventions(self, interventions: Any) -> Any:
        """An engine ``Intervention`` for ``interventions``, or None for none."""
        if interventions is None or interventions == []:
            return None
        raise InvalidArgument(f"interventions={interventions!r}: interventions are not supported yet")
