"""logitprobe: make a language model's next-token predictions testable and explorable.

>>> import logitprobe
>>> probe = logitprobe.load("smollm2")                                    # doctest: +SKIP
>>> assert " coffee" in probe.next_token("I like oat milk in my").top(5)  # doctest: +SKIP

Every public name is listed below with the module that defines it. They are
imported on first use, so ``import logitprobe`` (and the pytest plugin) does not
import torch or TransformerLens until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> defining module (pinned by tests/test_public_api.py)
_EXPORTS: dict[str, str] = {
    "Attribution": "logitprobe.lens_results",
    "Candidate": "logitprobe.results",
    "InvalidArgument": "logitprobe.errors",
    "LensResult": "logitprobe.lens_results",
    "LogitProbeError": "logitprobe.errors",
    "ModelUnavailableError": "logitprobe.errors",
    "NextToken": "logitprobe.results",
    "Probe": "logitprobe.probe",
    "PromptError": "logitprobe.errors",
    "Score": "logitprobe.results",
    "Stats": "logitprobe.engine",
    "TokenError": "logitprobe.errors",
    "TokenScore": "logitprobe.results",
    "TopK": "logitprobe.results",
    "load": "logitprobe.loading",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .engine import Stats
    from .errors import (InvalidArgument, LogitProbeError, ModelUnavailableError, PromptError,
                         TokenError)
    from .lens_results import Attribution, LensResult
    from .loading import load
    from .probe import Probe
    from .results import Candidate, NextToken, Score, TokenScore, TopK


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'logitprobe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
