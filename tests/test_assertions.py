"""The assert_* helpers: verdicts on handmade distributions, evidence, hints, argument errors.

Handmade logits give exactly known ranks and probabilities; checks that need a
real forward compare with a separate Hugging Face model (tiny random GPT-2).
"""

from __future__ import annotations

import math

import pytest
import torch

from logitprobe import InvalidArgument, LogitProbeError, TokenError
from logitprobe import assertions as A
from logitprobe.assertions import LogitAssertionError
from logitprobe.results import NextToken


def dist(tiny, values: dict[int, float], *, prompt: str = "handmade",
         base: float = 0.0) -> NextToken:
    """A NextToken over the tiny vocabulary: ``base`` everywhere, ``values`` at given ids."""
    logits = torch.full((tiny.vocab_size,), base)
    for tid, v in values.items():
        logits[tid] = v
    return NextToken(logits, vocab=tiny.vocab, prompt=prompt, token_ids=[1], position=0)


@pytest.fixture(scope="module")
def ranked(tiny):
    """Ids 10..19 get logits 10, 9, ..., 1 (ranks 1..10); everything else 0."""
    return dist(tiny, {10 + i: 10.0 - i for i in range(10)})


def tok(tiny, tid: int) -> str:
    return tiny.vocab.decode_one(tid)


# -- top-k and rank ----------------------------------------------------------------------
def test_in_top_boundary(tiny, ranked):
    assert A.assert_in_top(ranked, 14, k=5).rank == 5
    with pytest.raises(LogitAssertionError) as err:
        A.assert_in_top(ranked, 15, k=5)
    msg = str(err.value)
    assert msg.splitlines()[0] == (f"{tok(tiny, 15)!r} (id 15) is not in the top 5 after "
                                   f"'handmade': it is rank 6 (p={ranked.prob(15):.4g})")
    assert "+-- top 5 ends here" in msg
    marked = [line for line in msg.splitlines() if line.startswith(">")]
    assert len(marked) == 1 and f"| {15:>7} |" in marked[0] and marked[0].split()[1] == "6"
    assert "near miss: 1 place(s) outside the top 5" in msg


def test_in_top_agrees_with_plain_membership(tiny, ranked):
    for tid in (10, 14, 15, 500):
        expected = tid in ranked.top(5)
        try:
            A.assert_in_top(ranked, tid, k=5)
            passed = True
        except LogitAssertionError:
            passed = False
        assert passed is expected


def test_not_in_top(tiny, ranked):
    assert A.assert_not_in_top(ranked, 15, k=5).rank == 6
    with pytest.raises(LogitAssertionError, match=r"in the top 5 after 'handmade': it is rank 2"):
        A.assert_not_in_top(ranked, 11, k=5)


def test_rank_bounds_share_tied_ranks(tiny):
    nt = dist(tiny, {10: 5.0, 11: 3.0, 12: 3.0, 13: 1.0})  # ranks 1, 2, 2, 4
    assert A.assert_rank_at_most(nt, 12, 2).rank == 2
    assert A.assert_rank_at_least(nt, 13, 4).rank == 4
    with pytest.raises(LogitAssertionError, match=r"has rank 4 .* expected rank <= 3"):
        A.assert_rank_at_most(nt, 13, 3)
    with pytest.raises(LogitAssertionError, match=r"has rank 2 .* expected rank >= 3"):
        A.assert_rank_at_least(nt, 11, 3)


def test_argmax(tiny, ranked):
    assert A.assert_argmax(ranked, 10).id == 10
    with pytest.raises(LogitAssertionError) as err:
        A.assert_argmax(ranked, 11)
    assert f"is {tok(tiny, 10)!r}" in err.value.verdict
    assert "near miss: 1 logits behind" in str(err.value)
    assert sum(line.startswith(">") for line in err.value.evidence.splitlines()) == 2


def test_more_likely_margin(tiny, ranked):
    A.assert_more_likely(ranked, 10, 11, margin=0.9)  # logit (= logprob) difference 1.0
    with pytest.raises(LogitAssertionError, match=r"by more than 1.1 nats.*difference 1"):
        A.assert_more_likely(ranked, 10, 11, margin=1.1)
    with pytest.raises(LogitAssertionError, match="is not more likely than"):
        A.assert_more_likely(ranked, 11, 10)


# -- probabilities and entropy -----------------------------------------------------------
def test_prob_bounds_on_a_known_distribution(tiny):
    # p = 0.5 on id 10, 0.25 on id 11, the rest spread evenly over the other tokens.
    n = tiny.vocab_size
    probs = torch.full((n,), 0.25 / (n - 2))
    probs[10], probs[11] = 0.5, 0.25
    nt = NextToken(probs.log(), vocab=tiny.vocab, prompt="known", token_ids=[1], position=0)
    assert A.assert_prob_at_least(nt, 11, 0.24).prob == pytest.approx(0.25, rel=1e-5)
    A.assert_prob_at_most(nt, 11, 0.26)
    A.assert_logprob_at_least(nt, 10, math.log(0.5) - 1e-4)
    A.assert_logprob_at_most(nt, 10, math.log(0.5) + 1e-4)
    with pytest.raises(LogitAssertionError, match=r"has p=0\.25 .* expected p >= 0\.3 \(rank 2\)"):
        A.assert_prob_at_least(nt, 11, 0.3)
    with pytest.raises(LogitAssertionError, match=r"expected p <= 0\.2 "):
        A.assert_prob_at_most(nt, 11, 0.2)
    with pytest.raises(LogitAssertionError, match=r"logprob=-0\.6931 .* expected logprob >= -0\.5"):
        A.assert_logprob_at_least(nt, 10, -0.5)


def test_entropy_matches_torch(tiny):
    uniform = dist(tiny, {})
    h = torch.distributions.Categorical(logits=torch.zeros(tiny.vocab_size)).entropy().item()
    assert A.assert_entropy_at_least(uniform, h - 1e-4) == pytest.approx(h, abs=1e-5)
    with pytest.raises(LogitAssertionError, match=rf"entropy .* is {h:.4g} nats, expected <= 6"):
        A.assert_entropy_at_most(uniform, 6.0)
    peaked = dist(tiny, {10: 30.0})
    A.assert_entropy_at_most(peaked, 0.01)
    with pytest.raises(LogitAssertionError, match="too confident"):
        A.assert_entropy_at_least(peaked, 1.0)


def test_close_matches_torch_kl_and_tv(tiny, tiny_hf):
    hf, hf_tok = tiny_hf
    prompts = ["The cat sat on the", "The dog sat on the"]
    a, b = tiny.next_token(prompts)
    with torch.no_grad():
        la, lb = (hf(torch.tensor([hf_tok(p).input_ids])).logits[0, -1].double() for p in prompts)
    lpa, lpb = la.log_softmax(-1), lb.log_softmax(-1)
    kl = torch.nn.functional.kl_div(lpb, lpa, log_target=True, reduction="sum").item()
    tv = 0.5 * (lpa.exp() - lpb.exp()).abs().sum().item()
    got_kl, got_tv = A.assert_close(a, b, kl=kl * 1.01 + 1e-6, tv=min(1.0, tv * 1.01))
    assert got_kl == pytest.approx(kl, rel=1e-3) and got_tv == pytest.approx(tv, rel=1e-3)
    with pytest.raises(LogitAssertionError) as err:
        A.assert_close(a, b, kl=kl / 2)
    assert f"KL={got_kl:.4g} > {kl / 2:g}" in err.value.verdict
    assert "tokens whose probability changed most" in err.value.evidence
    assert A.assert_close(a, a, kl=0.0, tv=0.0) == (0.0, 0.0)


# -- direction ---------------------------------------------------------------------------
def test_prob_direction(tiny):
    before = dist(tiny, {10: 2.0, 11: 1.0}, prompt="before")
    after = dist(tiny, {10: 1.0, 11: 2.0}, prompt="after")
    A.assert_prob_increases(before, after, 11)
    A.assert_prob_decreases(before, after, 10)
    change = after.prob(10) - before.prob(10)
    with pytest.raises(LogitAssertionError) as err:
        A.assert_prob_increases(before, after, 10)
    assert err.value.verdict.startswith(
        f"p({tok(tiny, 10)!r}) did not rise: {before.prob(10):.4g} -> {after.prob(10):.4g} "
        f"(change {change:+.4g}; rank 1 -> 2)")
    assert "before: 'before'" in err.value.evidence and "top 5 after:" in err.value.evidence
    with pytest.raises(LogitAssertionError, match="did not fall by more than 0.5"):
        A.assert_prob_decreases(before, after, 10, by=0.5)


# -- greedy continuation (compared with a Hugging Face greedy loop) ----------------------
def hf_greedy(tiny_hf, prompt: str, n: int) -> list[int]:
    hf, hf_tok = tiny_hf
    ids = hf_tok(prompt).input_ids
    out: list[int] = []
    for _ in range(n):
        with torch.no_grad():
            out.append(int(hf(torch.tensor([ids + out])).logits[0, -1].argmax()))
    return out


def test_greedy_starts_with_matches_hf(tiny, tiny_hf):
    prompt = "I like oat milk in my"
    gen = hf_greedy(tiny_hf, prompt, 3)
    text = tiny.tokenizer.decode(gen)
    assert text
    A.assert_greedy_starts_with(tiny, prompt, text)
    hf, hf_tok = tiny_hf
    with torch.no_grad():
        logits = hf(torch.tensor([hf_tok(prompt).input_ids])).logits[0, -1]
    # The best-ranked other token whose text the greedy continuation does not start with.
    wrong = next(w for w in (hf_tok.decode([int(t)]) for t in logits.argsort(descending=True)[1:])
                 if w.strip() and "\ufffd" not in w and not text.startswith(w))
    with pytest.raises(LogitAssertionError) as err:
        A.assert_greedy_starts_with(tiny, prompt, wrong)
    assert f"which does not start with {wrong!r}" in err.value.verdict
    first_row = [line for line in err.value.evidence.splitlines() if line.startswith(">")][0]
    assert repr(tiny.vocab.decode_one(gen[0])) in first_row


def test_greedy_accepts_another_tokenization_of_the_text(tiny, tiny_hf):
    """Greedy tokens whose text re-tokenizes differently still pass (decided by decoding)."""
    found = []
    for prompt in ["The milk", ". milk", "The my", "I like", "The cat"]:
        gen = hf_greedy(tiny_hf, prompt, 4)
        for n in range(1, 5):
            text = tiny.tokenizer.decode(gen[:n])
            if text and "\ufffd" not in text and tiny.vocab.pieces(text) != gen[:n]:
                found.append((prompt, text))
                break
    assert found, "expected a prompt whose greedy tokens are not the text's own tokenization"
    prompt, text = found[0]
    score = A.assert_greedy_starts_with(tiny, prompt, text)
    assert not score.is_greedy  # teacher forcing alone would have failed it


def hf_verdict(tiny, tiny_hf, prompt: str, text: str) -> tuple[bool, int | None]:
    """Reference: (does HF greedy decoding start with text?, first step whose text leaves it).

    A plain Hugging Face loop without a cache, as many tokens as the assertion may
    decode (text's own tokens + 8), stopping at EOS.
    """
    hf, hf_tok = tiny_hf
    budget = len(tiny.vocab.pieces(text)) + 8
    out: list[int] = []
    for step in range(budget):
        with torch.no_grad():
            ids = hf_tok(prompt).input_ids + out
            out.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
        decoded = hf_tok.decode(out)
        if decoded.startswith(text):
            return True, None
        if not text.startswith(decoded) and not decoded.endswith("\ufffd"):
            return False, step
        if out[-1] == hf_tok.eos_token_id:
            return False, step
    return False, None


@pytest.mark.parametrize("prompt", ["I like oat milk in my", "The cat", ". milk", "The capital of"])
def test_greedy_verdict_matches_a_plain_hf_loop(tiny, tiny_hf, prompt):
    hf, hf_tok = tiny_hf
    gen = hf_greedy(tiny_hf, prompt, 4)
    with torch.no_grad():
        logits = hf(torch.tensor([hf_tok(prompt).input_ids + gen[:2]])).logits[0, -1]
    runner_up = int(logits.argsort(descending=True)[1])
    texts = [hf_tok.decode(gen[:2]), hf_tok.decode(gen),  # greedy prefixes
             hf_tok.decode(gen[:2] + [runner_up]),  # leaves the greedy path at step 2
             hf_tok.decode(gen[:1]) + " zebra quantum walrus"]
    for text in [t for t in texts if t and "\ufffd" not in t]:
        holds, step = hf_verdict(tiny, tiny_hf, prompt, text)
        if holds:
            A.assert_greedy_starts_with(tiny, prompt, text)
            continue
        with pytest.raises(LogitAssertionError) as err:
            A.assert_greedy_starts_with(tiny, prompt, text)
        marked = [line for line in err.value.evidence.splitlines() if line.startswith(">")]
        assert [int(line.split("|")[0][1:]) for line in marked] == ([step] if step is not None
                                                                    else [])


def test_greedy_stops_after_the_divergence_with_a_short_report(tiny, tiny_hf):
    """A long wanted text that leaves the greedy path early: few cached forwards, a short table."""
    prompt = "I like oat milk in my"
    gen = hf_greedy(tiny_hf, prompt, 3)
    text = tiny.tokenizer.decode(gen) + " coffee" * 60  # 60 more tokens, not all greedy ones
    holds, step = hf_verdict(tiny, tiny_hf, prompt, text)
    assert not holds and step is not None and step >= 3
    tiny.stats.reset()
    with pytest.raises(LogitAssertionError) as err:
        A.assert_greedy_starts_with(tiny, prompt, text)
    # score (1 forward) + prefill + one cached forward per step up to divergence + 3
    assert tiny.stats.forwards <= 1 + 1 + step + 3
    evidence = err.value.evidence
    assert f"matched: {tiny.tokenizer.decode(gen[:step])!r} ({step} greedy tokens" in evidence
    rows = [line for line in evidence.splitlines() if "|" in line and "step" not in line]
    assert len(rows) <= 1 + 2 + 1 + 3  # the elision line, 2 before, the divergence, 3 after
    assert any(line.startswith(f"> {step:>4} |") for line in rows)


# -- hints -------------------------------------------------------------------------------
def test_missing_leading_space_hint(tiny):
    spaced = tiny.vocab.token_id(" coffee")
    bare = tiny.vocab.pieces("coffee")
    assert len(bare) > 1  # "coffee" is several tokens in the tiny vocabulary
    nt = dist(tiny, {spaced: 9.0})
    with pytest.raises(LogitAssertionError) as err:
        A.assert_in_top(nt, "coffee", k=5)
    assert err.value.verdict.startswith(f"'coffee' is {len(bare)} tokens, so it cannot be")
    assert "did you mean ' coffee' (with a leading space)? It is rank 1" in err.value.hint
    assert f"'coffee' is {len(bare)} tokens" in err.value.hint


def test_single_token_spacing_hint(tiny):
    # A word that is one token both with and without its leading space.
    v = tiny.vocab
    word = next(w[1:] for w in map(v.decode_one, range(tiny.vocab_size))
                if w.startswith(" ") and len(w) > 2 and len(v.pieces(w[1:])) == 1
                and len(v.pieces(w)) == 1)
    spaced, bare = v.token_id(" " + word), v.token_id(word)
    nt = dist(tiny, {spaced: 9.0, bare: 1.0})
    with pytest.raises(LogitAssertionError) as err:
        A.assert_rank_at_most(nt, word, 1)
    assert f"did you mean {' ' + word!r} (with a leading space)? It is rank 1" in err.value.hint


# -- argument errors ---------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda nt: A.assert_in_top(nt, 10, k=0), "k=0: `k` must be between 1 and the vocabulary"),
    (lambda nt: A.assert_rank_at_most(nt, 10, 0), "rank=0: `rank` must be an int between 1"),
    (lambda nt: A.assert_prob_at_least(nt, 10, 1.5), "p=1.5: `p` must be a number between 0 and 1"),
    (lambda nt: A.assert_logprob_at_most(nt, 10, 0.5), "logprob=0.5: `logprob` must be a number"),
    (lambda nt: A.assert_entropy_at_most(nt, -1), "nats=-1: `nats` must be a number >= 0"),
    (lambda nt: A.assert_more_likely(nt, 10, 11, margin=-1), "margin=-1: `margin` must be a"),
    (lambda nt: A.assert_close(nt, nt), "kl=None, tv=None: give a bound"),
    (lambda nt: A.assert_in_top(nt.top(5), 10), "pass the NextToken itself"),
    (lambda nt: A.assert_in_top("a prompt", 10), "expected a NextToken from probe.next_token"),
    (lambda nt: A.assert_in_top(nt, ""), "the empty string is not a token"),
    (lambda nt: A.assert_in_top(nt, 10**6), "token ids must be between 0 and 999"),
    (lambda nt: A.assert_prob_increases(nt, nt, 10, by=2), "by=2: `by` must be a number between 0"),
])
def test_bad_arguments(ranked, call, message):
    with pytest.raises(InvalidArgument) as err:
        call(ranked)
    assert message in str(err.value)
    frames = []
    tb = err.value.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "wrapper"  # raised from the helper's (hidden) frame, no library frames
    assert err.value.__traceback__.tb_frame.f_code.co_name == "test_bad_arguments"


@pytest.mark.parametrize("check", [
    lambda nt, t: A.assert_not_in_top(nt, t, k=5),
    lambda nt, t: A.assert_rank_at_least(nt, t, 3),
    lambda nt, t: A.assert_prob_at_most(nt, t, 0.1),
    lambda nt, t: A.assert_prob_decreases(nt, nt, t),
])
def test_negative_checks_refuse_several_tokens(tiny, ranked, check):
    with pytest.raises(TokenError, match=r"token=' oat milk' is 2 tokens: \[' oat', ' milk'\], "
                                         r"so .* would pass whatever the model predicts"):
        check(ranked, " oat milk")


def test_failure_is_an_assertion_error(ranked):
    with pytest.raises(AssertionError):
        A.assert_argmax(ranked, 12)
    assert issubclass(LogitAssertionError, LogitProbeError)


def test_rank_in_report_matches_hf(tiny, tiny_hf):
    hf, hf_tok = tiny_hf
    prompt = "The capital of France is"
    with torch.no_grad():
        logits = hf(torch.tensor([hf_tok(prompt).input_ids])).logits[0, -1]
    tid = hf_tok(" Paris").input_ids[0]
    rank = int((logits > logits[tid]).sum()) + 1
    nt = tiny.next_token(prompt)
    assert A.assert_rank_at_most(nt, " Paris", rank).rank == rank
    if rank > 1:
        with pytest.raises(LogitAssertionError, match=rf"' Paris' has rank {rank} after"):
            A.assert_rank_at_most(nt, " Paris", rank - 1)
