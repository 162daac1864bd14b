"""Collection of hostile or broken ``test_*.logit.yaml`` files, through pytester.

Every problem found without the weights is reported before the model is loaded, and
names the file and the case.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

import logitprobe._yaml_items  # noqa: F401 - one copy across pytester's in-process runs

pytest_plugins = ["pytester"]

DATA = Path(__file__).resolve().parent / "data"
QUIET = ("--logitprobe-device=cpu", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
         "-p", "no:hypothesispytest")


@pytest.fixture
def run_tiny(pytester, tiny_gpt2_dir, tiny):
    def run(*args):
        return pytester.runpytest(f"--logitprobe-model={tiny_gpt2_dir}", *QUIET, *args)
    return run


def _tokenizer_only(pytester, model_dir: Path) -> Path:
    """A model directory with the tokenizer and config of ``model_dir`` but no weights."""
    light = pytester.path / "light"
    light.mkdir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(model_dir / name, light / name)
    return light


def collection_error(result, lines: list[str]) -> None:
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_*.logit.yaml*", *lines])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_billion_laughs_is_a_collection_error(pytester, run_tiny):
    pytester.path.joinpath("test_lol.logit.yaml").write_bytes(
        (DATA / "billion_laughs.logit.yaml").read_bytes())
    collection_error(run_tiny(), ["test_lol.logit.yaml: its aliases (*name) expand to "
                                  "490,329,036 more values than the file spells out, over the "
                                  "limit of 100,000 (a \"billion laughs\" document?)*"])


def test_duplicate_key_is_a_collection_error(pytester, run_tiny):
    pytester.makefile(".logit.yaml", test_geo=textwrap.dedent("""\
        - name: capital
          prompt: "The capital of France is"
          expect:
            argmax: " Paris"
            argmax: " London"
        """))
    collection_error(run_tiny(), ["test_geo.logit.yaml, case 1 'capital', line 5: key 'argmax' "
                                  "is given twice (first at line 4)*"])


def test_non_utf8_file_is_a_collection_error(pytester, run_tiny):
    before, line2 = b"- name: cafe\n  prompt: caf", b"  prompt: caf"
    pytester.path.joinpath("test_geo.logit.yaml").write_bytes(
        before + b"\xe9\n  expect: {argmax: ' y'}\n")
    collection_error(run_tiny(), [f"test_geo.logit.yaml: not UTF-8 text: byte {len(before)} "
                                  f"(line 2, column {len(line2) + 1}) is b'\\xe9'*"])


def test_bad_intervention_is_a_collection_error(pytester, run_tiny):
    pytester.makefile(".logit.yaml", test_geo=textwrap.dedent("""\
        - name: boost
          prompt: "I like oat milk in my"
          interventions: [{kind: set_logit, token: " coffee", to: "max+*2"}]
          expect: {argmax: " coffee"}
        """))
    collection_error(run_tiny(), ["test_geo.logit.yaml, case 1 'boost': interventions[[]0]: "
                                  "SetLogit: to='max+*2': expected a number, a name or '(' "
                                  "but got '*' at column 5*"])


def test_token_checks_need_no_weights(pytester, tiny_gpt2_dir, tiny):
    # A model directory with the tokenizer and config but no weights: cases that the
    # tokenizer shows are wrong fail with their own message; the valid one cannot load.
    light = _tokenizer_only(pytester, tiny_gpt2_dir)
    long = " ".join(["cat"] * 200)
    pytester.makefile(".logit.yaml", test_geo=textwrap.dedent(f"""\
        - name: fine
          prompt: "The cat sat on the"
          expect: {{entropy_at_most: 100}}
        - name: far
          prompt: "The cat sat on the"
          position: 9
          expect: {{entropy_at_most: 100}}
        - name: long
          prompt: {long!r}
          expect: {{entropy_at_most: 100}}
        - name: greedy
          prompt: "The cat"
          xfail: a broken case fails even when marked xfail
          expect: {{greedy_starts_with: {long!r}}}
        """))
    hf = tiny.vocab.tokenizer  # the model's own Hugging Face tokenizer
    n, n_long = (len(hf(text)["input_ids"]) for text in ("The cat sat on the", long))
    result = pytester.runpytest(f"--logitprobe-model={light}", *QUIET)
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines([
        f"test_geo.logit.yaml, case 2 'far': position=9: prompt 'The cat sat on the' has {n} "
        f"tokens, so `position` must be in [-{n}, {n - 1}]",
        f"test_geo.logit.yaml, case 3 'long': prompt 'cat cat*' is {n_long} "
        f"tokens, longer than the model's context of {tiny.n_ctx}; shorten it",
        "test_geo.logit.yaml, case 4 'greedy': greedy_starts_with: the prompt and 'cat cat*' are "
        "* tokens, longer than the model's context of 128; shorten them",
    ])
    result.stdout.fnmatch_lines(["FAILED test_geo.logit.yaml::fine - Failed: logitprobe: cannot*",
                                 "FAILED test_geo.logit.yaml::far - test_geo.logit.yaml, case 2*",
                                 "FAILED test_geo.logit.yaml::long - test_geo.logit.yaml, case 3*",
                                 "FAILED test_geo.logit.yaml::greedy - test_geo.logit.yaml, "
                                 "case 4*"])


def test_run_time_errors_name_file_and_case(pytester, run_tiny):
    pytester.makefile(".logit.yaml", test_geo=textwrap.dedent("""\
        - name: hook
          prompt: "The cat sat on the"
          interventions: [{kind: zero_ablate, hook: blocks.7.hook_resid_post}]
          expect: {entropy_at_most: 100}
        """))
    result = run_tiny()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["test_geo.logit.yaml, case 1 'hook': *blocks.7.hook_resid_post*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_multi_token_expectations_are_reported_without_weights(pytester, tiny_gpt2_dir, tiny):
    light = _tokenizer_only(pytester, tiny_gpt2_dir)
    pytester.makefile(".logit.yaml", test_spell=textwrap.dedent("""\
        - name: phrase
          prompt: "The cat sat on the"
          expect: {in_top: {token: " the cat sat", k: 5}}
        - name: ids are fine
          prompt: "The cat sat on the"
          expect: {more_likely: {token: 5, than: 6}}
        """))
    n = len(tiny.vocab.tokenizer(" the cat sat", add_special_tokens=False)["input_ids"])
    assert n > 1
    result = pytester.runpytest(f"--logitprobe-model={light}", *QUIET)
    result.assert_outcomes(failed=2)  # the second cannot load the weights: a run-time failure
    result.stdout.fnmatch_lines([
        f"*test_spell.logit.yaml, case 1 'phrase': in_top: token=' the cat sat' is {n} tokens "
        "for this model's tokenizer; a single-token expectation needs one token*"])
    result.stdout.fnmatch_lines(["FAILED test_spell.logit.yaml::ids* - Failed: logitprobe: cannot*"])
