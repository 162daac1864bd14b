"""Snapshots and baseline flips through pytester: update, round trip, failures, unused, flips.

Inner runs are in-process (``runpytest``) on the tiny random GPT-2, already loaded here.
"""

from __future__ import annotations

import pytest
import yaml

import logitprobe._regression_plugin  # noqa: F401 - one copy across in-process runs
import logitprobe._yaml_items  # noqa: F401
import logitprobe.assertions  # noqa: F401
import logitprobe.snapshots  # noqa: F401

from conftest import private_load

pytest_plugins = ["pytester"]

QUIET = ("--logitprobe-device=cpu", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
         "-p", "no:hypothesispytest")
PROMPTS = ["hello world", "the cat sat on the", "one two three"]

SUITE = f"""
import pytest

def test_pair(probe, logit_snapshot):
    logit_snapshot(probe, {PROMPTS!r})

def test_named(probe, logit_snapshot):
    logit_snapshot(probe, "a b c", name="abc", k=5)
    logit_snapshot(probe, "x y z", k=5)

@pytest.mark.logitprobe(dtype="float32")
def test_pinned(probe, logit_snapshot):
    logit_snapshot(probe, "the dog")
"""


@pytest.fixture
def run(pytester, tiny_gpt2_dir, tiny):
    def run(*args):
        return pytester.runpytest(f"--logitprobe-model={tiny_gpt2_dir}", *QUIET, *args)
    return run


def _snapfile(pytester, stem="test_geo"):
    return pytester.path / "__snapshots__" / f"{stem}.snap.yaml"


def test_missing_snapshot_fails_then_update_round_trips(pytester, run, tiny):
    pytester.makepyfile(test_geo=SUITE)
    result = run()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*snapshot 'test_pair' in *test_geo.snap.yaml: missing (the file "
                                 "does not exist yet). Write it with pytest "
                                 "--logitprobe-snapshot-update*"])
    assert not _snapfile(pytester).exists()

    result = run("--logitprobe-snapshot-update")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*logitprobe snapshots*", "4 written"])
    data = yaml.safe_load(_snapfile(pytester).read_text())
    assert sorted(data["snapshots"]) == ["test_named#2", "test_named#abc", "test_pair",
                                         "test_pinned"]
    entry = data["snapshots"]["test_pair"]
    assert [c["prompt"] for c in entry["cases"]] == PROMPTS
    assert entry["k"] == 20 and entry["dtype"] == "float32" and entry["device"] == "cpu"
    # the stored numbers are the model's, computed independently here
    nt = tiny.next_token(PROMPTS[1])
    top = entry["cases"][1]["top"]
    assert [row[1] for row in top] == nt.top(20).ids
    assert top[0][3] == pytest.approx(float(nt.logits.double().log_softmax(-1)[top[0][1]]),
                                      abs=1e-5)

    before = _snapfile(pytester).read_text()
    result = run()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*logitprobe snapshots*", "4 passed"])
    run("--logitprobe-snapshot-update").assert_outcomes(passed=3)
    assert _snapfile(pytester).read_text() == before  # passing snapshots are not rewritten


def test_dtype_change_fails_the_right_snapshots_with_a_report(pytester, run):
    pytester.makepyfile(test_geo=SUITE)
    run("--logitprobe-snapshot-update").assert_outcomes(passed=3)
    result = run("--logitprobe-dtype=bfloat16")
    # test_pinned keeps float32 (its marker); the others now run in bfloat16
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*snapshot 'test_pair': * of 3 case(s) differ; largest log-probability error * nats, "
        "mean *",
        "*tolerance: |logprob now - stored| <= 0.001 + 0.0001 * |stored| (float32 snapshot, "
        "compared under bfloat16)*",
        "*[[]case *[]] *: * log-probabilities moved beyond tolerance*",
        "*status*token*id*rank*logprob stored -> now*change",
        "*hint: if the change is intended, rewrite the snapshot with pytest "
        "--logitprobe-snapshot-update",
    ])
    result.stdout.fnmatch_lines(["2 passed, 2 failed"])  # snapshot counts (test_named stops early)


def test_other_weights_fail_loudly_unless_opted_in(pytester, run, tiny_gpt2_dir, tmp_path):
    from logitprobe.testing import build_random_gpt2

    pytester.makepyfile(test_geo=SUITE)
    run("--logitprobe-snapshot-update").assert_outcomes(passed=3)
    other = build_random_gpt2(tmp_path / "other", size="tiny", seed=1)  # other weights
    result = pytester.runpytest(f"--logitprobe-model={other}", *QUIET, "-k", "pair")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*the snapshot was taken with other weights: model *"
                                 "(fingerprint sg2:*), this run has * (fingerprint sg2:*)*"])
    result = pytester.runpytest(f"--logitprobe-model={other}", *QUIET, "-k", "pair",
                                "--logitprobe-snapshot-any-model")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*snapshot 'test_pair': 3 of 3 case(s) differ*",
                                 "*(compared across models/devices: snapshot *"])


def test_unused_snapshots_are_reported_and_removed_by_update(pytester, run):
    pytester.makepyfile(test_geo=SUITE)
    run("--logitprobe-snapshot-update").assert_outcomes(passed=3)
    pytester.makepyfile(test_geo=SUITE.replace('    logit_snapshot(probe, "x y z", k=5)\n', "")
                        .replace("def test_pinned", "def test_renamed"))
    result = run("-k", "not renamed")  # a deselected test's snapshot is not unused
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(["*logitprobe snapshots*", "2 passed, 2 unused",
                                 "  unused: __snapshots__*test_geo.snap.yaml :: test_named#2",
                                 "  unused: __snapshots__*test_geo.snap.yaml :: test_pinned",
                                 "  unused snapshots: their tests are gone or no longer check "
                                 "them; --logitprobe-snapshot-update removes them"])
    result = run("--logitprobe-snapshot-update")
    result.stdout.fnmatch_lines(["2 passed, 1 written, 2 removed"])
    data = yaml.safe_load(_snapfile(pytester).read_text())
    assert sorted(data["snapshots"]) == ["test_named#abc", "test_pair", "test_renamed"]


YAML_SUITE = """
- name: snap-only
  prompt: "hello world"
  snapshot: true
- name: both
  prompt: "the cat sat on the"
  snapshot: {k: 5}
  expect:
    entropy_at_least: 0.0
- name: failing
  prompt: "one two three"
  snapshot: true
  expect:
    entropy_at_most: 0.0
"""


def test_yaml_snapshot_cases(pytester, run, tiny):
    pytester.makefile(".logit.yaml", test_cases=YAML_SUITE)
    result = run()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*snapshot 'snap-only' in *test_cases.logit.snap.yaml: missing*"])
    run("--logitprobe-snapshot-update").assert_outcomes(passed=2, failed=1)
    data = yaml.safe_load(_snapfile(pytester, "test_cases.logit").read_text())
    assert sorted(data["snapshots"]) == ["both", "snap-only"]  # the failing case wrote nothing
    assert len(data["snapshots"]["both"]["cases"][0]["top"]) == 5
    result = run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.no_fnmatch_line("*unused*")


def test_baseline_option_adds_a_flips_table(pytester, run, tiny_gpt2_dir, tiny):
    nt = tiny.next_token("hello world")
    top1 = nt.argmax.token
    pytester.makefile(".logit.yaml", test_flips=f"""
- name: top1
  prompt: "hello world"
  expect: {{argmax: {top1!r}}}
- name: entropy
  prompt: "the cat"
  expect: {{entropy_at_least: 0.0}}
""")
    result = run(f"--logitprobe-baseline={tiny_gpt2_dir}", "--logitprobe-baseline-dtype=float32",
                 "--logitprobe-dtype=bfloat16")
    result.stdout.fnmatch_lines(["*logitprobe verdict flips against the baseline*",
                                 "2 cases: 2 pass under * (float32), * under * (bfloat16); "
                                 "* regression(s), 0 fix(es); exact McNemar p = *"])


def test_snapshots_with_the_older_fingerprint_scheme_still_compare(pytester, run, tiny_gpt2_dir):
    # Files written before deferred booting hold "sg1:" fingerprints of the bridge's
    # parameters (GPT-2's bridge adds tensors, so the two schemes differ there).
    from logitprobe._provenance import fingerprint

    pytester.makepyfile(test_geo=SUITE)
    run("--logitprobe-snapshot-update").assert_outcomes(passed=3)
    probe = private_load(tiny_gpt2_dir, device="cpu")
    sg1, sg2 = fingerprint(probe, "sg1"), fingerprint(probe, "sg2")
    assert sg1.startswith("sg1:") and sg2.startswith("sg2:") and sg1[4:] != sg2[4:]
    [path] = (pytester.path / "__snapshots__").glob("*.snap.yaml")
    text = path.read_text()
    assert sg2 in text
    path.write_text(text.replace(sg2, sg1))
    run().assert_outcomes(passed=3)
    other = sg1[:-4] + ("0000" if not sg1.endswith("0000") else "1111")  # other weights
    path.write_text(text.replace(sg2, other))
    result = run("-k", "pair")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*the snapshot was taken with other weights*"])
