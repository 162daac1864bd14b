"""The public API at a glance: an accidental export or removal is a visible change."""

import importlib
import subprocess
import sys
import warnings

import pytest

import logitprobe

EXPECTED = [
    "Attribution",
    "BehaviourFileError",
    "Candidate",
    "ChiSquareResult",
    "Comparison",
    "EmptyDistributionError",
    "FrequencyCheck",
    "Generation",
    "GenerationStep",
    "InvalidArgument",
    "LensResult",
    "LogitAssertionError",
    "LogitProbeError",
    "ModelUnavailableError",
    "NextToken",
    "NonFiniteLogitsError",
    "PassRate",
    "PatchSweep",
    "Probe",
    "PromptError",
    "SampleFrequencies",
    "Score",
    "Stats",
    "TemplateCase",
    "TokenError",
    "TokenScore",
    "TopK",
    "__version__",
    "assert_argmax",
    "assert_argmax_unchanged",
    "assert_close",
    "assert_entropy_at_least",
    "assert_entropy_at_most",
    "assert_greedy_starts_with",
    "assert_in_top",
    "assert_logprob_at_least",
    "assert_logprob_at_most",
    "assert_more_likely",
    "assert_not_in_top",
    "assert_pass_rate",
    "assert_prob_at_least",
    "assert_prob_at_most",
    "assert_prob_close",
    "assert_prob_decreases",
    "assert_prob_increases",
    "assert_prob_within",
    "assert_rank_at_least",
    "assert_rank_at_most",
    "assert_rank_moves",
    "binomial_interval",
    "chi_square_test",
    "expand",
    "frequency_check",
    "load",
    "pass_rate",
    "perturb",
]


def test_all_is_pinned_and_sorted():
    assert logitprobe.__all__ == sorted(logitprobe.__all__)
    assert logitprobe.__all__ == EXPECTED


def test_every_name_resolves():
    for name in logitprobe.__all__:
        assert getattr(logitprobe, name) is not None, name


def test_import_does_not_import_torch():
    code = "import logitprobe, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_public_function_is_named_test():
    for name in logitprobe.__all__:
        assert not name.startswith("test"), name


def test_version_single_source():
    from importlib.metadata import version

    assert version("logitprobe") == logitprobe.__version__


# Renamed names: (module, old, new). The old name is the same object and warns on use.
RENAMED = [
    ("logitprobe.warpers", "TopK", "TopKWarper"),
    ("logitprobe.interventions", "load", "load_specs"),
    ("logitprobe.interventions", "dump", "dump_specs"),
    ("logitprobe.interventions.serialize", "load", "load_specs"),
    ("logitprobe.interventions.serialize", "dump", "dump_specs"),
]


@pytest.mark.parametrize(("module", "old", "new"), RENAMED)
def test_renamed_names_still_work_and_warn(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated .*use "
                                                rf"{module}\.{new}") as record:
        value = getattr(mod, old)
    assert value is getattr(mod, new)
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert new in mod.__all__ and old not in mod.__all__ and old not in dir(mod)


@pytest.mark.parametrize(("module", "old", "new"), RENAMED)
def test_renamed_names_import_with_from(module, old, new):
    with pytest.warns(DeprecationWarning, match=rf"use {module}\.{new}"):
        namespace: dict = {}
        exec(f"from {module} import {old}", namespace)  # noqa: S102  # the `from` form users write
    assert namespace[old] is getattr(importlib.import_module(module), new)


def test_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module, _old, new in RENAMED:
            getattr(importlib.import_module(module), new)


def test_unknown_names_still_raise_attribute_error():
    for module in {m for m, _, _ in RENAMED}:
        with pytest.raises(AttributeError, match="no_such_name"):
            getattr(importlib.import_module(module), "no_such_name")
