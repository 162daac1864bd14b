"""Regression testing on the embedded SmolLM2: the docs' two scenarios and the example suite.

float32 vs bfloat16 (same weights, lower precision) and SmolLM2 vs SmolLM2 with its
first MLP zeroed (a broken checkpoint), checked against Hugging Face / plain torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import logitprobe
import logitprobe._regression_plugin  # noqa: F401 - one copy across in-process pytester runs
import logitprobe._yaml_items  # noqa: F401
import logitprobe.assertions  # noqa: F401
from logitprobe.interventions import ZeroAblate
from logitprobe.model_diff import compare_models

pytestmark = pytest.mark.slow
pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["The capital of France is", "I like oat milk in my", "One, two, three,",
           "The opposite of hot is", "Thank you very"]
QUIET = ("--logitprobe-model=smollm2", "--logitprobe-device=cpu", "-p", "no:cacheprovider",
         "-p", "no:unraisableexception", "-p", "no:hypothesispytest")


@pytest.fixture(scope="module")
def smol_bf16(smol):
    return logitprobe.load("smollm2", device="cpu", dtype=torch.bfloat16)


def _kl(lp: torch.Tensor, lq: torch.Tensor) -> float:
    return float(F.kl_div(lq, lp, log_target=True, reduction="sum"))


def test_ablated_first_mlp_against_hugging_face(smol, smol_hf):
    model, tok = smol_hf
    diff = compare_models(smol, smol, PROMPTS, tokens=[" Paris"],
                          candidate_interventions=[ZeroAblate("blocks.0.hook_mlp_out")])
    zero = model.model.layers[0].mlp.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    try:
        for row, prompt in zip(diff.prompts, PROMPTS):
            ids = torch.tensor([smol.encode(prompt)])
            with torch.no_grad():
                zero.remove()
                base = F.log_softmax(model(ids).logits[0, -1].double(), -1)
                zero = model.model.layers[0].mlp.register_forward_hook(
                    lambda m, i, out: torch.zeros_like(out))
                ablated = F.log_softmax(model(ids).logits[0, -1].double(), -1)
            assert row.kl == pytest.approx(_kl(base, ablated), rel=2e-3)
            assert row.kl_reverse == pytest.approx(_kl(ablated, base), rel=2e-3)
            assert row.tv == pytest.approx(float(0.5 * (base.exp() - ablated.exp()).abs().sum()),
                                           abs=1e-4)
            assert row.top1_agrees == (int(base.argmax()) == int(ablated.argmax()))
            paris = smol.token_id(" Paris")
            # deep in the tail (rank ~10^4), float32 vs float64 logits can reorder a few ties
            assert row.changes[0].rank_after == pytest.approx(
                int((ablated > ablated[paris]).sum()) + 1, rel=1e-3)
            assert row.changes[0].rank_before == pytest.approx(
                int((base > base[paris]).sum()) + 1, rel=1e-3)
    finally:
        zero.remove()
    # the broken checkpoint is caught: no top-1 survives, KL is several nats
    assert diff.top1_agreement == 0.0 and diff.quantile("kl", 0.5) > 5
    with pytest.raises(AssertionError, match=r"p95 kl = .* > 0.05 over 5 prompts"):
        diff.assert_quantile("kl", 0.95, at_most=0.05)


def test_float32_vs_bfloat16(smol, smol_bf16):
    diff = compare_models(smol, smol_bf16, PROMPTS)
    for row, prompt in zip(diff.prompts, PROMPTS):
        a = F.log_softmax(smol.logits(prompt)[-1].double(), -1)
        b = F.log_softmax(smol_bf16.logits(prompt)[-1].double(), -1)
        # probe.logits runs each prompt alone; compare_models batches them (left padding), and
        # bfloat16 rounds the two slightly differently: 1e-4 relative on SmolLM2
        assert row.kl == pytest.approx(_kl(a, b), rel=1e-2)
        assert row.kl_reverse == pytest.approx(_kl(b, a), rel=1e-2)
    # same weights, lower precision: the docs' claims
    assert diff.assert_top1_agreement(at_least=0.98) == 1.0
    assert diff.assert_quantile("kl", 0.95, at_most=0.05) < 0.01
    assert diff.quantile("tv", 1.0) < 0.1
    from logitprobe.snapshots import fingerprint

    assert fingerprint(smol) == fingerprint(smol_bf16)


def test_example_suite_round_trips_and_bfloat16_fails_the_right_snapshots(pytester, smol,
                                                                          smol_bf16):
    for name in ("test_snapshots.py", "test_snapshots.logit.yaml"):
        shutil.copy(ROOT / "examples" / "regression" / name, pytester.path / name)
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines(["*missing (the file does not exist yet)*"])
    result = pytester.runpytest(*QUIET, "--logitprobe-snapshot-update")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["5 written"])
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["5 passed"])
    # the checked-in example snapshots hold on this machine too
    shutil.rmtree(pytester.path / "__snapshots__")
    shutil.copytree(ROOT / "examples" / "regression" / "__snapshots__",
                    pytester.path / "__snapshots__")
    pytester.runpytest(*QUIET).assert_outcomes(passed=5)

    result = pytester.runpytest(*QUIET, "--logitprobe-dtype=bfloat16")
    result.assert_outcomes(passed=2, failed=3)
    failed = {line.split(" ")[1] for line in result.stdout.lines if line.startswith("FAILED ")}
    assert failed == {"test_snapshots.py::test_capitals", "test_snapshots.logit.yaml::eiffel",
                      "test_snapshots.logit.yaml::opposites"}
    result.stdout.fnmatch_lines([
        "E       logitprobe.LogitAssertionError: snapshot 'test_capitals': 3 of 3 case(s) differ; "
        "largest log-probability error * nats, mean *",
        "E       tolerance: |logprob now - stored| <= 0.001 + 0.0001 * |stored| (float32 "
        "snapshot, compared under bfloat16)*",
        "E       [[]case 1[]] 'The capital of France is': * of 20 log-probabilities moved beyond "
        "tolerance*",
    ])
