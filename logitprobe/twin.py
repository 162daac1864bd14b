"""The Hugging Face model inside a TransformerBridge, without the bridge: a fast path.

A ``TransformerBridge`` wraps each module of the Hugging Face model it boots on
(embeddings, blocks, attention, norms, the unembedding) in a component that adds
hook points and, for some architectures, reimplements the forward. When no hook
is attached anywhere, that machinery computes the same function as the wrapped
model, at a price: about 20 ms of Python per forward on GPT-2 small, which is a
quarter of a KV-cached decoding step on a 2-core CPU.

:func:`plain_twin` rebuilds the original module tree from the modules the
bridge wraps, sharing every parameter and buffer (no copy), and accepts it only
after checking on a short input that its logits equal the bridge's and that no
bridge component ran inside it. Generation uses it for steps that have no hooks
(no intervention, no user hook on the bridge); anything hooked goes through the
bridge. The twin is rebuilt when the bridge's parameters are replaced (weight
processing, ``enable_compatibility_mode``), and refused when the bridge's numerics
are not the raw Hugging Face ones.
"""

from __future__ import annotations

import collections
from typing import Any

import torch

__all__ = ["TwinCache", "hooks_attached", "plain_twin"]

_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
_FORWARD_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_OWN_HOOK_MODULES = ("transformer_lens.", "transformers.")


class NoTwin(Exception):
    """Why a bridge has no plain twin (the bridge path is used instead)."""


def _component_class() -> type | None:
    try:
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    except ImportError:  # pragma: no cover - TransformerLens 3.x
        return None
    return GeneralizedComponent


def _unwrap(module: torch.nn.Module, component: type, memo: dict[int, torch.nn.Module]
            ) -> torch.nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    if isinstance(module, component):
        original = module._modules.get("_original_component")
        if original is None:
            raise NoTwin(f"{type(module).__name__} wraps no original module")
        memo[id(module)] = result = _unwrap(original, component, memo)
        return result
    if "forward" in module.__dict__:
        raise NoTwin(f"{type(module).__name__}.forward is patched on the instance")
    if _foreign_hooks(module):
        raise NoTwin(f"{type(module).__name__} carries hooks (offloading or a user hook)")
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__ = dict(module.__dict__)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    for name in _HOOK_DICTS:
        if name in module.__dict__:
            setattr(clone, name, collections.OrderedDict())
    memo[id(module)] = clone
    clone._modules = {name: None if child is None else _unwrap(child, component, memo)
                      for name, child in module._modules.items()}
    return clone


def _slots(bridge: Any) -> list[tuple[dict, str]]:
    """Every (module._parameters, name) of the bridge: where a Parameter can be replaced."""
    return [(m._parameters, name) for m in bridge.modules() for name in m._parameters]


def _fingerprint(bridge: Any, slots: list[tuple[dict, str]]) -> tuple:
    # Replacing a Parameter object (weight processing, compatibility mode) changes the
    # ids; an in-place edit (``with torch.no_grad(): w.mul_(0)``) bumps a version counter
    # (GPT-2's bridge keeps its own copies of the q/k/v weights, so the twin may no
    # longer match it). Edits through ``.data`` bypass both: rebuild by hand then.
    params = [d[name] for d, name in slots]
    return (tuple(map(id, params)), tuple(p._version for p in params if p is not None),
            bool(getattr(bridge, "compatibility_mode", False)),
            bool(getattr(bridge, "_weights_processed", False)))


def plain_twin(bridge: Any) -> torch.nn.Module:
    """The bridge's Hugging Face model with every bridge component unwrapped; checked.

    Raises :class:`NoTwin` when the bridge computes something else than the plain
    model (processed weights, compatibility mode, patched forwards, offloading) or
    when the check forward disagrees.
    """
    component = _component_class()
    original = getattr(bridge, "original_model", None)
    if component is None or original is None:
        raise NoTwin("not a TransformerBridge")
    if getattr(bridge, "compatibility_mode", False) or getattr(bridge, "_weights_processed", False):
        raise NoTwin("the bridge runs processed weights (compatibility mode)")
    if any(p.device.type == "meta" for p in original.parameters()):
        raise NoTwin("offloaded parameters")
    twin = _unwrap(original, component, {})
    if any(isinstance(m, component) for m in twin.modules()):
        raise NoTwin("a bridge component is still inside the unwrapped model")
    _check(bridge, twin, component)
    return twin


@torch.no_grad()
def _check(bridge: Any, twin: torch.nn.Module, component: type) -> None:
    vocab = int(bridge.cfg.d_vocab)
    device = next(iter(twin.parameters())).device
    tokens = torch.arange(5, device=device).unsqueeze(0) * 7 % vocab
    ran: list[str] = []

    def spy(module, args):
        if isinstance(module, component):
            ran.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(spy)
    try:
        got = twin(tokens).logits
    finally:
        handle.remove()
    if ran:
        raise NoTwin(f"the unwrapped model still calls {ran[0]}")
    want = bridge(tokens)
    if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=1e-4,
                                                     rtol=1e-4):
        raise NoTwin("its logits differ from the bridge's")


def _foreign_hooks(module: torch.nn.Module) -> bool:
    # Any hook on a hook point counts (TransformerLens wraps the user's function in its
    # own closure); elsewhere, the hooks that TransformerLens and transformers install
    # on their own modules (the bridge's activation capture, output recording) do not.
    d = module.__dict__
    if not (d.get("_forward_hooks") or d.get("_forward_pre_hooks") or d.get("_backward_hooks")
            or d.get("_backward_pre_hooks")):
        return False
    if type(module).__name__ == "HookPoint":
        return True
    for name in _FORWARD_HOOKS:
        for fn in (d.get(name) or {}).values():
            owner = getattr(fn, "__module__", None) or ""
            if not owner.startswith(_OWN_HOOK_MODULES):
                return True
    return False


def hooks_attached(bridge: Any, modules: list[torch.nn.Module] | None = None) -> bool:
    """Whether a hook that can change the output is attached anywhere on the bridge.

    A user's hook (``add_hook``, ``hooks()``, ``run_with_hooks``, a raw PyTorch hook)
    or an intervention's; the bridge's own activation-capture hooks do not count.
    ``modules``: ``list(bridge.modules())`` if already at hand (walking costs ~1 ms).
    """
    if torch.nn.modules.module._global_forward_hooks or \
            torch.nn.modules.module._global_forward_pre_hooks:
        return True
    return any(_foreign_hooks(m) for m in (modules if modules is not None else bridge.modules()))


class TwinCache:
    """One plain twin per bridge, rebuilt when the bridge's parameters are replaced."""

    def __init__(self, bridge: Any):
        self.bridge = bridge
        self._slots = _slots(bridge)
        self._twin: torch.nn.Module | None = None
        self._key: tuple | None = None
        self.reason: str | None = None  # why there is none, once refused

    def rebuild(self) -> None:
        """Forget the twin (after editing weights through ``.data``, which no check sees)."""
        self._slots, self._key, self._twin = _slots(self.bridge), None, None

    def get(self) -> torch.nn.Module | None:
        """The twin, or None when the bridge has none (``reason`` says why)."""
        key = _fingerprint(self.bridge, self._slots)
        if key != self._key:
            self._key, self._twin, self.reason = key, None, None
            try:
                self._twin = plain_twin(self.bridge)
            except NoTwin as exc:
                self.reason = str(exc)
        return self._twin
