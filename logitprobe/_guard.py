"""What a test can leave on a shared model: raw torch hooks and edited weights.

The pytest plugin's ``probe`` fixture takes a :class:`Snapshot` before each test
and asks it afterwards what changed, so that one test cannot silently change
the results of the tests after it. Hook points hooked through TransformerLens
are handled by the plugin itself (``reset_hooks``); this module finds the rest:
``register_forward_hook`` / ``register_forward_pre_hook`` on any submodule and
torch's global module hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .twin import _FORWARD_HOOKS, _foreign_hook

if TYPE_CHECKING:
    from .probe import Probe

__all__ = ["Snapshot"]

# Hook dicts keyed by the same handle id as the main ones (RemovableHandle.remove clears both).
_EXTRA = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
          "_forward_pre_hooks_with_kwargs")
_GLOBAL = ("_global_forward_hooks", "_global_forward_pre_hooks")
_GLOBAL_EXTRA = ("_global_forward_hooks_with_kwargs", "_global_forward_hooks_always_called")


def _hooks(model: torch.nn.Module) -> dict[tuple, tuple[list[dict], int]]:
    """Every foreign hook: ``(owner, dict name, handle id) -> (the dicts holding it, id)``."""
    found: dict[tuple, tuple[list[dict], int]] = {}
    for module in model.modules():
        d = module.__dict__
        for name in _FORWARD_HOOKS:
            for key, fn in list((d.get(name) or {}).items()):
                if _foreign_hook(module, fn):
                    holders = [d[name]] + [d[x] for x in _EXTRA if isinstance(d.get(x), dict)]
                    found[(id(module), name, key)] = (holders, key)
    g = torch.nn.modules.module
    for name in _GLOBAL:
        for key in list(getattr(g, name)):
            holders = [getattr(g, name)] + [getattr(g, x) for x in _GLOBAL_EXTRA]
            found[("global", name, key)] = (holders, key)
    return found


class Snapshot:
    """The foreign hooks and the weights key of a probe's model, before a test."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.hooks = set(_hooks(probe.backend.module))  # no boot: the model as it is
        self.weights = probe.backend.weights_key()
        self.booted = probe.backend.booted

    def remove_new_hooks(self) -> int:
        """Remove the foreign hooks attached since the snapshot; return how many."""
        new = {k: v for k, v in _hooks(self.probe.backend.module).items() if k not in self.hooks}
        for holders, key in new.values():
            for d in holders:
                d.pop(key, None)
        return len(new)

    def weights_changed(self) -> bool:
        """Whether a parameter or buffer was edited in place or replaced since the snapshot.

        A bridge booted during the test changes the key without changing a weight: then
        the key must be the snapshot's up to the boot and the boot's own after it.
        """
        backend = self.probe.backend
        now = backend.weights_key()
        if self.booted or not backend.booted:
            return now != self.weights
        before, after = backend.boot_keys
        return self.weights != before or now not in (before, after)
