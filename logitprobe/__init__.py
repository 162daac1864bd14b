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
    "BehaviourFileError": "logitprobe.behaviour",
    "Candidate": "logitprobe.results",
    "ChiSquareResult": "logitprobe.sampling_stats",
    "Comparison": "logitprobe.interventions.compare",
    "EmptyDistributionError": "logitprobe.errors",
    "FrequencyCheck": "logitprobe.sampling_stats",
    "Generation": "logitprobe.generation_results",
    "GenerationStep": "logitprobe.generation_results",
    "InvalidArgument": "logitprobe.errors",
    "LensResult": "logitprobe.lens_results",
    "LogitAssertionError": "logitprobe.assertions",
    "LogitProbeError": "logitprobe.errors",
    "ModelUnavailableError": "logitprobe.errors",
    "NextToken": "logitprobe.results",
    "NonFiniteLogitsError": "logitprobe.errors",
    "PassRate": "logitprobe.passrate",
    "PatchSweep": "logitprobe.interventions.patching",
    "Probe": "logitprobe.probe",
    "PromptError": "logitprobe.errors",
    "SampleFrequencies": "logitprobe.generation_results",
    "Score": "logitprobe.results",
    "Stats": "logitprobe.engine",
    "TemplateCase": "logitprobe.templates",
    "TokenError": "logitprobe.errors",
    "TokenScore": "logitprobe.results",
    "TopK": "logitprobe.results",
    "assert_argmax": "logitprobe.assertions",
    "assert_argmax_unchanged": "logitprobe.invariance",
    "assert_close": "logitprobe.assertions",
    "assert_entropy_at_least": "logitprobe.assertions",
    "assert_entropy_at_most": "logitprobe.assertions",
    "assert_greedy_starts_with": "logitprobe.assertions",
    "assert_in_top": "logitprobe.assertions",
    "assert_logprob_at_least": "logitprobe.assertions",
    "assert_logprob_at_most": "logitprobe.assertions",
    "assert_more_likely": "logitprobe.assertions",
    "assert_not_in_top": "logitprobe.assertions",
    "assert_pass_rate": "logitprobe.passrate",
    "assert_prob_at_least": "logitprobe.assertions",
    "assert_prob_at_most": "logitprobe.assertions",
    "assert_prob_close": "logitprobe.invariance",
    "assert_prob_decreases": "logitprobe.assertions",
    "assert_prob_increases": "logitprobe.assertions",
    "assert_prob_within": "logitprobe.invariance",
    "assert_rank_at_least": "logitprobe.assertions",
    "assert_rank_at_most": "logitprobe.assertions",
    "assert_rank_moves": "logitprobe.invariance",
    "binomial_interval": "logitprobe.sampling_stats",
    "chi_square_test": "logitprobe.sampling_stats",
    "expand": "logitprobe.templates",
    "frequency_check": "logitprobe.sampling_stats",
    "load": "logitprobe.loading",
    "pass_rate": "logitprobe.passrate",
    "perturb": "logitprobe.perturbations",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .assertions import (LogitAssertionError, assert_argmax, assert_close,
                             assert_entropy_at_least, assert_entropy_at_most,
                             assert_greedy_starts_with, assert_in_top, assert_logprob_at_least,
                             assert_logprob_at_most, assert_more_likely, assert_not_in_top,
                             assert_prob_at_least, assert_prob_at_most, assert_prob_decreases,
                             assert_prob_increases, assert_rank_at_least, assert_rank_at_most)
    from .behaviour import BehaviourFileError
    from .engine import Stats
    from .errors import (EmptyDistributionError, InvalidArgument, LogitProbeError,
                         ModelUnavailableError, NonFiniteLogitsError, PromptError, TokenError)
    from .generation_results import Generation, GenerationStep, SampleFrequencies
    from .interventions.compare import Comparison
    from .interventions.patching import PatchSweep
    from .invariance import (assert_argmax_unchanged, assert_prob_close, assert_prob_within,
                             assert_rank_moves)
    from .lens_results import Attribution, LensResult
    from .loading import load
    from .passrate import PassRate, assert_pass_rate, pass_rate
    from .perturbations import perturb
    from .probe import Probe
    from .results import Candidate, NextToken, Score, TokenScore, TopK
    from .sampling_stats import (ChiSquareResult, FrequencyCheck, binomial_interval,
                                 chi_square_test, frequency_check)
    from .templates import TemplateCase, expand


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'logitprobe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
