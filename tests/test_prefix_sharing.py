"""Shared prefixes computed once give the logits of separate forwards (issue 16).

Expected logits come from a separate Hugging Face model (eager attention, one
unpadded forward per prompt), never from logitprobe's own paths.
"""

from __future__ import annotations

import pytest
import torch

from hypothesis import HealthCheck, given, settings, strategies as st

import logitprobe
from logitprobe.engine import Engine, _Request

from conftest import hf_reference

ATOL = 1e-4


class _Shape:
    vocab_size = 1000


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    return logitprobe.load(str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="module")
def tiny_llama_hf(tiny_llama_dir):
    return hf_reference(tiny_llama_dir)


def token_lists(vocab: int):
    return st.lists(st.integers(1, vocab - 1), min_size=0, max_size=12)


@st.composite
def prompt_sets(draw, vocab: int = 1000):
    """Prompts built from a header, template openings and fills (shared, partly shared, none)."""
    headers = draw(st.lists(st.lists(st.integers(1, vocab - 1), min_size=0, max_size=40),
                            min_size=1, max_size=3))
    templates = draw(st.lists(token_lists(vocab), min_size=1, max_size=3))
    seqs = []
    for _ in range(draw(st.integers(1, 10))):
        h, t = draw(st.sampled_from(headers)), draw(st.sampled_from(templates))
        fill = draw(st.lists(st.integers(1, vocab - 1), min_size=1, max_size=8))
        seqs.append(h + t + fill)
    seqs += draw(st.lists(st.lists(st.integers(1, vocab - 1), min_size=1, max_size=20),
                          max_size=3))  # unrelated prompts
    keeps = [draw(st.integers(1, min(3, len(s)))) for s in seqs]
    return seqs, keeps


def separate(hf, seqs, keeps):
    with torch.no_grad():
        return [hf(torch.tensor([s])).logits[0, len(s) - k:] for s, k in zip(seqs, keeps)]


def check_equal(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert torch.allclose(g, w, atol=ATOL, rtol=0), (g - w).abs().max()
        # ranks identical away from ties: top-10 order where neighbours differ by > 10 * ATOL
        order = torch.argsort(w, dim=-1, descending=True)[:, :10]
        top = torch.gather(w, -1, order)
        gaps = (top[:, :-1] - top[:, 1:]) > 10 * ATOL
        got_order = torch.argsort(g, dim=-1, descending=True)[:, :10]
        for row in range(order.shape[0]):
            clear = int(gaps[row].long().cumprod(0).sum())  # leading run of clear gaps
            assert torch.equal(order[row, :clear], got_order[row, :clear])


def shared_run(probe, seqs, keeps, spy):
    eng = probe.engine
    eng.clear_cache()
    calls = []
    original = eng.backend.prefix_state

    def counting(tokens, mask):
        calls.append(tuple(tokens.shape))
        return original(tokens, mask)

    spy.setattr(eng.backend, "prefix_state", counting)
    try:
        return eng.logits(seqs, keeps), calls
    finally:
        spy.undo()
        eng.clear_cache()


@pytest.mark.parametrize("which", ["tiny", "tiny_llama"])
def test_shared_prefix_equals_separate_forwards(which, request):
    probe = request.getfixturevalue(which)
    hf, _ = request.getfixturevalue(which + "_hf")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(prompt_sets())
    def prop(case):
        seqs, keeps = case
        with pytest.MonkeyPatch.context() as spy:
            got, _ = shared_run(probe, seqs, keeps, spy)
        check_equal(got, separate(hf, seqs, keeps))

    prop()


@pytest.mark.parametrize("which", ["tiny", "tiny_llama"])
def test_a_long_header_is_computed_once(which, request):
    probe = request.getfixturevalue(which)
    hf, _ = request.getfixturevalue(which + "_hf")
    header = [(7 * i) % 999 + 1 for i in range(60)]
    seqs = [header + [i + 1, i + 2] + [5] * (i % 4) for i in range(12)]
    keeps = [1] * 12
    with pytest.MonkeyPatch.context() as spy:
        got, calls = shared_run(probe, seqs, keeps, spy)
    assert calls == [(1, 60)]  # one prefix forward of the header
    check_equal(got, separate(hf, seqs, keeps))


def test_options_of_one_context_share_it(tiny, tiny_hf):
    """lm-eval style: one context scored against four continuations."""
    hf, _ = tiny_hf
    context = [(11 * i) % 997 + 1 for i in range(50)]
    options = [[3], [4, 5], [6, 7, 8], [9, 10]]
    seqs = [context + o for o in options]
    keeps = [len(o) + 1 for o in options]
    with pytest.MonkeyPatch.context() as spy:
        got, calls = shared_run(tiny, seqs, keeps, spy)
    assert calls == [(1, 49)]  # the last context position's logits come from the suffix forward
    check_equal(got, separate(hf, seqs, keeps))


@pytest.mark.parametrize("which", ["tiny", "tiny_llama"])
def test_many_contexts_share_one_prefix_batch(which, request):
    """Several contexts of different lengths x 4 options: one left-padded prefix forward."""
    probe = request.getfixturevalue(which)
    hf, _ = request.getfixturevalue(which + "_hf")
    seqs, keeps = [], []
    for c in range(5):
        context = [(13 * i + 7 * c) % 997 + 1 for i in range(30 + 9 * c)]
        for o in range(4):
            option = [(c * 4 + o) % 900 + 2] * (1 + o % 3)
            seqs.append(context + option)
            keeps.append(len(option))
    with pytest.MonkeyPatch.context() as spy:
        got, calls = shared_run(probe, seqs, keeps, spy)
    assert calls == [(5, 30 + 9 * 4)]
    check_equal(got, separate(hf, seqs, keeps))


def test_hooked_forwards_take_the_ordinary_path(tiny, tiny_hf):
    hf, _ = tiny_hf
    header = [(7 * i) % 999 + 1 for i in range(60)]
    seqs = [header + [i + 1] for i in range(6)]
    seen = []
    handle = tiny.model.blocks[0].hook_resid_pre.add_hook(lambda t, hook: seen.append(1))
    try:
        with pytest.MonkeyPatch.context() as spy:
            got, calls = shared_run(tiny, seqs, [1] * 6, spy)
    finally:
        tiny.model.reset_hooks()
    assert calls == [] and seen  # no prefix forward: the hook saw the whole prompts
    check_equal(got, separate(hf, seqs, [1] * 6))


def test_disabled_sharing_runs_separate_batches(tiny):
    header = [(7 * i) % 999 + 1 for i in range(60)]
    seqs = [header + [i + 1] for i in range(6)]
    tiny.engine.share_prefixes = False
    try:
        with pytest.MonkeyPatch.context() as spy:
            _, calls = shared_run(tiny, seqs, [1] * 6, spy)
    finally:
        tiny.engine.share_prefixes = True
    assert calls == []


def clusters(seqs, keeps=None, **kwargs):
    eng = Engine(_Shape(), pad_id=0, **kwargs)
    keeps = keeps or [1] * len(seqs)
    shared, rest = eng._shared_prefixes([_Request(tuple(s), k) for s, k in zip(seqs, keeps)])
    return [(n, sorted(r.ids for r in m)) for n, m in shared], sorted(r.ids for r in rest)


def test_cost_model_shares_only_what_pays():
    header = list(range(1, 151))
    t1, t2 = list(range(200, 210)), list(range(300, 310))
    # many fills per template: each template keeps its own longer prefix rather than one
    # cluster cut down to the header (29 rows x 10 tokens lost > one 150-token forward)
    seqs = [header + t + [900 + i] for t in (t1, t2) for i in range(30)]
    shared, rest = clusters(seqs)
    assert [n for n, _ in shared] == [160, 160] and rest == []
    # few fills: one header forward is cheaper than two longer ones (4 x 10 < 150)
    seqs = [header + t + [900 + i] for t in (t1, t2) for i in range(5)]
    shared, rest = clusters(seqs)
    assert [n for n, _ in shared] == [150] and rest == []
    # a short common prefix, or too few rows, is not worth a forward
    assert clusters([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, i] for i in range(20, 23)],
                    forward_cost_tokens=32)[0] == []
    assert clusters([header + [1], header + [2]], forward_cost_tokens=32)[0] != []
    assert clusters([header + [1]], forward_cost_tokens=32)[0] == []
    # distinct prompts: nothing shared
    assert clusters([[i] * 20 for i in range(1, 9)])[0] == []


def test_prefix_stops_before_the_kept_positions():
    header = list(range(1, 41))
    shared, _ = clusters([header + [50], header + [60, 61]], keeps=[1, 2])
    assert [n for n, _ in shared] == [40]
    shared, _ = clusters([header + [50], header + [60]], keeps=[5, 1])
    assert [n for n, _ in shared] == [36]


@pytest.mark.slow
def test_smollm2_shared_prefix_equals_separate_forwards(smol, smol_hf):
    hf, tok = smol_hf
    header = tok("Q: What is the capital of France?\nA: Paris.\nQ: What is two plus two?\n"
                 "A: Four.\nQ: ").input_ids
    questions = ["Who wrote Hamlet?", "What colour is the sky?", "Where is Rome?",
                 "How many legs has a spider?"]
    seqs = [header + tok(q + "\nA:").input_ids for q in questions]
    keeps = [1, 2, 1, 3]
    with pytest.MonkeyPatch.context() as spy:
        got, calls = shared_run(smol, seqs, keeps, spy)
    assert len(calls) == 1
    check_equal(got, separate(hf, seqs, keeps))
