"""Snapshot comparison rules on handmade distributions, and the file format.

Distributions are built from logits over the tiny model's vocabulary; expected
errors are computed with ``torch.log_softmax`` here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe.results import NextToken
from logitprobe.snapshots import (SnapshotError, SnapshotFile, check_snapshot, compare_entry,
                                  record)


def _nt(tiny, logits: torch.Tensor, prompt: str = "p") -> NextToken:
    return NextToken(logits, vocab=tiny.vocab, prompt=prompt, token_ids=(1,), position=0)


def _base(tiny, seed: int = 0) -> torch.Tensor:
    return torch.randn(tiny.vocab_size, generator=torch.Generator().manual_seed(seed)) * 3


def test_unchanged_passes_and_a_moved_token_fails(tiny):
    logits = _base(tiny)
    entry = record(tiny, [_nt(tiny, logits)], k=10)
    assert compare_entry(entry, [_nt(tiny, logits)]).passed
    top = torch.topk(logits, 10).indices
    moved = logits.clone()
    moved[top[4]] += 0.05  # far beyond float32's 1e-3
    result = compare_entry(entry, [_nt(tiny, moved)])
    assert not result.passed and len(result.failed) == 1
    want = (torch.log_softmax(moved.double(), -1) - torch.log_softmax(logits.double(), -1))
    assert result.max_error == pytest.approx(float(want[top].abs().max()), abs=1e-5)
    errors = want[top].abs()
    assert result.mean_error == pytest.approx(float(errors.mean()), abs=1e-5)
    assert "of 10 log-probabilities moved beyond tolerance" in result.failed[0].reasons[0]
    # the same change within a looser tolerance passes
    assert compare_entry(entry, [_nt(tiny, moved)], atol=0.1).passed


def test_near_tie_swaps_pass_unless_strict(tiny):
    logits = _base(tiny, 1)
    top = torch.topk(logits, 10).indices
    logits[top[3]] = logits[top[2]] - 1e-4  # ranks 3 and 4 are a near tie
    entry = record(tiny, [_nt(tiny, logits)], k=10)
    swapped = logits.clone()
    swapped[top[3]], swapped[top[2]] = logits[top[2]], logits[top[3]]
    result = compare_entry(entry, [_nt(tiny, swapped)])
    assert result.passed
    assert {r.status for r in result.cases[0].rows if r.id in (int(top[2]), int(top[3]))} == {"moved"}
    strict = compare_entry(entry, [_nt(tiny, swapped)], strict_ranks=True)
    assert strict.failed[0].reasons == ("the top-10 ranking changed (strict_ranks)",)


def test_entering_from_far_below_fails_but_a_boundary_tie_does_not(tiny):
    logits = _base(tiny, 2)
    order = torch.argsort(logits, descending=True)
    entry = record(tiny, [_nt(tiny, logits)], k=10)
    tie = logits.clone()
    tie[order[10]] = logits[order[9]] + 1e-4  # the 11th edges past the 10th
    assert compare_entry(entry, [_nt(tiny, tie)]).passed
    jump = logits.clone()
    jump[order[500]] = logits[order[0]] + 1.0  # from rank 501 to rank 1
    result = compare_entry(entry, [_nt(tiny, jump)], atol=0.5)  # the others move < 0.5
    reasons = result.failed[0].reasons
    assert any("entered the top 10 from outside it" in r for r in reasons)
    rows = {r.id: r for r in result.cases[0].rows}
    assert rows[int(order[500])].status == "entered" and rows[int(order[9])].status == "left"


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1000), st.floats(0.0, 3e-4))
def test_noise_below_tolerance_always_passes(tiny, seed, scale):
    logits = _base(tiny, seed)
    noise = torch.randn(tiny.vocab_size, generator=torch.Generator().manual_seed(seed + 1))
    noisy = logits + scale * noise.clamp(-1, 1)
    entry = record(tiny, [_nt(tiny, logits)], k=20)
    # every log-probability moves by at most 2 * scale (the noise and the normalizer)
    assert compare_entry(entry, [_nt(tiny, noisy)]).passed


def test_file_round_trip_and_readable_errors(tiny, tmp_path):
    path = tmp_path / "__snapshots__" / "t.snap.yaml"
    snaps = SnapshotFile(path)
    prompts = ["hello \"quoted\"\n world", "tab\there ü €"]
    assert check_snapshot(snaps, "k", tiny, prompts, k=5, update=True)[0] == "written"
    snaps.save()
    again = SnapshotFile(path)
    assert again.get("k") == snaps.get("k")  # every field read back equal
    assert check_snapshot(again, "k", tiny, prompts, k=5)[0] == "passed"

    elsewhere = dataclasses.replace(again.get("k"), device="cuda")
    again.entries["k"] = elsewhere
    with pytest.raises(SnapshotError, match=r"the snapshot was taken on 'cuda', this run is on "
                                            r"'cpu'"):
        check_snapshot(again, "k", tiny, prompts, k=5)
    assert check_snapshot(again, "k", tiny, prompts, k=5, allow_other_device=True)[0] == "passed"
    with pytest.raises(SnapshotError, match="the test now asks something else"):
        check_snapshot(SnapshotFile(path), "k", tiny, prompts[:1], k=5)

    path.write_text("snapshots: {k: {model: x}}\n")
    with pytest.raises(SnapshotError, match=r"t.snap.yaml: not a readable snapshot file "
                                            r"\(KeyError"):
        SnapshotFile(path).get("k")
