"""``score`` splits context and continuation as lm-evaluation-harness 0.4 ``loglikelihood``
does (the default), or by the continuation's own tokens (``split="exact"``); bad
continuations are named errors (issue 11 item 6, issue 12)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitprobe import InvalidArgument, PromptError, TokenError

CASES = [  # (context, continuation): trailing space, two spaces, newline, newline + indent, none
    ("The capital of France is ", "Paris"),
    ("The capital of France is  ", "Paris"),
    ("Question: what is two plus two?\n", "Answer: four"),
    ("def f():\n    ", "return 1"),
    ("The capital of France is", " Paris, France"),
]


def harness_reference(model, tok, context, continuation):
    """lm-eval 0.4 ``_encode_pair`` + teacher forcing, written out with plain Hugging Face."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    ctx = tok(context).input_ids
    cont = tok(context + continuation).input_ids[len(ctx):]
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0].double()
    logprobs = logits - logits.logsumexp(-1, keepdim=True)
    return cont, [float(logprobs[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)]


def exact_reference(model, tok, context, continuation):
    ctx, cont = tok(context).input_ids, tok(continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0].double()
    logprobs = logits - logits.logsumexp(-1, keepdim=True)
    return cont, [float(logprobs[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)]


@pytest.mark.parametrize("which", ["tiny", "smol"])
@pytest.mark.parametrize("context, continuation", CASES)
def test_score_follows_the_harness_split_by_default(request, which, context, continuation):
    probe = request.getfixturevalue(which)
    model, tok = request.getfixturevalue(f"{which}_hf")
    ids, expected = harness_reference(model, tok, context, continuation)
    score = probe.score(context, continuation)
    assert [t.id for t in score.tokens] == ids
    assert score.logprobs == pytest.approx(expected, abs=1e-4)
    assert (score.prompt, score.continuation) == (context, continuation)
    ex_ids, ex_expected = exact_reference(model, tok, context, continuation)
    exact = probe.score(context, continuation, split="exact")
    assert [t.id for t in exact.tokens] == ex_ids
    assert exact.logprobs == pytest.approx(ex_expected, abs=1e-4)
    if context == context.rstrip() and ids == ex_ids:  # no whitespace to move: the rules agree
        assert exact.logprobs == pytest.approx(score.logprobs, abs=1e-6)
    if context != context.rstrip():  # the rules differ: the whitespace is scored elsewhere
        assert ids != ex_ids


def test_trailing_space_no_longer_scores_a_lone_space(smol):
    harness = smol.score("The capital of France is ", "Paris")
    exact = smol.score("The capital of France is ", "Paris", split="exact")
    assert [t.token for t in harness.tokens] == [" Paris"] and harness.is_greedy
    assert harness.logprob == pytest.approx(smol.next_token("The capital of France is")
                                            .logprob(" Paris"), abs=1e-5)
    assert exact.tokens[0].token == "Paris" and not exact.is_greedy
    assert exact.logprob < harness.logprob - 5


def test_batched_harness_split_equals_single(tiny):
    prompts = ["The cat sat ", "Logits\n", "I like oat milk in my"]
    conts = ["on the mat", "are raw", " coffee"]
    batched = tiny.score(prompts, conts)
    for p, c, s in zip(prompts, conts, batched):
        assert tiny.score(p, c).logprobs == pytest.approx(s.logprobs, abs=1e-4)


@pytest.mark.parametrize("split", ["harness", "exact"])
def test_a_continuation_of_zero_tokens_is_a_named_error(smol, split):
    with pytest.raises(InvalidArgument, match=r"continuation='\\x16': encodes to 0 tokens"):
        smol.score("Hi", "\x16", split=split)
    with pytest.raises(InvalidArgument, match=r"continuation\[1\]='\\x16': encodes to 0 tokens"):
        smol.score(["Hi", "Ho"], ["a", "\x16"], split=split)


def test_rank_of_a_zero_token_string_does_not_advise_score(smol):
    with pytest.raises(TokenError, match="encodes to 0 tokens") as info:
        smol.next_token("Hi").rank("\x16")
    assert "probe.score" not in str(info.value)


@pytest.mark.parametrize("continuation, fragment", [
    (None, "continuation=None: `continuation` must be a non-empty str"),
    (5, "continuation=5: `continuation` must be a non-empty str"),
    ("", "continuation='': `continuation` must be a non-empty str"),
    ([" a", 5], "continuation[1]=5: `continuation[1]` must be a non-empty str"),
    ([" a"] * 3, "continuation: got 3 continuations for 2 prompts"),
    (["x" * 5000, "y"], "prompt + continuation[0]='Hixxx"),
])
def test_bad_continuations_are_named_errors(tiny, continuation, fragment):
    prompts = ["Hi", "Ho"]
    with pytest.raises(InvalidArgument) as info:
        tiny.score(prompts, continuation)
    assert fragment in str(info.value)
    assert len(str(info.value)) < 400  # a long value is shown shortened


def test_split_is_validated_and_whitespace_only_prompt_explained(tiny):
    with pytest.raises(InvalidArgument, match="split='lm-eval': `split` must be 'harness'"):
        tiny.score("Hi", " there", split="lm-eval")
    with pytest.raises(PromptError, match="leaves no context.*split='exact'"):
        tiny.score("   ", "x")


WORDS = ["the", " cat", " sat", " on", " mat", " Paris", " coffee", "milk", " I", "like", " ",
         "  ", "\n", "\n    ", "\t", ".", ",", " dog"]
text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map("".join)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(context=text, continuation=text)
def test_property_harness_split_equals_hugging_face(tiny, tiny_hf, context, continuation):
    """Any context (whitespace-ended or not) and continuation: the harness rule, within 1e-4."""
    model, tok = tiny_hf
    try:
        score = tiny.score(context, continuation)
    except (InvalidArgument, PromptError) as exc:  # only for text that leaves nothing to score
        assert "no context" in str(exc) or "adds no token" in str(exc), exc
        return
    ids, expected = harness_reference(model, tok, context, continuation)
    assert [t.id for t in score.tokens] == ids
    assert score.logprobs == pytest.approx(expected, abs=1e-4)
