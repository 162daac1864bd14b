"""One rule for a behavioural case's outcome, shared by `logitprobe run` and the pytest plugin."""

from __future__ import annotations

import pytest

from logitprobe.behaviour import STATUSES, case_status, parse_suite
from logitprobe.cli import main

FILE = """
- name: plain
  prompt: The cat sat
  expect: {argmax: ' on'}
- name: skipped
  prompt: The cat sat
  skip: not today
  expect: {argmax: ' on'}
- name: expected_to_fail
  prompt: The cat sat
  xfail: a known bug
  expect: {argmax: ' on'}
"""


@pytest.mark.parametrize("name, failure, status", [
    ("plain", None, "passed"),
    ("plain", AssertionError("no"), "failed"),
    ("skipped", None, "skipped"),
    ("skipped", AssertionError("no"), "skipped"),
    ("expected_to_fail", AssertionError("no"), "xfailed"),
    ("expected_to_fail", None, "XPASS"),  # strict: a fixed bug fails the run
])
def test_case_status(name, failure, status):
    cases = {c.name: c for c in parse_suite(FILE, source="test_x.logit.yaml").cases}
    assert case_status(cases[name], failure) == status
    assert status in STATUSES


def test_run_loads_each_files_own_model(tiny_gpt2_dir, tiny, tmp_path, capsys):
    best = tiny.next_token("The cat sat").argmax.token
    first = tmp_path / "test_first.logit.yaml"
    first.write_text(f"model: {tiny_gpt2_dir}\ncases:\n- name: best\n  prompt: The cat sat\n"
                     f"  expect:\n    argmax: {best!r}\n")
    second = tmp_path / "test_second.logit.yaml"
    missing = tmp_path / "no-such-model"
    second.write_text(f"model: {missing}\ncases:\n- name: best\n  prompt: The cat sat\n"
                      f"  expect:\n    argmax: {best!r}\n")
    # The second file names a model that does not exist: it must not run on the first's.
    assert main(["run", str(first), str(second), "--device", "cpu"]) != 0
    assert "no-such-model" in capsys.readouterr().err
    assert main(["run", str(first), "--device", "cpu"]) == 0
