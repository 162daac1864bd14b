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
import operator
from typing import Any, Iterator

import torch

from torch.utils.hooks import RemovableHandle

__all__ = ["HooksWatch", "NoTwin", "TwinCache", "WeightsWatch", "hooks_attached", "plain_parameters",
           "plain_twin", "same_weights", "shared_copy"]

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


class _Nothing:
    """No module is one: :func:`_unwrap` with it copies a plain tree and unwraps nothing."""


def plain_parameters(bridge: Any) -> Iterator[torch.nn.Parameter]:
    """The parameters of the Hugging Face model inside ``bridge``, in ``parameters()`` order.

    Walks ``bridge.original_model`` as :func:`plain_twin` would unwrap it, without
    building or checking anything (each tensor once).
    """
    component = _component_class()
    seen_modules: set[int] = set()
    seen: set[int] = set()

    def walk(module: Any) -> Iterator[torch.nn.Parameter]:
        while component is not None and isinstance(module, component):
            module = module._modules.get("_original_component")
            if module is None:
                return
        if id(module) in seen_modules:
            return
        seen_modules.add(id(module))
        for p in module._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                yield p
        for child in module._modules.values():
            if child is not None:
                yield from walk(child)

    return walk(bridge.original_model)


def shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A new module tree over the same parameters and buffers, without hooks.

    A deferred bridge boots on this copy (booting rewires the tree it is given), so
    the plain model a probe ran before the boot stays plain. Raises :class:`NoTwin`
    when a module carries a hook or a patched forward the copy would lose.
    """
    return _unwrap(model, _Nothing, {})


def same_weights(plain: torch.nn.Module, twin: torch.nn.Module) -> bool:
    """Whether ``twin`` (rebuilt from a bridge booted on a copy of ``plain``) computes with
    exactly ``plain``'s tensors.

    Module by module, every parameter and buffer must be the same tensor object, except
    a zero bias where ``plain`` had none (TransformerLens gives GPT-2's unembedding
    one): adding zeros changes no logit. Anything else (a copy, another value, a
    changed structure) answers False.
    """
    pairs = list(zip(plain.modules(), twin.modules()))
    if len(pairs) != sum(1 for _ in plain.modules()) or len(pairs) != sum(1 for _ in twin.modules()):
        return False
    for a, b in pairs:
        if type(a) is not type(b):
            return False
        for slots in ("_parameters", "_buffers"):
            mine, theirs = getattr(a, slots), getattr(b, slots)
            for name in set(mine) | set(theirs):
                t0, t1 = mine.get(name), theirs.get(name)
                if t0 is t1:
                    continue
                if not (t0 is None and name == "bias" and t1 is not None
                        and not bool(t1.detach().any())):
                    return False
    return True


def _slots(model: Any) -> list[tuple[dict, str]]:
    """Every (module._parameters or ._buffers, name): where a weight can be replaced."""
    return ([(m._parameters, name) for m in model.modules() for name in m._parameters]
            + [(m._buffers, name) for m in model.modules() for name in m._buffers])


_VERSION = operator.attrgetter("_version")
_registrations = 0  # parameters, buffers and submodules assigned anywhere, once watched
_registration_handles: tuple | None = None


def _count_registration(*args: Any) -> None:
    global _registrations
    _registrations += 1


def _watch_registrations() -> None:
    """Count every Parameter/buffer/submodule assignment (torch's global registration hooks).

    Installed once per process: the hooks return None (they change nothing) and
    cost an integer increment per assignment.
    """
    global _registration_handles
    if _registration_handles is None:
        m = torch.nn.modules.module
        _registration_handles = (m.register_module_parameter_registration_hook(_count_registration),
                                 m.register_module_buffer_registration_hook(_count_registration),
                                 m.register_module_module_registration_hook(_count_registration))


class WeightsWatch:
    """A cheap key of a model's weights: it changes on every edit torch can see.

    In-place edits bump a tensor's version counter; assignments (a replaced
    Parameter, buffer or submodule, ``load_state_dict(assign=True)``) are counted
    by torch's registration hooks and make the watch re-list the tensors. So
    ``key()`` reads one version counter per tensor and nothing else (~5 us for
    SmolLM2-135M's 275 tensors). Blind to writes through ``.data`` and to edits
    of ``module._parameters`` by hand: call :meth:`refresh` then.
    """

    def __init__(self, model: Any):
        _watch_registrations()
        self.model = model
        self.refresh()

    def refresh(self) -> None:
        self._seen = _registrations
        unique = {id(t): t for d, name in _slots(self.model) if (t := d[name]) is not None}
        self._tensors = list(unique.values())
        self._ids = tuple(unique)

    def key(self) -> tuple:
        # A replaced Parameter, buffer or submodule changes the ids (weight processing,
        # compatibility mode, ``module.weight = nn.Parameter(...)``); an in-place edit
        # (``with torch.no_grad(): w.mul_(0)``, ``load_state_dict``) bumps a version
        # counter (GPT-2's bridge keeps its own copies of the q/k/v weights, so the twin
        # may no longer match it). Edits through ``.data`` bypass both.
        # ``model.half()`` / ``.to(...)`` swap ``.data`` too: the first tensor's dtype and
        # device catch a whole-model conversion.
        if _registrations != self._seen:
            self.refresh()
        first = self._tensors[0] if self._tensors else None
        return (self._ids, tuple(map(_VERSION, self._tensors)),
                None if first is None else (first.dtype, first.device),
                bool(getattr(self.model, "compatibility_mode", False)),
                bool(getattr(self.model, "_weights_processed", False)))


class HooksWatch:
    """Whether a foreign hook (:func:`hooks_attached`) is on a model, without a walk per call.

    Every torch hook registration takes a fresh id from ``RemovableHandle.next_id``,
    so when no hook was registered since a walk that found none, none can be
    attached now (removals only take hooks away): the answer costs one integer
    compare. Once hooks were found, every call walks again (~1 ms; such forwards
    are not cached anyway).
    """

    def __init__(self, model: Any):
        self.model = model
        self._seen: int | None = None  # RemovableHandle.next_id at the last clean walk

    def __call__(self) -> bool:
        if _global_hooks():
            return True
        registered = RemovableHandle.next_id
        if registered == self._seen:
            return False
        if hooks_attached(self.model):
            self._seen = None
            return True
        self._seen = registered
        return False


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


def _foreign_hook(module: torch.nn.Module, fn: Any) -> bool:
    # Any hook on a hook point counts (TransformerLens wraps the user's function in its
    # own closure); elsewhere, the hooks that TransformerLens and transformers install
    # on their own modules (the bridge's activation capture, output recording) do not.
    if type(module).__name__ == "HookPoint":
        return True
    owner = getattr(fn, "__module__", None) or ""
    return not owner.startswith(_OWN_HOOK_MODULES)


def _foreign_hooks(module: torch.nn.Module) -> bool:
    d = module.__dict__
    if not (d.get("_forward_hooks") or d.get("_forward_pre_hooks") or d.get("_backward_hooks")
            or d.get("_backward_pre_hooks")):
        return False
    return any(_foreign_hook(module, fn) for name in _FORWARD_HOOKS
               for fn in (d.get(name) or {}).values())


def _global_hooks() -> bool:
    module = torch.nn.modules.module
    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


def hooks_attached(bridge: Any, modules: list[torch.nn.Module] | None = None) -> bool:
    """Whether a hook that can change the output is attached anywhere on the bridge.

    A user's hook (``add_hook``, ``hooks()``, ``run_with_hooks``, a raw PyTorch hook)
    or an intervention's; the bridge's own activation-capture hooks do not count.
    ``modules``: ``list(bridge.modules())`` if already at hand (walking costs ~1 ms).
    """
    if _global_hooks():
        return True
    return any(_foreign_hooks(m) for m in (modules if modules is not None else bridge.modules()))


class TwinCache:
    """One plain twin per bridge, rebuilt when the bridge's parameters are replaced."""

    def __init__(self, bridge: Any):
        self.bridge = bridge
        self._weights = WeightsWatch(bridge)
        self._twin: torch.nn.Module | None = None
        self._key: tuple | None = None
        self.reason: str | None = None  # why there is none, once refused

    def rebuild(self) -> None:
        """Forget the twin (after editing weights through ``.data``, which no check sees)."""
        self._weights.refresh()
        self._key, self._twin = None, None

    def get(self) -> torch.nn.Module | None:
        """The twin, or None when the bridge has none (``reason`` says why)."""
        key = self._weights.key()
        if key != self._key:
            self._key, self._twin, self.reason = key, None, None
            try:
                self._twin = plain_twin(self.bridge)
            except NoTwin as exc:
                self.reason = str(exc)
        return self._twin
