"""Paired model comparison, divergences, McNemar and snapshots' pure parts, against plain torch.

Expected numbers come from ``torch.nn.functional`` / ``math.comb`` / ``torch.quantile``
computed here, never from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe import divergence
from logitprobe.errors import InvalidArgument
from logitprobe.interventions.specs import ZeroAblate
from logitprobe.model_diff import (CaseOutcome, Flips, ModelDiff, _quantile, compare_models,
                                   mcnemar_exact, suite_flips)
from logitprobe._snapshot_file import _quote

PROMPTS = ["hello world", "the cat sat on the", "one two three", "a b c", "x"]
ABLATE = [ZeroAblate("blocks.1.hook_mlp_out")]


def _logits(seed: int, shape=(3, 50), scale=3.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


# -- divergences -----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 20.0))
def test_divergences_match_torch(seed, scale):
    a, b = _logits(seed, scale=scale), _logits(seed + 1, scale=scale)
    la, lb = F.log_softmax(a.double(), -1), F.log_softmax(b.double(), -1)
    # F.kl_div(input=log q, target=log p, log_target=True) is KL(p || q)
    want_kl = F.kl_div(lb, la, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(divergence.kl(a, b), want_kl, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(divergence.kl(b, a),
                               F.kl_div(la, lb, log_target=True, reduction="none").sum(-1),
                               rtol=1e-9, atol=1e-12)
    want_tv = 0.5 * (la.exp() - lb.exp()).abs().sum(-1)
    torch.testing.assert_close(divergence.total_variation(a, b), want_tv)
    want_h = torch.distributions.Categorical(logits=a.double()).entropy()
    torch.testing.assert_close(divergence.entropy(a), want_h)
    # logits and log-probabilities give the same answer; a distribution is 0 from itself
    torch.testing.assert_close(divergence.kl(la, lb), divergence.kl(a, b))
    assert float(divergence.kl(a, a).abs().max()) < 1e-12
    assert float(divergence.total_variation(a, b).max()) <= 1.0


def test_divergences_of_banned_tokens():
    p = torch.tensor([0.0, 0.0, float("-inf")])
    q = torch.tensor([0.0, float("-inf"), 0.0])
    assert math.isinf(float(divergence.kl(p, q)))
    assert float(divergence.total_variation(p, q)) == pytest.approx(0.5)
    assert float(divergence.entropy(p)) == pytest.approx(math.log(2))
    assert float(divergence.kl(p, p)) == 0.0  # 0 * log(0/0) terms are 0, not nan


# -- McNemar and quantiles ---------------------------------------------------------------------
def _mcnemar_by_sum(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_matches_exact_binomial_sum(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(_mcnemar_by_sum(b, c), rel=1e-9, abs=1e-15)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_known_values_and_validation():
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # all 6 flips one way
    assert mcnemar_exact(5, 5) == 1.0
    with pytest.raises(InvalidArgument, match=r"b=-1: `b` must be a count"):
        mcnemar_exact(-1, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=30),
       st.floats(0, 1))
def test_quantile_matches_torch(values, q):
    want = float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))
    assert _quantile(values, q) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_quantile_with_infinite_kl():
    assert _quantile([0.1, math.inf], 0.5) == math.inf
    assert _quantile([0.1, 0.2, math.inf], 0.5) == pytest.approx(0.2)


# -- compare_models on the tiny model ---------------------------------------------------------
def test_compare_models_matches_plain_torch(tiny):
    diff = compare_models(tiny, tiny, PROMPTS, candidate_interventions=ABLATE, k=5,
                          tokens=[" the"])
    # independently: full-sequence logits through probe.logits (another engine path),
    # the ablation applied by the model's own hooks, divergences by torch.nn.functional
    for row, prompt in zip(diff.prompts, PROMPTS):
        base = tiny.logits(prompt)[-1].double()
        with torch.no_grad():
            ablated = tiny.model.run_with_hooks(
                torch.tensor([tiny.encode(prompt)]),
                fwd_hooks=[("blocks.1.hook_mlp_out", lambda t, hook: torch.zeros_like(t))],
            )[0, -1].double()
        lb, lc = F.log_softmax(base, -1), F.log_softmax(ablated, -1)
        assert row.kl == pytest.approx(float((lb.exp() * (lb - lc)).sum()), rel=1e-3, abs=1e-7)
        assert row.kl_reverse == pytest.approx(float((lc.exp() * (lc - lb)).sum()), rel=1e-3,
                                               abs=1e-7)
        assert row.tv == pytest.approx(float(0.5 * (lb.exp() - lc.exp()).abs().sum()), abs=1e-5)
        tb, tc = set(torch.topk(base, 5).indices.tolist()), set(torch.topk(ablated, 5).indices.tolist())
        assert row.top_k_overlap == len(tb & tc) / 5
        assert row.top1_agrees == (int(base.argmax()) == int(ablated.argmax()))
        top1 = int(base.argmax())
        assert row.top1_rank_after == int((ablated > ablated[top1]).sum()) + 1
        the = tiny.token_id(" the")
        (change,) = row.changes
        assert change.rank_before == int((base > base[the]).sum()) + 1
        assert change.rank_after == int((ablated > ablated[the]).sum()) + 1
        assert change.prob_after == pytest.approx(float(lc[the].exp()), rel=1e-4)
    kls = [r.kl for r in diff.prompts]
    assert diff.quantile("kl", 0.95) == pytest.approx(
        float(torch.quantile(torch.tensor(kls, dtype=torch.float64), 0.95)))
    assert [r.index for r in diff.worst()] == sorted(range(len(PROMPTS)), key=lambda i: -kls[i])
    assert diff.top1_agreement == sum(r.top1_agrees for r in diff.prompts) / len(PROMPTS)


def test_each_model_runs_one_batched_forward(tiny):
    tiny.clear_cache()
    before = tiny.stats.snapshot()
    compare_models(tiny, tiny, PROMPTS, candidate_interventions=ABLATE)
    done = tiny.stats.snapshot() - before
    assert done.forwards == 2 and done.sequences == 2 * len(PROMPTS)


def test_identical_models_agree_completely(tiny):
    diff = compare_models(tiny, tiny, PROMPTS)
    assert diff.top1_agreement == 1.0 and diff.quantile("kl", 1.0) == 0.0
    assert diff.assert_top1_agreement(1.0) == 1.0
    assert diff.assert_quantile("kl", 0.95, at_most=0.0) == 0.0


def test_assertions_report_the_worst_prompts(tiny):
    diff = compare_models(tiny, tiny, PROMPTS, candidate_interventions=ABLATE)
    worst = diff.worst(1)[0]
    with pytest.raises(AssertionError) as info:
        diff.assert_quantile("kl", 0.95, at_most=1e-9, show=2)
    text = str(info.value)
    assert text.startswith(f"p95 kl = {diff.quantile('kl', 0.95):.4g} > 1e-09 over 5 prompts "
                           "(5 above the bound")
    assert "worst prompts by kl (2 of 5 above 1e-09):" in text
    lines = [line for line in text.splitlines() if repr(worst.prompt) in line]
    assert lines and f"{worst.kl:.4g}" in lines[0]
    flipped = ModelDiff([r.__class__(**{**r.__dict__, "top1_agrees": i == 0})
                         for i, r in enumerate(diff.prompts)], baseline="b", candidate="c", k=10)
    with pytest.raises(AssertionError, match=r"top-1 agrees on 20.0% of prompts \(1 of 5\), "
                                             r"below the required 98.0% \(b -> c\)"):
        flipped.assert_top1_agreement(0.98)
    with pytest.raises(InvalidArgument, match="at_least=2"):
        diff.assert_top1_agreement(2)
    with pytest.raises(InvalidArgument, match="stat='bogus'"):
        diff.quantile("bogus", 0.5)


def test_compare_models_rejects_bad_arguments(tiny):
    with pytest.raises(InvalidArgument, match=r"prompts=\[\]"):
        compare_models(tiny, tiny, [])
    with pytest.raises(InvalidArgument, match="k=0"):
        compare_models(tiny, tiny, PROMPTS, k=0)
    with pytest.raises(InvalidArgument, match=r"labels='b': `labels` must be two strings"):
        compare_models(tiny, tiny, PROMPTS, labels="b")
    diff = compare_models(tiny, tiny, PROMPTS[:1], labels=("float32", "float32 again"))
    assert (diff.baseline, diff.candidate) == ("float32", "float32 again")


# -- flips -------------------------------------------------------------------------------------
def test_flips_table_and_counts():
    cases = [CaseOutcome("a", True, False, "boom\nmore"), CaseOutcome("b", True, True),
             CaseOutcome("c", False, True), CaseOutcome("d", True, False, "x")]
    flips = Flips(cases, baseline="B", candidate="C")
    assert [c.name for c in flips.regressions] == ["a", "d"] and len(flips.fixes) == 1
    assert flips.p_value == pytest.approx(_mcnemar_by_sum(2, 1))
    text = str(flips)
    assert text.splitlines()[0] == ("4 cases: 3 pass under B, 2 under C; 2 regression(s), "
                                    "1 fix(es); exact McNemar p = 1: could be noise (p >= 0.05)")
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
            for line in text.splitlines()[3:]}
    assert rows == {"a": ["pass", "FAIL", "boom"], "c": ["FAIL", "pass", ""],
                    "d": ["pass", "FAIL", "x"]}


def test_suite_flips_with_an_ablation(tiny):
    from logitprobe.behaviour import parse_suite

    nts = tiny.next_token(PROMPTS)
    ablated = tiny.next_token(PROMPTS, interventions=ABLATE)
    cases = "\n".join(f"- {{name: c{i}, prompt: {p!r}, expect: {{argmax: {nt.argmax.id}}}}}"
                      for i, (p, nt) in enumerate(zip(PROMPTS, nts)))
    flips = suite_flips(tiny, tiny, parse_suite(cases), candidate_interventions=ABLATE)
    want = [f"c{i}" for i, (a, b) in enumerate(zip(nts, ablated)) if a.argmax.id != b.argmax.id]
    assert [c.name for c in flips.regressions] == want and not flips.fixes
    assert all(c.baseline_passed for c in flips.cases)


# -- snapshot file pieces -----------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.text())
def test_quoted_text_reads_back_unchanged(text):
    assert yaml.safe_load(f"key: {_quote(text)}")["key"] == text


def test_fingerprint_is_dtype_independent_and_weight_sensitive(tiny_gpt2_dir, tiny):
    import copy

    import logitprobe
    from logitprobe.snapshots import fingerprint

    half = logitprobe.load(str(tiny_gpt2_dir), device="cpu", dtype=torch.bfloat16)
    assert fingerprint(half) == fingerprint(tiny)
    broken = logitprobe.Probe(copy.deepcopy(tiny.model), tiny.tokenizer)  # same weights, own copy
    with torch.no_grad():
        for name, p in broken.model.named_parameters():
            if ".1." in name and "mlp" in name:
                p.zero_()
    assert fingerprint(broken) != fingerprint(tiny)


# -- logitprobe diff ------------------------------------------------------------------------------
def _cli(capsys, *argv):
    from logitprobe.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def ablate_file(tmp_path):
    path = tmp_path / "ablate.yaml"
    path.write_text("- {kind: zero_ablate, hook: blocks.1.hook_mlp_out}\n")
    return path


def test_cli_diff_table_json_and_plot(tiny_gpt2_dir, tiny, ablate_file, tmp_path, capsys):
    import json

    want = compare_models(tiny, tiny, PROMPTS, candidate_interventions=ABLATE, tokens=[" the"])
    base = ["diff", *PROMPTS, "--model", str(tiny_gpt2_dir), "--device", "cpu",
            "--candidate-interventions", str(ablate_file), "--tokens", " the"]
    code, out, _ = _cli(capsys, *base, "--worst", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{tiny_gpt2_dir} (float32) (baseline) vs {tiny_gpt2_dir} (float32) + " \
                       "ablate.yaml (candidate), 5 prompt(s)"
    kl_row = next(line for line in lines if line.strip().startswith("KL(b||c)"))
    assert kl_row.split("|")[-3].strip() == f"{want.quantile('kl', 0.95):.4g}"  # p95
    worst = want.worst(2)
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert [int(r.split("|")[0]) for r in rows] == [w.index for w in worst]

    png = tmp_path / "diff.png"
    code, out, _ = _cli(capsys, *base, "--json", "--plot", str(png))
    assert code == 0
    data = json.loads(out)  # strict JSON
    assert data["top1_agreement"] == want.top1_agreement
    assert data["quantiles"]["kl"]["p95"] == pytest.approx(want.quantile("kl", 0.95))
    assert [r["index"] for r in data["worst"]] == [w.index for w in want.worst(10)]
    assert data["worst"][0]["changes"][0]["token"] == " the"
    assert data["figure"] == str(png) and png.stat().st_size > 10_000


def test_cli_diff_thresholds_exit_1(tiny_gpt2_dir, tiny, ablate_file, capsys):
    base = ["diff", *PROMPTS, "--model", str(tiny_gpt2_dir), "--device", "cpu",
            "--candidate-interventions", str(ablate_file)]
    code, out, _ = _cli(capsys, *base, "--max-kl", "1e-9")
    assert code == 1
    assert "FAILED: p95 kl = " in out and "worst prompts by kl (5 of 5 above 1e-09):" in out
    code, _, _ = _cli(capsys, *base, "--max-kl", "100", "--min-top1", "0")
    assert code == 0


def test_cli_diff_suite_flips(tiny_gpt2_dir, tiny, ablate_file, tmp_path, capsys):
    import json

    nts = tiny.next_token(PROMPTS)
    suite = tmp_path / "test_s.logit.yaml"
    suite.write_text("\n".join(f"- {{name: c{i}, prompt: {p!r}, expect: {{argmax: {nt.argmax.id}}}}}"
                               for i, (p, nt) in enumerate(zip(PROMPTS, nts))))
    code, out, _ = _cli(capsys, "diff", "--suite", str(suite), "--model", str(tiny_gpt2_dir),
                        "--device", "cpu", "--candidate-interventions", str(ablate_file), "--json")
    assert code == 0
    data = json.loads(out)
    want = suite_flips(tiny, tiny, suite, candidate_interventions=ABLATE)
    assert data["prompts"] == len(PROMPTS)  # the suite's prompts, when none are given
    flips = data["flips"]["test_s.logit.yaml"]
    assert flips["regressions"] == [c.name for c in want.regressions]
    assert flips["p_value"] == pytest.approx(want.p_value)


@pytest.mark.parametrize("extra, message", [
    ((), "--candidate: the candidate is the baseline"),
    (("--candidate-dtype", "bfloat16", "--plot", "x.txt"), "--plot='x.txt': '.txt' is not a figure format"),
    (("--candidate-dtype", "bfloat16", "-k", "0"), "--k=0: must be at least 1"),
])
def test_cli_diff_usage_errors(tiny_gpt2_dir, capsys, extra, message):
    code, _, err = _cli(capsys, "diff", "hi", "--model", str(tiny_gpt2_dir), "--device", "cpu",
                        *extra)
    assert code == 2 and message in err


def test_cli_diff_needs_prompts(tiny_gpt2_dir, capsys):
    code, _, err = _cli(capsys, "diff", "--model", str(tiny_gpt2_dir), "--candidate-dtype",
                        "float16")
    assert code == 2 and "prompt: no prompts to compare" in err
