"""Specs -> hooks: validate every spec against the model, then build position-aware hooks.

:func:`compile_specs` checks all specs first (hook names, heads, neurons,
vector widths, tokens, prompts) and only then computes the reference
activations some specs need, so a spec that fails validation applies nothing.
The result, :class:`Interventions`, implements the engine's protocol: a ``key``
(part of every cache key) and ``hooks(layout)``, called once per forward.

Each spec kind has one :class:`~logitprobe.interventions.plans.Plan` subclass (in
:mod:`logitprobe.interventions.plans`), registered with the spec it compiles
(``class _Scale(ActivationPlan[Scale], spec=Scale)``), that checks the spec against
the model, builds itself complete and edits tensors. The compiler
knows no spec kind: a new kind is its spec, its plan and its docs.

Positions are mapped through the :class:`~logitprobe.engine.BatchLayout`: rows
are left-padded, and a tensor with ``L`` positions holds each row's last ``L``
columns (``L`` is the padded length, the ``keep`` positions at the unembedding,
or 1 on a KV-cache step), so its column ``c`` is row ``i``'s absolute position
``lengths[i] - L + c`` (negative: padding, never edited).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import InterventionNotFired, LogitProbeError
from .checks import activations, check_hook, check_token, hook_info
from .plans import TOKENS_HOOK, ActivationPlan, LogitPlan, Plan, Selection, Site, plan_type
from .specs import LOGITS_HOOK, Match, Spec

if TYPE_CHECKING:
    from ..probe import Probe

__all__ = ["ActivationPlan", "InterventionNotFired", "Interventions", "LogitPlan", "Plan",
           "Selection", "Site", "compile_specs", "plan_type"]


class Interventions:
    """Compiled specs for one probe: the engine protocol plus ``fired`` counts.

    ``key`` is derived from the specs' canonical dict form; ``hooks(layout)``
    gives ``(hook_name, fn)`` pairs for one forward; ``fired[i]`` counts the
    forwards in which spec ``i`` changed something since this object was made.
    """

    def __init__(self, plans: Sequence[Plan[Any]]):
        self.plans = tuple(plans)
        self._start = tuple(p.fired for p in self.plans)
        text = json.dumps([p.spec.to_dict() for p in self.plans], sort_keys=True)
        self.key = ("interventions", hashlib.sha256(text.encode()).hexdigest())
        self._needs_tokens = any(p.site.match_id is not None for p in self.plans)

    @property
    def specs(self) -> tuple[Spec, ...]:
        return tuple(p.spec for p in self.plans)

    @property
    def cache_safe(self) -> bool:
        """False when a KV cache would keep edits a full forward no longer makes.

        An activation edit at 'last' (or a negative index) edits position p
        while p is last; a full forward of the grown sequence does not. Decode
        such specs without a KV cache (one full forward per step).
        """
        return all(p.stable for p in self.plans)

    @property
    def fired(self) -> tuple[int, ...]:
        return tuple(p.fired - s for p, s in zip(self.plans, self._start))

    def check_fired(self) -> None:
        """Raise :class:`InterventionNotFired` naming every spec that never changed anything."""
        idle = [p.spec for p, n in zip(self.plans, self.fired) if n == 0]
        if idle:
            names = "; ".join(repr(s) for s in idle)
            raise InterventionNotFired(
                f"{len(idle)} of {len(self.plans)} intervention(s) never fired: {names}. Their "
                "positions matched no token of any prompt (an index past the end, or a token "
                "match the prompts do not contain); check `positions`")

    def hooks(self, layout: Any) -> list[tuple[str, Any]]:
        state: dict[str, torch.Tensor] = {}
        hooks: list[tuple[str, Any]] = []
        if self._needs_tokens:
            def capture(ids: torch.Tensor, hook: Any = None) -> None:
                state["tokens"] = ids
            hooks.append((TOKENS_HOOK, capture))
        for plan in self.plans:
            last: list[Any] = [None]

            def fn(x: torch.Tensor, hook: Any = None, _plan: Plan[Any] = plan,
                   _last: list = last) -> torch.Tensor:
                # A bridge in compatibility mode calls a hook once per alias of its hook
                # point, passing our own output back in: apply each edit once.
                if x is _last[0]:
                    return x
                _last[0] = _plan.apply(x, layout, state.get("tokens"))
                return _last[0]
            hooks.append((plan.site.hook, fn))
        return hooks

    def __add__(self, other: "Interventions") -> "Interventions":
        return Interventions(self.plans + other.plans)

    def __len__(self) -> int:
        return len(self.plans)

    def __repr__(self) -> str:
        return f"Interventions({list(self.specs)!r})"


def compile_specs(probe: Probe, specs: Sequence[Spec]) -> Interventions:
    """Validate ``specs`` against ``probe``'s model, then build their plans (in order)."""
    kinds = [plan_type(spec) for spec in specs]
    names = _hook_names(probe)
    hooks = [LOGITS_HOOK if spec.is_logit_edit else check_hook(probe, spec, names)
             for spec in specs]
    if any(spec.is_logit_edit for spec in specs) and LOGITS_HOOK not in names:
        raise LogitProbeError(f"{specs[0]!r}: this model has no {LOGITS_HOOK!r} hook point, so "
                              "logit edits cannot be attached")
    infos = hook_info(probe, [h for h, s in zip(hooks, specs) if not s.is_logit_edit])
    sites = []
    for spec, hook, kind in zip(specs, hooks, kinds):
        info = None if spec.is_logit_edit else infos[hook]
        if info is not None:
            kind.check_shape(spec, info)
        site = Site(hook, info, _match_id(probe, spec, names))
        kind.check(probe, spec, site)
        sites.append(site)
    # Only now run forwards: every spec is valid.
    return Interventions([kind.build(probe, spec, site)
                          for spec, site, kind in zip(specs, sites, kinds)])


def _match_id(probe: Probe, spec: Spec, names: frozenset[str]) -> int | None:
    """The token id that ``spec``'s token-match positions select, or None."""
    if not isinstance(spec.positions, Match):
        return None
    if TOKENS_HOOK not in names:
        raise LogitProbeError(f"{spec!r}: token-match positions need the "
                              f"{TOKENS_HOOK!r} hook point, which this model lacks")
    return check_token(probe, spec, spec.positions.token, "positions['token']")


def _hook_names(probe: Probe) -> frozenset[str]:
    state = probe._intervention_state
    if state.hook_names is None:
        state.hook_names = frozenset(probe.model.hook_dict)
    return state.hook_names
