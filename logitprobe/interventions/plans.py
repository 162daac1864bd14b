"""The plans: one per spec kind, each checking its spec, building itself and editing tensors.

A :class:`Plan` subclass registers with the spec it compiles
(``class _Scale(ActivationPlan[Scale], spec=Scale)``); :func:`plan_type` finds it.
:mod:`logitprobe.interventions.compile` runs them: checks first, then builds, then
hooks. Positions are mapped through the :class:`~logitprobe.batching.BatchLayout` as
that module's docstring describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import torch

from .._text import short
from ..errors import InvalidArgument, LogitProbeError
from .checks import HookInfo, activations, check_prompt, check_shape, check_token, label
from .grammar import Expression
from .specs import (AddLogit, BanTokens, Match, MeanAblate, Patch, Scale, ScaleLogit, SetLogit,
                    Spec, Steer, TokenLogitEdit, ZeroAblate, is_stable)

if TYPE_CHECKING:
    from ..probe import Probe

__all__ = ["ActivationPlan", "LogitPlan", "Plan", "Selection", "Site", "TOKENS_HOOK", "plan_type"]

TOKENS_HOOK = "embed.hook_in"  # input ids of the forward, for token-match positions
# Hooks whose edits reach no other position: editing them at 'last' is the same with a KV cache.
_TERMINAL_PREFIXES = ("unembed.", "ln_final.", "hook_unembed")

S = TypeVar("S", bound=Spec)
_PLANS: dict[type[Spec], type[Plan[Any]]] = {}  # spec class -> its plan, filled by Plan subclasses


@dataclass(frozen=True)
class Site:
    """Where a plan edits: its hook, the hook's activation layout (None at the logits) and
    the token id that token-match positions select (None without a token match)."""

    hook: str
    info: HookInfo | None
    match_id: int | None = None

    @property
    def pos_axis(self) -> int:
        return self.info.pos_axis if self.info is not None else 1

    @property
    def layout(self) -> HookInfo:
        """The activation's layout; only activation edits have one."""
        if self.info is None:
            raise LogitProbeError(f"{self.hook!r} holds the logits, not an activation with a "
                                  "layout")
        return self.info


class Selection(NamedTuple):
    """The positions one forward's tensor selects for a plan; every field is (B, L) or (B, 1)."""

    mask: torch.Tensor  # (B, L) the positions to edit; padding is never set
    from_end: torch.Tensor  # (B, L) selected counting from the end ('last', negative indices)
    absolute: torch.Tensor  # (B, L) each column's absolute position (negative: padding)
    lengths: torch.Tensor  # (B, 1) each row's length


class Plan(Generic[S]):
    """One validated spec, ready to edit tensors. ``fired`` counts forwards it changed.

    One subclass per spec kind, registered by ``class _X(ActivationPlan[X], spec=X)``
    (or :class:`LogitPlan`). For every spec :func:`compile_specs` calls
    ``check_shape`` (activation edits) and ``check``, which run no forward; only
    when every spec passed does it call ``build``, which may run forwards and
    returns the complete plan.
    """

    def __init_subclass__(cls, spec: type[Spec] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is not None:
            if spec in _PLANS:
                raise TypeError(f"{spec.__name__} specs already compile to "
                                f"{_PLANS[spec].__qualname__}; give each spec kind one plan")
            _PLANS[spec] = cls

    def __init__(self, spec: S, site: Site) -> None:
        self.spec = spec
        self.site = site
        self.fired = 0

    @classmethod
    def check_shape(cls, spec: S, info: HookInfo) -> None:
        """Check what ``spec`` needs of the activation at its hook (activation edits only)."""
        check_shape(spec, info)

    @classmethod
    def check(cls, probe: Probe, spec: S, site: Site) -> None:
        """Check ``spec``'s tokens, prompts and values against the model; runs no forward."""

    @classmethod
    def build(cls, probe: Probe, spec: S, site: Site) -> Plan[S]:
        """The complete plan of a checked ``spec``; may run forwards (reference activations)."""
        return cls(spec, site)

    @property
    def stable(self) -> bool:
        """Whether a KV cache keeps exactly the edits a full forward makes (see ``cache_safe``)."""
        return is_stable(self.spec.positions) or self.site.hook.startswith(_TERMINAL_PREFIXES)

    def apply(self, x: torch.Tensor, layout: Any, tokens: torch.Tensor | None) -> torch.Tensor:
        if x.shape[0] != len(layout.lengths):
            raise LogitProbeError(f"{self.spec!r}: hook {self.site.hook!r} saw a batch of "
                                  f"{x.shape[0]} rows in a forward of {len(layout.lengths)}")
        L = x.shape[self.site.pos_axis]
        lengths = torch.tensor(layout.lengths, device=x.device)[:, None]  # (B, 1)
        absolute = lengths - L + torch.arange(L, device=x.device)[None]  # (B, L)
        where = self.narrow(_select(self.spec.positions, absolute, lengths, tokens,
                                    self.site.match_id, layout.seq_len))
        if not bool(where.mask.any()):
            return x
        self.fired += 1
        return self.edit(x, where)

    def narrow(self, where: Selection) -> Selection:
        """``where`` with fewer positions selected, for plans that cannot edit them all."""
        return where

    def edit(self, x: torch.Tensor, where: Selection) -> torch.Tensor:
        """A new tensor like ``x``, edited where ``where.mask`` is set; ``x`` is not modified."""
        raise NotImplementedError


def plan_type(spec: Spec) -> type[Plan[Any]]:
    """The plan class registered for ``spec``'s class."""
    kind = _PLANS.get(type(spec))
    if kind is None:
        name = type(spec).__name__
        raise LogitProbeError(f"{short(spec, 80)}: no plan compiles {name} specs; define one "
                              f"with `class _{name}(ActivationPlan[{name}], spec={name})` (or "
                              "LogitPlan) and an `edit` method; see docs/architecture.md")
    return kind


def _select(positions: Any, absolute: torch.Tensor, lengths: torch.Tensor,
            tokens: torch.Tensor | None, match_id: int | None, seq_len: int) -> Selection:
    """The selected positions (and those selected from the end); padding is never selected."""
    real = absolute >= 0
    from_end = torch.zeros_like(real)
    if positions == "all":
        return Selection(real, from_end, absolute, lengths)
    if positions == "last":
        mask = absolute == lengths - 1
        return Selection(mask, mask, absolute, lengths)
    if isinstance(positions, Match):
        if tokens is None:
            raise LogitProbeError(f"token-match positions need the input ids from {TOKENS_HOOK!r},"
                                  " which did not fire before this hook")
        mask = real & (tokens[:, seq_len - absolute.shape[1]:] == match_id)
        return Selection(mask, from_end, absolute, lengths)
    mask = torch.zeros_like(real)
    for k in positions:
        hit = absolute == (k if k >= 0 else lengths + k)
        mask |= hit
        if k < 0:
            from_end |= hit
    return Selection(mask & real, from_end & real, absolute, lengths)


# -- logit edits: x is (B, L, vocab) ---------------------------------------------------
class LogitPlan(Plan[S]):
    """An edit of the logits (``unembed.hook_out``): the same with or without a KV cache."""

    @property
    def stable(self) -> bool:
        return True

    @classmethod
    def check(cls, probe: Probe, spec: S, site: Site) -> None:
        cls.build(probe, spec, site)  # it runs no forward: resolving the tokens is the check


T = TypeVar("T", bound=TokenLogitEdit)


class _OneLogit(LogitPlan[T]):
    """One token's logit, combined with a number or an expression of the row (``"max+10"``)."""

    def __init__(self, spec: T, site: Site, token_id: int, value: float | Expression) -> None:
        super().__init__(spec, site)
        self.token_id = token_id
        self.value = value

    @classmethod
    def operand(cls, spec: T) -> float | str:
        """The spec's number (or expression) that the logit is combined with."""
        raise NotImplementedError

    @classmethod
    def build(cls, probe: Probe, spec: T, site: Site) -> _OneLogit[T]:
        value = cls.operand(spec)
        return cls(spec, site, check_token(probe, spec, spec.token, "token"),
                   Expression(value, name="to") if isinstance(value, str) else value)

    def edit(self, x, where):
        cur = x[..., self.token_id]  # (B, L)
        value = (self.value(x, cur) if isinstance(self.value, Expression)
                 else torch.full_like(cur, self.value))
        out = x.clone()
        out[..., self.token_id] = torch.where(where.mask, self.combine(cur, value), cur)
        return out

    def combine(self, cur: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _SetLogit(_OneLogit[SetLogit], spec=SetLogit):
    @classmethod
    def operand(cls, spec):
        return spec.to

    def combine(self, cur, value):
        return value


class _AddLogit(_OneLogit[AddLogit], spec=AddLogit):
    @classmethod
    def operand(cls, spec):
        return spec.amount

    def combine(self, cur, value):
        return cur + value


class _ScaleLogit(_OneLogit[ScaleLogit], spec=ScaleLogit):
    @classmethod
    def operand(cls, spec):
        return spec.factor

    def combine(self, cur, value):
        return cur * value


class _BanTokens(LogitPlan[BanTokens], spec=BanTokens):
    def __init__(self, spec: BanTokens, site: Site, token_ids: tuple[int, ...]) -> None:
        super().__init__(spec, site)
        self.token_ids = token_ids

    @classmethod
    def build(cls, probe, spec, site):
        return cls(spec, site, tuple(check_token(probe, spec, t, f"tokens[{i}]")
                                     for i, t in enumerate(spec.tokens)))

    def edit(self, x, where):
        ids = list(self.token_ids)
        out = x.clone()
        out[..., ids] = out[..., ids].masked_fill(where.mask[..., None], float("-inf"))
        return out


# -- activation edits ------------------------------------------------------------------
class ActivationPlan(Plan[S]):
    """An edit of the activation at the spec's hook; x is laid out as ``site.info`` says."""

    def selection(self, x: torch.Tensor, where: Selection) -> torch.Tensor:
        """``where.mask`` (B, L) spread over ``x``'s axes and cut to the spec's heads, neurons."""
        shape = [1] * x.ndim
        shape[0], shape[self.site.pos_axis] = where.mask.shape
        sel = where.mask.view(shape)
        heads = getattr(self.spec, "heads", None)
        axis = self.site.layout.head_axis
        if heads is not None and axis is not None:  # check_shape: heads imply a head axis
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


class _ZeroAblate(ActivationPlan[ZeroAblate], spec=ZeroAblate):
    def edit(self, x, where):
        return x.masked_fill(self.selection(x, where), 0)


class _Scale(ActivationPlan[Scale], spec=Scale):
    def edit(self, x, where):
        return torch.where(self.selection(x, where), x * self.spec.factor, x)


class _Reference(ActivationPlan[S]):
    """A plan that needs the activation of other prompts, so one of a fixed shape."""

    @classmethod
    def check_shape(cls, spec, info):
        super().check_shape(spec, info)
        if info.key_axis or info.pos_axis != 1:
            raise InvalidArgument(f"{label(spec)}: {info.name!r} has shape {info.describe()}; its "
                                  "key axis changes size with the prompt, so it has no fixed "
                                  "reference activation. Use ZeroAblate or Scale there, or a hook "
                                  "such as 'blocks.0.attn.hook_z'")


class _Replace(_Reference[S]):
    """Replace the activation by ``value`` (or add it); ``value`` is (*features)."""

    add = False

    def __init__(self, spec: S, site: Site, value: torch.Tensor) -> None:
        super().__init__(spec, site)
        self.value = value

    def edit(self, x, where):
        v = self.value.to(x.device, x.dtype).view(1, 1, *self.value.shape)
        return torch.where(self.selection(x, where), x + v if self.add else v, x)


class _MeanAblate(_Replace[MeanAblate], spec=MeanAblate):
    @classmethod
    def check(cls, probe, spec, site):
        for i, p in enumerate(spec.reference):
            check_prompt(probe, spec, p, f"reference[{i}]")

    @classmethod
    def build(cls, probe, spec, site):
        acts = [activations(probe, p, site.hook) for p in spec.reference]  # each (L_i, *f)
        return cls(spec, site, torch.cat(acts, dim=0).mean(dim=0))


class _Steer(_Replace[Steer], spec=Steer):
    add = True

    @staticmethod
    def prompts(spec: Steer) -> dict[str, str]:
        """The prompts the vector is built from, by argument ({} when ``vector`` is given)."""
        pair = {"positive": spec.positive, "negative": spec.negative}
        return {name: p for name, p in pair.items() if p is not None}

    @classmethod
    def check(cls, probe, spec, site):
        if spec.vector is not None:
            info = site.layout
            width = math.prod(info.features)
            if len(spec.vector) != width:
                raise InvalidArgument(
                    f"Steer(hook={spec.hook!r}): vector has {len(spec.vector)} values but the "
                    f"activation at {spec.hook!r} has {width} features "
                    f"({'x'.join(map(str, info.features))}); give {width} values or build the "
                    "vector from two prompts with positive=... and negative=...")
        for name, prompt in cls.prompts(spec).items():
            check_prompt(probe, spec, prompt, name)

    @classmethod
    def build(cls, probe, spec, site):
        if spec.vector is not None:
            vec = torch.tensor(spec.vector, dtype=torch.float32).view(site.layout.features)
        else:
            # The difference of the two prompts' activations at their last tokens.
            prompts = cls.prompts(spec)
            vec = (activations(probe, prompts["positive"], site.hook)[-1]
                   - activations(probe, prompts["negative"], site.hook)[-1])
        return cls(spec, site, spec.coefficient * vec)


class _Patch(_Reference[Patch], spec=Patch):
    def __init__(self, spec: Patch, site: Site, source: torch.Tensor) -> None:
        super().__init__(spec, site)
        self.source = source  # (source_len, *features)

    @classmethod
    def check(cls, probe, spec, site):
        check_prompt(probe, spec, spec.source, "source")

    @classmethod
    def build(cls, probe, spec, site):
        return cls(spec, site, activations(probe, spec.source, site.hook))

    def index(self, where: Selection) -> torch.Tensor:
        """(B, L) the source position each column copies; out of range: none."""
        # 'last' and negative indices align the two prompts at their ends, the rest at 0.
        n_src = self.source.shape[0]
        return torch.where(where.from_end, where.absolute - where.lengths + n_src, where.absolute)

    def narrow(self, where):
        index = self.index(where)
        return where._replace(mask=where.mask & (index >= 0) & (index < self.source.shape[0]))

    def edit(self, x, where):
        n_src = self.source.shape[0]
        index = self.index(where).clamp(0, n_src - 1)
        patched = self.source.to(x.device, x.dtype)[index]  # (B, L, *f)
        return torch.where(self.selection(x, where), patched, x)



# -- the compiled intervention ---------------------------------------------------------
