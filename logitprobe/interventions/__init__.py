"""Declarative interventions: edits of the forward pass as validated, serialisable data.

>>> from logitprobe.interventions import SetLogit, Steer, from_dict
>>> spec = SetLogit(" coffee", to="max+10")
>>> from_dict(spec.to_dict()) == spec
True

Pass specs to any query (``probe.next_token(p, interventions=[spec])``, ``score``,
``generate``, the assertion helpers) or scope them to a block with
``with probe.intervene(spec): ...``. See docs/interventions.md.

Spec files are written and read by ``dump_specs`` and ``load_specs`` (formerly
``dump`` and ``load``, deprecated aliases now: ``logitprobe.load`` loads a model).

The spec classes and (de)serializers import no torch; the compiled form,
comparisons, sweeps and plots are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .._deprecation import renamed
from .grammar import Expression
from .serialize import (dump_specs, from_dict, from_json, from_yaml, load_specs, to_dict, to_json,
                        to_yaml)
from .specs import (AddLogit, BanTokens, Match, MeanAblate, Patch, Scale, ScaleLogit, SetLogit,
                    Spec, Steer, ZeroAblate)

_LAZY = {
    "Comparison": "logitprobe.interventions.compare",
    "InterventionNotFired": "logitprobe.interventions.compile",
    "Interventions": "logitprobe.interventions.compile",
    "PatchSweep": "logitprobe.interventions.patching",
    "TokenChange": "logitprobe.interventions.compare",
    "plot_comparison": "logitprobe.interventions.plots",
    "plot_patch_sweep": "logitprobe.interventions.plots",
}

__all__ = [
    "AddLogit", "BanTokens", "Comparison", "Expression", "InterventionNotFired", "Interventions",
    "Match", "MeanAblate", "Patch", "PatchSweep", "Scale", "ScaleLogit", "SetLogit", "Spec",
    "Steer", "TokenChange", "ZeroAblate", "dump_specs", "from_dict", "from_json", "from_yaml",
    "load_specs", "plot_comparison", "plot_patch_sweep", "to_dict", "to_json", "to_yaml",
]
_RENAMED = {"dump": "dump_specs", "load": "load_specs"}  # old name -> new; the old one warns


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return renamed(__name__, name, _RENAMED[name], globals()[_RENAMED[name]])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'logitprobe.interventions' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
