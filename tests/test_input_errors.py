"""Hostile inputs get named errors: lone surrogates, non-id decodes, bool k, bad metrics, huge n."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitprobe import InvalidArgument, PromptError, TokenError
from logitprobe import assertions as A
from logitprobe.budget import DEFAULT_MAX_CALL_BYTES, generation_bytes, sample_bytes

SURROGATE = "a\ud800"


# -- lone surrogates ---------------------------------------------------------------------
@pytest.mark.parametrize("call, error, name", [
    (lambda p: p.next_token(SURROGATE), PromptError, "prompt"),
    (lambda p: p.next_token(["ok", SURROGATE]), PromptError, "prompt"),
    (lambda p: p.encode(SURROGATE), PromptError, "text"),
    (lambda p: p.tokenize(SURROGATE), PromptError, "text"),
    (lambda p: p.generate(SURROGATE, max_new_tokens=1), PromptError, "prompt"),
    (lambda p: p.token_id(SURROGATE), TokenError, "token"),
    (lambda p: p.next_token("I like").rank(SURROGATE), TokenError, "token"),
    (lambda p: A.assert_in_top(p.next_token("I like"), SURROGATE, k=5), TokenError, "token"),
    (lambda p: p.patch_sweep(SURROGATE, "a b", [" milk", " coffee"]), PromptError, "clean"),
])
def test_lone_surrogate_is_a_named_error(tiny, call, error, name):
    with pytest.raises(error) as err:
        call(tiny)
    msg = str(err.value)
    assert msg.startswith(f"{name}=")
    assert "lone surrogate '\\ud800' at index 1" in msg and "errors='replace'" in msg


def test_surrogate_pairs_and_other_unicode_still_work(tiny, tiny_hf):
    _, tok = tiny_hf
    text = "caf\u00e9 \U0001F600"  # an astral character: one code point, no surrogates in Python
    assert tiny.encode(text) == tok(text).input_ids


# -- decode ------------------------------------------------------------------------------
@pytest.mark.parametrize("ids, pattern", [
    (["a"], r"ids\[0\]='a': token ids must be ints, not str"),
    ([1.5], r"ids\[0\]=1.5: token ids must be ints, not float"),
    ([3, True], r"ids\[1\]=True: token ids must be ints, not bool"),
    (True, r"ids=True: `ids` must be an int id or a sequence of int ids"),
    (None, r"ids=None: .* not NoneType"),
    ("abc", r"ids='abc': `ids` must be token ids \(ints\), not text; probe.encode\(text\)"),
    (torch.tensor([1.5, 2.0]), r"ids\[0\]=1.5: token ids must be ints, not float"),
    ([5, 1000], r"ids\[1\]=1000: token ids must be between 0 and 999"),
    ([-1], r"ids\[0\]=-1: token ids must be between 0 and 999"),
])
def test_decode_refuses_what_is_not_an_id(tiny, ids, pattern):
    with pytest.raises(TokenError, match=pattern):
        tiny.decode(ids)


def test_decode_accepts_int_like_ids(tiny, tiny_hf):
    _, tok = tiny_hf
    ids = tok("I like oat milk").input_ids
    expected = tok.decode(ids)
    assert tiny.decode(ids) == expected
    assert tiny.decode(tuple(ids)) == expected
    assert tiny.decode(np.array(ids)) == expected
    assert tiny.decode([np.int64(i) for i in ids]) == expected
    assert tiny.decode(torch.tensor(ids)) == expected
    assert tiny.decode(ids[0]) == tok.decode([ids[0]])
    assert tiny.decode([]) == ""


# -- k -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [True, False, 2.0, "5", None])
def test_top_k_must_be_a_real_int(tiny, k):
    nt = tiny.next_token("I like")
    with pytest.raises(InvalidArgument, match=rf"^k={k!r}: `k` must be an int between 1 and 1000"):
        nt.top(k=k)


def test_top_k_accepts_int_likes(tiny):
    nt = tiny.next_token("I like")
    assert nt.top(np.int64(3)) == nt.top(3)


# -- patch-sweep metrics -----------------------------------------------------------------
def vector(logits):
    return logits[:3]


def text(logits):
    return "high"


def nothing(logits):
    return None


@pytest.mark.parametrize("metric, shown", [
    (vector, "a tensor of shape (3,)"),
    (text, "str 'high'"),
    (nothing, "NoneType None"),
])
def test_patch_metric_must_return_one_number(tiny, metric, shown):
    with pytest.raises(InvalidArgument) as err:
        tiny.patch_sweep("I like oat", "I like tea", metric=metric)
    assert str(err.value).startswith(f"metric={metric.__name__}: returned {shown}; a "
                                     "patch-sweep metric must return one number")


def test_patch_metric_may_return_a_one_element_tensor_or_float(tiny):
    a, b = tiny.token_id(" milk"), tiny.token_id(" coffee")
    as_tensor = tiny.patch_sweep("I like oat", "I like tea", metric=lambda lg: lg[a:a + 1] - lg[b])
    as_float = tiny.patch_sweep("I like oat", "I like tea",
                                metric=lambda lg: float(lg[a] - lg[b]))
    torch.testing.assert_close(as_tensor.values, as_float.values)


# -- memory guards -----------------------------------------------------------------------
HUGE = [
    (lambda p: p.sample("I like", n=10**12), "drawing 1,000,000,000,000 samples"),
    (lambda p: p.sample(["I like", "The"], n=10**12),
     "drawing 1,000,000,000,000 samples for each of 2 prompts"),
    (lambda p: p.sample_frequencies("I like", n=10**12), "drawing 1,000,000,000,000 samples"),
    (lambda p: p.generate("I like", n=10**9), "generating 20 tokens for 1,000,000,000 rows"),
    (lambda p: p.generate(["I like", "The"], n=10**9, do_sample=True),
     "generating 20 tokens for 2,000,000,000 rows (2 prompts x n=1,000,000,000)"),
]


@pytest.mark.parametrize("call, what", HUGE)
def test_huge_calls_are_refused_before_any_work(tiny, call, what):
    forwards = tiny.stats.forwards
    with pytest.raises(InvalidArgument) as err:
        call(tiny)
    msg = str(err.value)
    assert msg.startswith("n=")
    assert what in msg
    assert "more than this probe's limit of 8.0 GiB (probe.max_call_bytes)" in msg
    assert "split the work into calls of at most n=" in msg
    assert tiny.stats.forwards == forwards  # refused before the model ran


def test_the_suggested_split_fits_and_runs(tiny, monkeypatch):
    limit = 2**20
    monkeypatch.setattr(tiny, "max_call_bytes", limit)
    with pytest.raises(InvalidArgument) as err:
        tiny.sample("I like", n=10**6, seed=0)
    most = int(str(err.value).split("at most n=")[1].split()[0].replace(",", ""))
    assert sample_bytes(most) <= limit < sample_bytes(most + 1)
    assert len(tiny.sample("I like", n=most, seed=0)) == most

    with pytest.raises(InvalidArgument) as err:
        tiny.generate("I like", n=10**4, max_new_tokens=2)
    most = int(str(err.value).split("at most n=")[1].split()[0].replace(",", ""))
    need = generation_bytes(tiny.backend.cfg, rows=most, prompt_tokens=len(tiny.encode("I like")),
                            new_tokens=2, vocab_size=tiny.vocab_size)
    assert need <= limit
    assert len(tiny.generate("I like", n=most, max_new_tokens=2)) == most


def test_when_not_even_one_row_fits(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "max_call_bytes", 1000)
    with pytest.raises(InvalidArgument, match=r"even n=1 does not fit with 1 prompt and "
                                              r"max_new_tokens=5; pass fewer prompts"):
        tiny.generate("I like", max_new_tokens=5)


def test_raising_the_limit_lets_a_call_through(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "max_call_bytes", 1000)
    with pytest.raises(InvalidArgument):
        tiny.sample("I like", n=100, seed=0)
    tiny.max_call_bytes = 10**6
    assert len(tiny.sample("I like", n=100, seed=0)) == 100
    assert tiny.max_call_bytes == 10**6


@pytest.mark.parametrize("bad", [0, -5, True, 1.5, "8GiB", None])
def test_max_call_bytes_must_be_a_positive_int(tiny, bad):
    with pytest.raises(InvalidArgument, match=r"max_call_bytes=.*: `max_call_bytes` must be a "
                                              r"positive int of bytes"):
        tiny.max_call_bytes = bad
    assert tiny.max_call_bytes == DEFAULT_MAX_CALL_BYTES
