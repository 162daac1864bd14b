"""Checks of specs against one model, and the reference activations specs need.

Everything here is cached per probe: the hook names, the layout of each hook's
activation (found by one small forward with capturing hooks, so no hook-name
heuristics), and reference activations per (hook, prompt).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import InvalidArgument, PromptError, TokenError
from .specs import Spec

if TYPE_CHECKING:
    from ..probe import Probe

__all__ = ["HookInfo", "activations", "check_hook", "check_prompt", "check_shape", "check_token",
           "hook_info", "label"]

_BATCH, _POS = 2, 3  # shape of the probing forward: tells batch and position axes apart
_MAX_ACTIVATIONS = 256  # reference activations kept per probe


@dataclass(frozen=True)
class HookInfo:
    """The layout of one hook point's activation."""

    name: str
    shape: tuple[int, ...]  # on the probing forward: (2, 3, ...) or (2, heads, 3, 3)
    pos_axis: int
    head_axis: int | None
    key_axis: bool  # attention patterns/scores: the last axis is the key position
    floating: bool

    @property
    def features(self) -> tuple[int, ...]:
        """The shape without the batch and position axes, e.g. ``(576,)`` or ``(9, 64)``."""
        return tuple(n for i, n in enumerate(self.shape) if i not in (0, self.pos_axis))

    def describe(self) -> str:
        axes = ["batch"] + ["?"] * (len(self.shape) - 1)
        axes[self.pos_axis] = "pos"
        if self.head_axis is not None:
            axes[self.head_axis] = f"head={self.shape[self.head_axis]}"
        if self.key_axis:
            axes[-1] = "key_pos"
        for i, n in enumerate(self.shape):
            if axes[i] == "?":
                axes[i] = str(n)
        return "[" + ", ".join(axes) + "]"


def label(spec: Spec) -> str:
    """``SetLogit(token=' coffee')`` / ``ZeroAblate(hook='blocks.0.attn.hook_z')``: for errors."""
    name = type(spec).__name__
    if hasattr(spec, "hook") and not spec.is_logit_edit:
        return f"{name}(hook={spec.hook!r})"
    first = "token" if hasattr(spec, "token") else "tokens"
    return f"{name}({first}={getattr(spec, first)!r})"


def check_hook(probe: Probe, spec: Spec, names: frozenset[str]) -> str:
    """The spec's hook name, if the model has it; else an error with a did-you-mean."""
    name = spec.hook
    if name in names:
        hook_point = probe.model.hook_dict[name]
        gated = getattr(probe.model, "_gated_hook_reason", None)
        reason = gated(getattr(hook_point, "name", None) or name) if callable(gated) else None
        if reason is not None:
            raise InvalidArgument(f"{label(spec)}: the hook {name!r} is switched off on this model "
                                  f"and never fires; call probe.model.set_{reason}(True) first")
        return name
    m = re.match(r"blocks\.(\d+)\.(.*)", name)
    n_layers = probe.n_layers
    if m and int(m.group(1)) >= n_layers:
        last = f"blocks.{n_layers - 1}.{m.group(2)}"
        hint = f"; the last is {last!r}" if last in names else ""
        raise InvalidArgument(f"{label(spec)}: layer {int(m.group(1))} is out of range: the "
                              f"model has {n_layers} layers (blocks.0 to blocks.{n_layers - 1}){hint}")
    close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else \
        "e.g. 'blocks.0.hook_resid_pre', 'blocks.0.attn.hook_z', 'blocks.0.mlp.hook_post'"
    raise InvalidArgument(f"{label(spec)}: the model has no hook point {name!r}; {hint} "
                          f"(probe.model.hook_dict lists all {len(names)})")


def hook_info(probe: Probe, hooks: Sequence[str]) -> dict[str, HookInfo]:
    """Layouts of ``hooks``' activations, probed once per probe with a (2, 3) forward."""
    known = probe._intervention_state.hook_info
    missing = sorted(set(hooks) - set(known))
    if missing:
        seen: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def fn(x: Any, hook: Any = None) -> None:
                if isinstance(x, torch.Tensor) and name not in seen:
                    seen[name] = x
            return fn

        tokens = torch.full((_BATCH, _POS), probe.engine.pad_id, dtype=torch.long)
        with torch.no_grad():
            probe.backend.forward(tokens.to(probe.device), attention_mask=None, keep=_POS,
                                  hooks=[(n, capture(n)) for n in missing])
        for name in missing:
            x = seen.get(name)
            if x is None:
                raise InvalidArgument(f"the hook {name!r} never fires in a forward pass of this "
                                      "model; choose another hook point (see probe.model.hook_dict)")
            known[name] = _layout(probe, name, x)
    return {h: known[h] for h in hooks}


def _layout(probe: Probe, name: str, x: torch.Tensor) -> HookInfo:
    hook_point = probe.model.hook_dict.get(name)
    key_axis = name.endswith(("hook_pattern", "hook_attn_scores"))
    pos_axis = getattr(hook_point, "pos_dim", None)
    if pos_axis is None:
        pos_axis = x.ndim - 2 if key_axis else 1
    pos_axis %= max(x.ndim, 1)
    shape = tuple(x.shape)
    if x.ndim < 2 or shape[0] != _BATCH or shape[pos_axis] != _POS:
        raise InvalidArgument(f"the hook {name!r} has an activation of shape {list(shape)} on a "
                              f"batch of {_BATCH} prompts of {_POS} tokens, not [batch, pos, ...]; "
                              "logitprobe cannot edit it per prompt and position")
    head_axis = 1 if key_axis else (2 if x.ndim == 4 and pos_axis == 1 else None)
    return HookInfo(name, shape, pos_axis, head_axis, key_axis, x.is_floating_point())


def check_shape(spec: Spec, info: HookInfo) -> None:
    """Head / neuron ranges and activation kinds that ``spec`` needs at its hook."""
    where = label(spec)
    if not info.floating:
        raise InvalidArgument(f"{where}: {info.name!r} carries token ids, not activations; "
                              "choose a hook such as 'hook_embed' or 'blocks.0.hook_resid_pre'")
    heads = getattr(spec, "heads", None)
    if heads is not None:
        if info.head_axis is None:
            raise InvalidArgument(f"{where}: heads={list(heads)!r}: {info.name!r} has no head axis "
                                  f"(shape {info.describe()}); heads apply to attention hooks "
                                  "such as 'blocks.0.attn.hook_z' or 'blocks.0.attn.hook_pattern'")
        n = info.shape[info.head_axis]
        bad = [h for h in heads if h >= n]
        if bad:
            raise InvalidArgument(f"{where}: heads={list(heads)!r}: head {bad[0]} is out of range; "
                                  f"{info.name!r} has {n} heads (0 to {n - 1})")
    neurons = getattr(spec, "neurons", None)
    if neurons is not None:
        if info.key_axis or len(info.shape) < 3:
            raise InvalidArgument(f"{where}: neurons={list(neurons)!r}: {info.name!r} (shape "
                                  f"{info.describe()}) has no feature axis to select neurons on")
        n = info.shape[-1]
        bad = [i for i in neurons if i >= n]
        if bad:
            raise InvalidArgument(f"{where}: neurons={list(neurons)!r}: neuron {bad[0]} is out of "
                                  f"range; {info.name!r} has {n} (0 to {n - 1})")


def check_token(probe: Probe, spec: Spec, token: Any, name: str) -> int:
    try:
        return probe.vocab.token_id(token, name=name)
    except TokenError as exc:
        raise TokenError(f"{label(spec)}: {exc}") from None


def check_prompt(probe: Probe, spec: Spec, prompt: str, name: str) -> list[int]:
    try:
        return probe.vocab.encode(prompt, name=name)
    except PromptError as exc:
        raise PromptError(f"{label(spec)}: {exc}") from None


def activations(probe: Probe, prompt: str, hook: str) -> torch.Tensor:
    """``hook``'s activation on ``prompt`` alone, ``(pos, *features)``, cached per probe."""
    cache = probe._intervention_state.activations
    key = (hook, prompt)
    if key not in cache:
        while len(cache) >= _MAX_ACTIVATIONS:  # oldest first
            cache.pop(next(iter(cache)))
        ids = torch.tensor([probe.vocab.encode(prompt)], device=probe.device)
        # A HookedTransformer gets an explicit mask (see backends.HookedTransformerBackend).
        kwargs = ({"logits_to_keep": 1} if probe.backend.kind == "bridge"
                  else {"attention_mask": torch.ones_like(ids)})
        with probe.engine.lock, torch.no_grad():  # no other forward while its hooks are on
            _, acts = probe.model.run_with_cache(ids, names_filter=hook, **kwargs)
        cache[key] = acts[hook][0].detach().clone()
    return cache[key]
