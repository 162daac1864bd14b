"""Golden snapshots of SmolLM2's next-token predictions, and what a dtype change moves.

    pytest examples/regression --logitprobe-model smollm2 --logitprobe-snapshot-update  # write
    pytest examples/regression --logitprobe-model smollm2                               # compare
    pytest examples/regression --logitprobe-model smollm2 --logitprobe-dtype bfloat16   # what moves?

The snapshots live in ``__snapshots__/`` beside this file (taken on CPU in float32).
Under bfloat16, ``test_capitals`` fails with a report of what moved; the counting
test allows bfloat16 noise; the pinned test still runs in float32.
"""

import pytest

CAPITALS = ["The capital of France is", "The capital of Germany is", "The capital of Japan is"]


def test_capitals(probe, logit_snapshot):
    logit_snapshot(probe, CAPITALS)  # top 20 per prompt, float32 tolerance


def test_counting_within_bfloat16_noise(probe, logit_snapshot):
    # a tolerance wide enough for bfloat16 rounding (~0.1 nats on SmolLM2)
    logit_snapshot(probe, ["One, two, three,", "Monday, Tuesday,"], k=10, atol=0.3, rtol=0.02)


@pytest.mark.logitprobe(dtype="float32")
def test_pinned_to_float32(probe, logit_snapshot):
    logit_snapshot(probe, "I like oat milk in my")
