"""Fuzzing the public entry points: whatever a caller passes, only documented errors escape.

Every strategy is bounded (short texts, at most a few prompts, rows and new
tokens; huge numbers only where a check or the memory guard refuses them before
any work), so no example allocates much and each runs in milliseconds on the
tiny GPT-2.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitprobe import LogitProbeError
from logitprobe import assertions as A
from logitprobe.interventions import SetLogit
from logitprobe.interventions.serialize import coerce
from logitprobe.interventions.specs import SPEC_TYPES

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

surrogates = st.sampled_from(["a\ud800", "\udcff", "x\udfffy"])
texts = st.one_of(st.text(max_size=12), surrogates, st.just("word " * 200))  # > n_ctx tokens
numbers = st.one_of(st.integers(-3, 5), st.sampled_from([0, -1, 10**9, 10**12, 2**64]),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())
junk = st.one_of(numbers, st.text(max_size=6), surrogates, st.binary(max_size=4),
                 st.lists(st.integers(-2, 1200), max_size=3), st.just(object()),
                 st.just(torch.tensor([1.5])), st.just(SetLogit(" milk", to=0.0)))
prompts = st.one_of(texts, st.lists(texts, max_size=3), junk)
tokens = st.one_of(st.text(max_size=6), surrogates, st.integers(-5, 1200), junk)
ids = st.one_of(st.lists(st.one_of(st.integers(-5, 1200), junk), max_size=4), junk, texts)


def documented_only(call) -> None:
    """Run ``call``; a LogitProbeError is fine, any other exception fails the test."""
    try:
        call()
    except LogitProbeError:
        pass


@FUZZ
@given(prompt=prompts, position=numbers)
def test_next_token(tiny, prompt, position):
    documented_only(lambda: tiny.next_token(prompt, position=position))


@FUZZ
@given(prompt=st.sampled_from(["I like", "The"]), token=tokens, k=numbers)
def test_token_queries(tiny, prompt, token, k):
    nt = tiny.next_token(prompt)
    documented_only(lambda: tiny.token_id(token))
    documented_only(lambda: nt.rank(token))
    documented_only(lambda: nt.prob(token))
    documented_only(lambda: nt.top(k))
    documented_only(lambda: A.assert_in_top(nt, token, k=k))
    documented_only(lambda: A.assert_rank_at_most(nt, token, k))


@FUZZ
@given(value=ids, text=texts)
def test_decode_encode_tokenize(tiny, value, text):
    documented_only(lambda: tiny.decode(value))
    documented_only(lambda: tiny.encode(text))
    documented_only(lambda: tiny.tokenize(text))


@FUZZ
@given(prompt=prompts, n=numbers, max_new_tokens=numbers, temperature=numbers,
       top_k=numbers, top_p=numbers, do_sample=st.one_of(st.booleans(), junk), seed=numbers)
def test_generate(tiny, prompt, n, max_new_tokens, temperature, top_k, top_p, do_sample, seed):
    if isinstance(n, int) and not isinstance(n, bool) and 3 < n < 10**9:
        n = 3  # a few rows, or a number the memory guard refuses
    if isinstance(max_new_tokens, int) and 3 < max_new_tokens < 10**9:
        max_new_tokens = 3
    documented_only(lambda: tiny.generate(prompt, n=n, max_new_tokens=max_new_tokens,
                                          temperature=temperature, top_k=top_k, top_p=top_p,
                                          do_sample=do_sample, seed=seed))


@FUZZ
@given(prompt=prompts, n=numbers, temperature=numbers, top_k=numbers, top_p=numbers,
       min_p=numbers, seed=numbers)
def test_sample(tiny, prompt, n, temperature, top_k, top_p, min_p, seed):
    documented_only(lambda: tiny.sample(prompt, n=n, temperature=temperature, top_k=top_k,
                                        top_p=top_p, min_p=min_p, seed=seed))
    if isinstance(prompt, str):
        documented_only(lambda: tiny.sample_frequencies(prompt, n=n, seed=seed))


@FUZZ
@given(prompt=prompts)
def test_score_prompts(tiny, prompt):
    documented_only(lambda: tiny.score(prompt, " milk"))


@FUZZ
@given(continuation=st.one_of(junk, texts, st.lists(texts, max_size=3)),
       split=st.sampled_from(["harness", "exact", "bogus", None]))
def test_score_continuations(tiny, continuation, split):
    documented_only(lambda: tiny.score("I like oat", continuation, split=split))


field_values = st.one_of(junk, texts, st.sampled_from(
    ["blocks.0.hook_resid_pre", "blocks.9.hook_resid_pre", "hook_embed", "max+10", "max+",
     "all", "last", [0, 1], [-1], (0,), [1.0, 2.0], "I like"]))


def spec_dicts():
    kinds = st.sampled_from(sorted(SPEC_TYPES) + ["set_logits", "", 3])
    names = st.sampled_from(["token", "to", "amount", "factor", "tokens", "positions", "hook",
                             "heads", "neurons", "reference", "coefficient", "vector",
                             "positive", "negative", "bogus"])
    return st.builds(lambda kind, fields: {"kind": kind, **fields}, kinds,
                     st.dictionaries(names, field_values, max_size=4))


@FUZZ
@given(spec=st.one_of(spec_dicts(), st.lists(spec_dicts(), max_size=2), junk))
def test_spec_dicts(tiny, spec):
    documented_only(lambda: coerce(spec))
    documented_only(lambda: tiny.next_token("I like oat milk", interventions=spec))



@FUZZ
@given(prompt=prompts, token=tokens, k=numbers, position=numbers)
def test_lens_and_attribution(tiny, prompt, token, k, position):
    documented_only(lambda: tiny.lens(prompt, [token], k=k, position=position))
    documented_only(lambda: tiny.attribute(prompt, token, position=position))


@FUZZ
@given(clean=prompts, tokens=st.one_of(st.lists(tokens, max_size=3), junk),
       activation=st.one_of(st.sampled_from(["resid_pre", "z", "mlp_out", "resid"]), junk),
       per_position=st.one_of(st.booleans(), junk))
def test_patch_sweep(tiny, clean, tokens, activation, per_position):
    documented_only(lambda: tiny.patch_sweep(clean, "I like tea", tokens, activation=activation,
                                             per_position=per_position))
