"""The module doctests that run without a model: each example in these docstrings is checked.

The other modules' examples need a loaded probe and are marked ``# doctest: +SKIP``
(the same calls run in tests/test_docs.py and the unit tests).
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "logitprobe",
    "logitprobe.divergence",
    "logitprobe._text",
    "logitprobe._verdict_flips",
    "logitprobe.interventions",
    "logitprobe.interventions.grammar",
    "logitprobe.interventions.specs",
    "logitprobe.progress",
    "logitprobe.sampling_stats",
    "logitprobe.warpers",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=False)
    assert result.attempted > 0, f"{name} has no doctest left to run"
    assert result.failed == 0, f"{result.failed} doctest(s) of {name} failed (run pytest " \
                               f"--doctest-modules {name.replace('.', '/')}.py to see them)"
