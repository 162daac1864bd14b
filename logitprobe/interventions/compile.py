"""Specs -> hooks: validate every spec against the model, then build position-aware hooks.

:func:`compile_specs` checks all specs first (hook names, heads, neurons,
vector widths, tokens, prompts) and only then computes the reference
activations some specs need, so a spec that fails validation applies nothing.
The result, :class:`Interventions`, implements the engine's protocol: a ``key``
(part of every cache key) and ``hooks(layout)``, called once per forward.

Positions are mapped through the :class:`~logitprobe.engine.BatchLayout`: rows
are left-padded, and a tensor with ``L`` positions holds each row's last ``L``
columns (``L`` is the padded length, the ``keep`` positions at the unembedding,
or 1 on a KV-cache step), so its column ``c`` is row ``i``'s absolute position
``lengths[i] - L + c`` (negative: padding, never edited).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import InterventionNotFired, InvalidArgument, LogitProbeError
from .checks import (HookInfo, activations, check_hook, check_prompt, check_token, hook_info,
                     check_shape)
from .grammar import Expression
from .specs import (LOGITS_HOOK, AddLogit, BanTokens, Match, MeanAblate, Patch, Scale, ScaleLogit,
                    SetLogit, Spec, Steer, ZeroAblate, is_stable)

if TYPE_CHECKING:
    from ..probe import Probe

__all__ = ["InterventionNotFired", "Interventions", "compile_specs"]

TOKENS_HOOK = "embed.hook_in"  # input ids of the forward, for token-match positions
# Hooks whose edits reach no other position: editing them at 'last' is the same with a KV cache.
_TERMINAL_PREFIXES = ("unembed.", "ln_final.", "hook_unembed")


class _Plan:
    """One validated spec, ready to edit tensors. ``fired`` counts forwards it changed."""

    def __init__(self, spec: Spec, hook: str, info: HookInfo | None):
        self.spec = spec
        self.hook = hook
        self.info = info
        self.positions = spec.positions  # type: ignore[attr-defined]
        self.match_id: int | None = None
        self.stable = spec.is_logit_edit or is_stable(self.positions) or hook.startswith(
            _TERMINAL_PREFIXES)
        self.fired = 0

    @property
    def pos_axis(self) -> int:
        return self.info.pos_axis if self.info is not None else 1

    def apply(self, x: torch.Tensor, layout: Any, tokens: torch.Tensor | None) -> torch.Tensor:
        if x.shape[0] != len(layout.lengths):
            raise LogitProbeError(f"{self.spec!r}: hook {self.hook!r} saw a batch of {x.shape[0]} "
                                  f"rows in a forward of {len(layout.lengths)}")
        L = x.shape[self.pos_axis]
        lengths = torch.tensor(layout.lengths, device=x.device)[:, None]  # (B, 1)
        absolute = lengths - L + torch.arange(L, device=x.device)[None]  # (B, L)
        mask, from_end = _select(self.positions, absolute, lengths, tokens, self.match_id,
                                 layout.seq_len)
        mask = self.narrow(mask, from_end, absolute, lengths)
        if not bool(mask.any()):
            return x
        self.fired += 1
        return self.edit(x, mask)

    def narrow(self, mask: torch.Tensor, from_end: torch.Tensor, absolute: torch.Tensor,
               lengths: torch.Tensor) -> torch.Tensor:
        return mask

    def edit(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A new tensor like ``x``, edited where ``mask`` (B, L) is set; ``x`` is not modified."""
        raise NotImplementedError

    def _selection(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, L) spread over ``x``'s axes, narrowed to the spec's heads / neurons."""
        shape = [1] * x.ndim
        shape[0], shape[self.pos_axis] = mask.shape
        sel = mask.view(shape)
        heads = getattr(self.spec, "heads", None)
        if heads is not None:
            axis = self.info.head_axis  # type: ignore[union-attr]
            hm = torch.zeros(x.shape[axis], dtype=torch.bool, device=x.device)
            hm[list(heads)] = True
            hshape = [1] * x.ndim
            hshape[axis] = hm.shape[0]
            sel = sel & hm.view(hshape)
        neurons = getattr(self.spec, "neurons", None)
        if neurons is not None:
            nm = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
            nm[list(neurons)] = True
            sel = sel & nm
        return sel


def _select(positions: Any, absolute: torch.Tensor, lengths: torch.Tensor,
            tokens: torch.Tensor | None, match_id: int | None,
            seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(selected, selected-from-the-end) masks, both (B, L); padding is never selected."""
    real = absolute >= 0
    from_end = torch.zeros_like(real)
    if positions == "all":
        return real, from_end
    if positions == "last":
        mask = absolute == lengths - 1
        return mask, mask
    if isinstance(positions, Match):
        if tokens is None:
            raise LogitProbeError(f"token-match positions need the input ids from {TOKENS_HOOK!r},"
                                  " which did not fire before this hook")
        return real & (tokens[:, seq_len - absolute.shape[1]:] == match_id), from_end
    mask = torch.zeros_like(real)
    for k in positions:
        hit = absolute == (k if k >= 0 else lengths + k)
        mask |= hit
        if k < 0:
            from_end |= hit
    return mask & real, from_end & real


# -- logit edits: x is (B, L, vocab) ---------------------------------------------------
class _SetLogit(_Plan):
    token_id: int
    expr: Expression | None = None  # an expression of the row's logits, e.g. "max+10"
    constant: Any = None  # or a number

    def edit(self, x, mask):
        cur = x[..., self.token_id]  # (B, L)
        value = self.expr(x, cur) if self.expr is not None else torch.full_like(cur, self.constant)
        out = x.clone()
        out[..., self.token_id] = torch.where(mask, self.combine(cur, value), cur)
        return out

    def combine(self, cur: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value


class _AddLogit(_SetLogit):
    def combine(self, cur, value):
        return cur + value


class _ScaleLogit(_SetLogit):
    def combine(self, cur, value):
        return cur * value


class _BanTokens(_Plan):
    token_ids: tuple[int, ...]

    def edit(self, x, mask):
        ids = list(self.token_ids)
        out = x.clone()
        out[..., ids] = out[..., ids].masked_fill(mask[..., None], float("-inf"))
        return out


# -- activation edits ------------------------------------------------------------------
class _ZeroAblate(_Plan):
    def edit(self, x, mask):
        return x.masked_fill(self._selection(x, mask), 0)


class _Scale(_Plan):
    def edit(self, x, mask):
        return torch.where(self._selection(x, mask), x * self.spec.factor, x)  # type: ignore


class _Replace(_Plan):
    """MeanAblate (replace by ``value``) and Steer (add ``value``); ``value`` is (*features)."""

    add = False
    value: torch.Tensor

    def edit(self, x, mask):
        v = self.value.to(x.device, x.dtype).view(1, 1, *self.value.shape)
        return torch.where(self._selection(x, mask), x + v if self.add else v, x)


class _Patch(_Plan):
    source: torch.Tensor  # (source_len, *features)
    _index: torch.Tensor

    def narrow(self, mask, from_end, absolute, lengths):
        n_src = self.source.shape[0]
        # 'last' and negative indices align the two prompts at their ends, the rest at 0.
        self._index = torch.where(from_end, absolute - lengths + n_src, absolute)
        return mask & (self._index >= 0) & (self._index < n_src)

    def edit(self, x, mask):
        n_src = self.source.shape[0]
        patched = self.source.to(x.device, x.dtype)[self._index.clamp(0, n_src - 1)]  # (B, L, *f)
        return torch.where(self._selection(x, mask), patched, x)


_PLANS = {SetLogit: _SetLogit, AddLogit: _AddLogit, ScaleLogit: _ScaleLogit,
          BanTokens: _BanTokens, ZeroAblate: _ZeroAblate, Scale: _Scale, MeanAblate: _Replace,
          Steer: _Replace, Patch: _Patch}


# -- the compiled intervention ---------------------------------------------------------
class Interventions:
    """Compiled specs for one probe: the engine protocol plus ``fired`` counts.

    ``key`` is derived from the specs' canonical dict form; ``hooks(layout)``
    gives ``(hook_name, fn)`` pairs for one forward; ``fired[i]`` counts the
    forwards in which spec ``i`` changed something since this object was made.
    """

    def __init__(self, plans: Sequence[_Plan]):
        self.plans = tuple(plans)
        self._start = tuple(p.fired for p in self.plans)
        text = json.dumps([p.spec.to_dict() for p in self.plans], sort_keys=True)
        self.key = ("interventions", hashlib.sha256(text.encode()).hexdigest())
        self._needs_tokens = any(isinstance(p.positions, Match) for p in self.plans)

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

            def fn(x: torch.Tensor, hook: Any = None, _plan: _Plan = plan,
                   _last: list = last) -> torch.Tensor:
                # A bridge in compatibility mode calls a hook once per alias of its hook
                # point, passing our own output back in: apply each edit once.
                if x is _last[0]:
                    return x
                _last[0] = _plan.apply(x, layout, state.get("tokens"))
                return _last[0]
            hooks.append((plan.hook, fn))
        return hooks

    def __add__(self, other: "Interventions") -> "Interventions":
        return Interventions(self.plans + other.plans)

    def __len__(self) -> int:
        return len(self.plans)

    def __repr__(self) -> str:
        return f"Interventions({list(self.specs)!r})"


def compile_specs(probe: Probe, specs: Sequence[Spec]) -> Interventions:
    """Validate ``specs`` against ``probe``'s model, then build their plans (in order)."""
    names = _hook_names(probe)
    hooks = []
    for spec in specs:
        hooks.append(check_hook(probe, spec, names) if not spec.is_logit_edit else LOGITS_HOOK)
    if any(spec.is_logit_edit for spec in specs) and LOGITS_HOOK not in names:
        raise LogitProbeError(f"{specs[0]!r}: this model has no {LOGITS_HOOK!r} hook point, so "
                              "logit edits cannot be attached")
    infos = hook_info(probe, [h for h, s in zip(hooks, specs) if not s.is_logit_edit])
    plans: list[_Plan] = []
    for spec, hook in zip(specs, hooks):
        info = infos.get(hook) if not spec.is_logit_edit else None
        plan = _PLANS[type(spec)](spec, hook, info)
        if not spec.is_logit_edit:
            check_shape(spec, info)
        if isinstance(plan.positions, Match):
            if TOKENS_HOOK not in names:
                raise LogitProbeError(f"{spec!r}: token-match positions need the "
                                      f"{TOKENS_HOOK!r} hook point, which this model lacks")
            plan.match_id = check_token(probe, spec, plan.positions.token, "positions['token']")
        _check_plan(probe, plan)
        plans.append(plan)
    for plan in plans:  # only now run forwards: every spec is valid
        _prepare(probe, plan)
    return Interventions(plans)


def _check_plan(probe: Probe, plan: _Plan) -> None:
    spec = plan.spec
    if isinstance(spec, (SetLogit, AddLogit, ScaleLogit)):
        plan.token_id = check_token(probe, spec, spec.token, "token")  # type: ignore[attr-defined]
        value = {SetLogit: "to", AddLogit: "amount", ScaleLogit: "factor"}[type(spec)]
        value = getattr(spec, value)
        plan.expr = Expression(value, name="to") if isinstance(value, str) else None  # type: ignore
        plan.constant = value  # type: ignore[attr-defined]
    elif isinstance(spec, BanTokens):
        plan.token_ids = tuple(check_token(probe, spec, t, f"tokens[{i}]")  # type: ignore
                               for i, t in enumerate(spec.tokens))
    elif isinstance(spec, MeanAblate):
        for i, p in enumerate(spec.reference):
            check_prompt(probe, spec, p, f"reference[{i}]")
    elif isinstance(spec, Steer):
        if spec.vector is not None:
            width = math.prod(plan.info.features)  # type: ignore[union-attr]
            if len(spec.vector) != width:
                raise _width_error(spec, plan, width)
        else:
            check_prompt(probe, spec, spec.positive, "positive")  # type: ignore[arg-type]
            check_prompt(probe, spec, spec.negative, "negative")  # type: ignore[arg-type]
    elif isinstance(spec, Patch):
        check_prompt(probe, spec, spec.source, "source")


def _width_error(spec: Steer, plan: _Plan, width: int) -> Exception:
    feats = "x".join(map(str, plan.info.features))  # type: ignore[union-attr]
    return InvalidArgument(
        f"Steer(hook={spec.hook!r}): vector has {len(spec.vector)} values but the activation "  # type: ignore[arg-type]
        f"at {spec.hook!r} has {width} features ({feats}); give {width} values or build the "
        "vector from two prompts with positive=... and negative=...")


def _prepare(probe: Probe, plan: _Plan) -> None:
    """Reference activations (computed once per probe, hook and prompts)."""
    spec = plan.spec
    if isinstance(spec, MeanAblate):
        acts = [activations(probe, p, plan.hook) for p in spec.reference]  # each (L_i, *f)
        plan.value = torch.cat(acts, dim=0).mean(dim=0)  # type: ignore[attr-defined]
    elif isinstance(spec, Steer):
        if spec.vector is not None:
            vec = torch.tensor(spec.vector, dtype=torch.float32)
            vec = vec.view(plan.info.features)  # type: ignore[union-attr]
        else:
            # The difference of the two prompts' activations at their last tokens.
            vec = (activations(probe, spec.positive, plan.hook)[-1]  # type: ignore[arg-type]
                   - activations(probe, spec.negative, plan.hook)[-1])  # type: ignore[arg-type]
        plan.value = spec.coefficient * vec  # type: ignore[attr-defined]
        plan.add = True  # type: ignore[attr-defined]
    elif isinstance(spec, Patch):
        plan.source = activations(probe, spec.source, plan.hook)  # type: ignore[attr-defined]


def _hook_names(probe: Probe) -> frozenset[str]:
    state = probe._intervention_state
    if state.hook_names is None:
        state.hook_names = frozenset(probe.model.hook_dict)
    return state.hook_names
