"""Every query equals a direct Hugging Face / plain torch computation on the same weights."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitprobe import Candidate, NextToken, TopK

PROMPTS = ["I like oat milk in my", "The capital of France is", "The cat sat on the",
           "Logits are", "One two three four five six seven eight nine"]


def hf_logits(hf, text):
    model, tok = hf
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_next_token_equals_hf(tiny, tiny_hf, prompt):
    ref = hf_logits(tiny_hf, prompt)[-1]
    nt = tiny.next_token(prompt)
    assert isinstance(nt, NextToken)
    assert nt.logits.dtype == torch.float32 and nt.logits.shape == ref.shape
    torch.testing.assert_close(nt.logits, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nt.probs, torch.softmax(ref, -1), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(nt.logprobs, torch.log_softmax(ref, -1), atol=1e-4, rtol=1e-4)


def test_queries_match_plain_torch(tiny, tiny_hf):
    prompt = "I like oat milk in my"
    ref = hf_logits(tiny_hf, prompt)[-1]
    nt = tiny.next_token(prompt)
    order = torch.argsort(ref, descending=True)
    for tid in [int(order[0]), int(order[3]), int(order[500]), tiny.token_id(" coffee")]:
        assert nt.rank(tid) == int((ref > ref[tid]).sum()) + 1
        assert nt.logit(tid) == pytest.approx(float(ref[tid]), abs=1e-4)
        assert nt.prob(tid) == pytest.approx(float(torch.softmax(ref, -1)[tid]), rel=1e-4)
        assert nt.logprob(tid) == pytest.approx(float(torch.log_softmax(ref, -1)[tid]), abs=1e-4)
    p = torch.softmax(ref.double(), -1)
    assert nt.entropy() == pytest.approx(float(-(p * p.log()).sum()), rel=1e-4)
    assert nt.argmax.id == int(ref.argmax())


def test_top_k_table(tiny, tiny_hf):
    prompt = "The capital of France is"
    ref = hf_logits(tiny_hf, prompt)[-1]
    top = tiny.next_token(prompt).top(10)
    assert isinstance(top, TopK) and len(top) == 10
    assert top.ids == torch.topk(ref, 10).indices.tolist()
    assert [c.rank for c in top] == list(range(1, 11))
    first = top[0]
    assert isinstance(first, Candidate)
    assert first in top and first.token in top and first.id in top
    assert " zzzz-not-a-token" not in top
    table = str(top)
    assert "rank" in table and "logit" in table and repr(first.token) in table
    assert len(table.splitlines()) == 12


def test_ties_share_a_rank(tiny):
    nt = tiny.next_token("The cat sat")
    logits = torch.zeros(1000)
    logits[[3, 7, 9]] = 5.0
    logits[11] = 9.0
    tied = NextToken(logits, vocab=tiny.vocab, prompt="x", token_ids=[1], position=0)
    assert tied.rank(11) == 1
    assert [tied.rank(i) for i in (3, 7, 9)] == [2, 2, 2]
    assert tied.rank(0) == 5
    assert tied.top(4).ids == [11, 3, 7, 9]  # ties broken by lower id
    assert nt.rank(nt.argmax.id) == 1


def test_position_reads_an_earlier_prediction(tiny, tiny_hf):
    prompt = "The cat sat on the"
    ref = hf_logits(tiny_hf, prompt)
    for position in (0, 2, -2, -1):
        nt = tiny.next_token(prompt, position=position)
        torch.testing.assert_close(nt.logits, ref[position], atol=1e-4, rtol=1e-4)


def test_full_logits(tiny, tiny_hf):
    prompt = "The cat sat on the mat"
    torch.testing.assert_close(tiny.logits(prompt), hf_logits(tiny_hf, prompt), atol=1e-4, rtol=1e-4)


def test_score_equals_hf_teacher_forcing(tiny, tiny_hf):
    model, tok = tiny_hf
    prompt, cont = "The capital of France is", " Paris is a city"
    p_ids = tok(prompt).input_ids
    c_ids = tok(cont, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + c_ids])).logits[0]
    logprobs = torch.log_softmax(logits, -1)
    expected = [float(logprobs[len(p_ids) - 1 + j, t]) for j, t in enumerate(c_ids)]
    expected_ranks = [int((logits[len(p_ids) - 1 + j] > logits[len(p_ids) - 1 + j, t]).sum()) + 1
                      for j, t in enumerate(c_ids)]
    score = tiny.score(prompt, cont)
    assert [t.id for t in score.tokens] == c_ids
    assert score.logprobs == pytest.approx(expected, abs=1e-4)
    assert score.ranks == expected_ranks
    assert score.logprob == pytest.approx(sum(expected), abs=1e-3)
    assert score.perplexity == pytest.approx(math.exp(-sum(expected) / len(c_ids)), rel=1e-3)
    assert score.is_greedy == all(r == 1 for r in expected_ranks)


def test_score_is_greedy_for_the_greedy_continuation(tiny):
    prompt = "I like oat milk in my"
    first = tiny.next_token(prompt).argmax
    second = tiny.next_token(prompt + first.token).argmax
    cont = first.token + second.token
    if tiny.vocab.pieces(cont) != [first.id, second.id]:
        pytest.skip("tokenization of the greedy pair is not stable")
    assert tiny.score(prompt, cont).is_greedy
    assert not tiny.score(prompt, tiny.next_token(prompt).top(2)[1].token).is_greedy


def test_score_batched_equals_single(tiny):
    prompts = ["The cat sat", "The capital of France is", "Logits"]
    batched = tiny.score(prompts, [" on the mat", " Paris", " are raw"])
    for p, c, s in zip(prompts, [" on the mat", " Paris", " are raw"], batched):
        tiny.clear_cache()
        assert tiny.score(p, c).logprobs == pytest.approx(s.logprobs, abs=1e-4)


WORDS = ["the", " cat", " sat", " on", " mat", " Paris", " coffee", " milk", " I", " like",
         " oat", " capital", " of", " France", " is", " a", " city", ".", ",", " dog", "\n"]
prompt_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=14).map("".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=st.lists(prompt_text, min_size=1, max_size=9))
def test_batch_equals_single(tiny, prompts):
    """Property: a padded batch gives every prompt the logits it gets alone (within 1e-4)."""
    tiny.clear_cache()
    batched = tiny.next_token(prompts)
    for prompt, nt in zip(prompts, batched):
        tiny.clear_cache()
        alone = tiny.next_token(prompt)
        torch.testing.assert_close(nt.logits, alone.logits, atol=1e-4, rtol=0)
        assert nt.token_ids == alone.token_ids


def test_batch_equals_single_on_smollm2(smol):
    """Llama/RoPE positions under left padding (TransformerLens #1609), on the real model."""
    prompts = ["Hi", "I like oat milk in my", "The capital of France is", "One two three four five six"]
    smol.clear_cache()
    batched = smol.next_token(prompts)
    assert smol.stats.padded_tokens > 0
    for prompt, nt in zip(prompts, batched):
        smol.clear_cache()
        torch.testing.assert_close(nt.logits, smol.next_token(prompt).logits, atol=1e-4, rtol=0)


def test_cache_no_forward_twice(tiny):
    tiny.clear_cache()
    tiny.stats.reset()
    a = tiny.next_token("The cat sat on")
    assert tiny.stats.forwards == 1 and tiny.stats.cache_misses == 1
    b = tiny.next_token("The cat sat on")
    assert tiny.stats.forwards == 1 and tiny.stats.cache_hits == 1
    assert torch.equal(a.logits, b.logits)
    # duplicates inside one batch run once; the same prompt at an earlier position needs more logits
    tiny.next_token(["The dog", "The dog", "The cat sat on"])
    assert tiny.stats.forwards == 2 and tiny.stats.sequences == 2
    tiny.next_token("The cat sat on", position=1)
    assert tiny.stats.forwards == 3
    tiny.next_token("The cat sat on", position=2)  # now served from the wider cached entry
    assert tiny.stats.forwards == 3
    # a one-token continuation's score reuses the prompt's forward
    tiny.score("The cat sat on", " the")
    assert tiny.stats.forwards == 3


def test_batched_forwards_are_grouped(tiny):
    tiny.clear_cache()
    tiny.stats.reset()
    prompts = [" ".join(["the cat"] * (1 + i % 5)) + f" {i}" for i in range(64)]
    tiny.engine.share_prefixes = False  # length grouping alone (prefix sharing: test_prefix_sharing)
    try:
        tiny.next_token(prompts)
    finally:
        tiny.engine.share_prefixes = True
    assert tiny.stats.sequences == 64
    assert tiny.stats.forwards <= 6


def test_cache_is_bounded(tiny_gpt2_dir):
    from logitprobe import Probe

    base = tiny_gpt2_dir
    import logitprobe

    bridge = logitprobe.load(str(base), device="cpu").model
    small = Probe(bridge, logitprobe.load(str(base), device="cpu").tokenizer,
                  cache_bytes=3 * 1000 * 4)  # room for three vocab-sized rows
    small.next_token(["a", "b", "c", "d", "e"])
    assert small.engine._cached_bytes <= 3 * 1000 * 4
    small.stats.reset()
    small.next_token("e")
    assert small.stats.cache_hits == 1
    small.next_token("a")
    assert small.stats.cache_misses == 1
