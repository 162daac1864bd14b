"""Warpers: parity with Hugging Face's logits processors, invariants, errors, seeded sampling.

Parity is exact: the same masked entries (-inf) and bit-identical kept values, on
random logits that include exact ties, -inf entries, peaked and uniform rows, and
boundary parameters (top_p=1.0, top_k >= vocab, top_k=1, min_p=0, min_p=1).
"""

from __future__ import annotations

import doctest
import math
import re
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig
from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)
from transformers.generation.utils import GenerationMixin

import logitprobe.warpers as warpers_module
from logitprobe.errors import InvalidArgument
from logitprobe.warpers import (Chain, Greedy, MinP, Temperature, TopKWarper, TopP, Warper,
                                build_warpers, probabilities, sample_from)

FAST = settings(max_examples=100, deadline=None, database=None)
FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
KINDS = ("drawn", "normal", "ties", "peaked", "uniform", "wide", "masked")


# -- helpers ------------------------------------------------------------------------------
@st.composite
def logits(draw, dtypes=FLOATS):
    """Float logits shaped [vocab] or [batch, vocab], of one of several kinds."""
    batch = draw(st.none() | st.integers(1, 4))  # None: 1-D
    vocab = draw(st.integers(1, 24))
    shape = (vocab,) if batch is None else (batch, vocab)
    kind = draw(st.sampled_from(KINDS))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    if kind == "drawn":  # values chosen (and shrunk) by Hypothesis, with plenty of repeats
        value = st.floats(-60, 60, width=32) | st.sampled_from([0.0, 1.0, -1.0, 2.5])
        x = torch.tensor(draw(st.lists(value, min_size=math.prod(shape),
                                       max_size=math.prod(shape)))).reshape(shape)
    elif kind == "normal":
        x = torch.randn(shape, generator=g)
    elif kind == "ties":  # many exact ties, also at the top-k / top-p / min-p boundaries
        x = torch.randint(0, 4, shape, generator=g).float()
    elif kind == "peaked":  # one token holds almost all the mass
        x = torch.randn(shape, generator=g)
        x[..., int(torch.randint(0, vocab, (1,), generator=g))] += 40.0
    elif kind == "uniform":
        x = torch.full(shape, float(torch.randn(1, generator=g)))
    elif kind == "wide":  # probabilities that underflow to 0
        x = torch.randn(shape, generator=g) * 80.0
    else:  # "masked": already filtered by an earlier warper; each row keeps its argmax
        x = torch.randn(shape, generator=g)
        drop = (torch.rand(shape, generator=g) < 0.5) & (x < x.amax(-1, keepdim=True))
        x = x.masked_fill(drop, -math.inf)
    return x.to(draw(st.sampled_from(dtypes)))


def hf(processor, x: torch.Tensor) -> torch.Tensor:
    """Run an HF processor; HF works on [batch, vocab], so 1-D means a batch of one."""
    return processor(None, x.reshape(-1, x.shape[-1])).reshape(x.shape)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert torch.equal(ours.isneginf(), theirs.isneginf()), (
        f"filtered masks differ:\n ours={ours.isneginf()}\n  HF ={theirs.isneginf()}")
    assert torch.equal(ours.isnan(), theirs.isnan())
    no_nan = {"nan": 0.0, "posinf": math.inf, "neginf": -math.inf}
    assert torch.equal(ours.nan_to_num(**no_nan), theirs.nan_to_num(**no_nan)), (
        f"kept values differ:\n ours={ours}\n  HF ={theirs}")


class _HFGenerate:
    """Just enough of a model for HF's own ``GenerationMixin._get_logits_processor``."""

    config = types.SimpleNamespace(is_encoder_decoder=False)
    _merge_criteria_processor_list = GenerationMixin._merge_criteria_processor_list
    _get_logits_processor = GenerationMixin._get_logits_processor


def hf_generate_processors(**kw):
    config = GenerationConfig(do_sample=True, **kw)
    return _HFGenerate()._get_logits_processor(config)


# -- parity with each HF processor --------------------------------------------------------
@FAST
@given(x=logits(), t=st.floats(1e-3, 100) | st.sampled_from([1e-3, 0.5, 1.0, 2.0]))
def test_temperature_matches_hf(x, t):
    assert_same(Temperature(t)(x), hf(TemperatureLogitsWarper(t), x))


@FAST
@given(x=logits(), data=st.data())
def test_top_k_matches_hf(x, data):
    vocab = x.shape[-1]
    k = data.draw(st.sampled_from([1, vocab, vocab + 1]) | st.integers(1, vocab + 3), label="k")
    assert_same(TopKWarper(k)(x), hf(TopKLogitsWarper(k), x))


@FAST
@given(x=logits(), p=st.floats(0, 1, exclude_min=True) | st.sampled_from([1.0, 1e-9, 0.999999]))
def test_top_p_matches_hf(x, p):
    assert_same(TopP(p)(x), hf(TopPLogitsWarper(p), x))


@FAST
@given(x=logits(), p=st.floats(0, 1) | st.sampled_from([0.0, 1.0, 1e-9, 0.5]))
def test_min_p_matches_hf(x, p):
    assert_same(MinP(p)(x), hf(MinPLogitsWarper(p), x))


@FAST
@given(x=logits())
def test_greedy_keeps_torch_argmax_as_hf_greedy_decoding_picks(x):
    out = Greedy()(x)
    rows, kept = x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1])
    best = rows.argmax(-1)  # HF's greedy step: torch.argmax of the scores
    assert torch.equal((~kept.isneginf()).sum(-1), torch.ones(len(rows), dtype=torch.long))
    assert torch.equal(kept.argmax(-1), best)
    assert torch.equal(kept.gather(-1, best[:, None]), rows.gather(-1, best[:, None]))


# -- build_warpers: HF generate's selection and order --------------------------------------
@FAST
@given(x=logits(dtypes=(torch.float32,)),
       temperature=st.none() | st.sampled_from([1.0, 0.3, 2.0]) | st.floats(0.05, 5),
       top_k=st.none() | st.integers(1, 30),
       top_p=st.none() | st.sampled_from([1.0, 0.5]) | st.floats(0.01, 1),
       min_p=st.none() | st.sampled_from([0.0, 1.0]) | st.floats(0, 1))
def test_build_warpers_matches_hf_generate_processor_list(x, temperature, top_k, top_p, min_p):
    ours = build_warpers(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    theirs = hf_generate_processors(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    assert_same(ours(x), hf(theirs, x))
    # Same warpers in the same order; HF also keeps MinP(0.0), a no-op we leave out.
    names = {Temperature: "Temperature", TopKWarper: "TopK", TopP: "TopP", MinP: "MinP"}
    assert [names[type(w)] for w in ours.warpers] == [
        type(p).__name__.removesuffix("LogitsWarper") for p in theirs
        if not (isinstance(p, MinPLogitsWarper) and p.min_p == 0.0)]


def test_build_warpers_order_and_no_ops():
    chain = build_warpers(min_p=0.1, top_p=0.9, top_k=5, temperature=0.7)
    assert repr(chain) == "Chain(Temperature(t=0.7), TopKWarper(k=5), TopP(p=0.9), MinP(p=0.1))"
    assert build_warpers() == Chain()
    assert build_warpers(temperature=1.0, top_p=1.0, min_p=0.0) == Chain()
    assert build_warpers(temperature=None) == Chain()


def test_build_warpers_without_sampling_is_greedy():
    assert build_warpers(do_sample=False) == Chain(Greedy())
    assert build_warpers(temperature=0.5, top_k=3, do_sample=False) == Chain(Greedy())


# -- invariants on tiny handmade tensors ---------------------------------------------------
ALL = [Temperature(0.5), TopKWarper(2), TopP(0.5), MinP(0.5), Greedy(), Chain(),
       Chain(Temperature(2.0), TopKWarper(3), TopP(0.9), MinP(0.2), Greedy())]


@pytest.mark.parametrize("t", [1e-3, 0.5, 1.0, 7.0])
@pytest.mark.parametrize("level", [0.0, -3.0, 12.5])
def test_uniform_stays_uniform_under_temperature(t, level):
    probs = probabilities(torch.full((2, 5), level), [Temperature(t)])
    torch.testing.assert_close(probs, torch.full((2, 5), 0.2))


@pytest.mark.parametrize("warper", ALL, ids=repr)
@pytest.mark.parametrize("shape", [(6,), (2, 6), (2, 1, 6)])
def test_input_not_modified_and_output_is_new(warper, shape):
    row = torch.tensor([1.0, 3.0, 3.0, -math.inf, 0.5, 2.0])
    x = row.repeat(math.prod(shape) // 6).reshape(shape)
    before = x.clone()
    out = warper(x)
    assert torch.equal(x, before)
    assert out.shape == x.shape and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("warper", ALL[:5], ids=repr)
def test_3d_logits_are_warped_row_by_row(warper):
    x = torch.randint(0, 4, (2, 3, 7), generator=torch.Generator().manual_seed(0)).float()
    assert torch.equal(warper(x), warper(x.reshape(6, 7)).reshape(2, 3, 7))


def test_greedy_keeps_exactly_one_token_the_first_of_tied_maxima():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -math.inf, -0.5]])
    out = Greedy()(x)
    assert (~out.isneginf()).sum(-1).tolist() == [1, 1, 1]
    assert out.argmax(-1).tolist() == [1, 0, 3]
    assert probabilities(x, Greedy()).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]


def test_greedy_is_the_low_temperature_limit():
    x = torch.tensor([1.0, 3.0, 2.0])
    torch.testing.assert_close(probabilities(x, [Temperature(0.01)]), probabilities(x, [Greedy()]))


def test_empty_chain_is_identity():
    x = torch.tensor([[0.5, -math.inf, 2.0]])
    assert torch.equal(Chain()(x), x)
    assert torch.equal(probabilities(x, Chain()), x.softmax(-1))


def test_boundaries_keep_what_hf_keeps():
    x = torch.tensor([2.0, 1.0, 1.0, 0.0, 2.0])
    assert torch.equal(TopP(1.0)(x), x)
    assert torch.equal(MinP(0.0)(x), x)
    assert torch.equal(TopKWarper(5)(x), x) and torch.equal(TopKWarper(50)(x), x)
    # ties at the k-th logit are kept
    assert (~TopKWarper(1)(x).isneginf()).tolist() == [True, False, False, False, True]
    assert (~TopKWarper(2)(x).isneginf()).tolist() == [True, False, False, False, True]
    assert (~TopKWarper(3)(x).isneginf()).tolist() == [True, True, True, False, True]
    assert (~MinP(1.0)(x).isneginf()).tolist() == [True, False, False, False, True]


def test_chain_applies_in_order():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert torch.equal(Chain(TopKWarper(2), Temperature(2.0))(x),
                       Temperature(2.0)(TopKWarper(2)(x)))
    assert torch.equal(Chain(Chain(TopKWarper(3)), Greedy())(x), Greedy()(TopKWarper(3)(x)))


def test_reprs_and_equality():
    assert repr(TopKWarper(5)) == "TopKWarper(k=5)"
    assert repr(Temperature(0.7)) == "Temperature(t=0.7)"
    assert repr(TopP(0.9)) == "TopP(p=0.9)" and repr(MinP(0.1)) == "MinP(p=0.1)"
    assert repr(Chain(TopKWarper(5), Greedy())) == "Chain(TopKWarper(k=5), Greedy())"
    assert repr(Chain()) == "Chain()" and repr(Greedy()) == "Greedy()"
    assert TopKWarper(5) == TopKWarper(5) and TopKWarper(5) != TopKWarper(4)
    assert TopP(0.5) != MinP(0.5)
    assert isinstance(Chain(), Warper) and Temperature(2) == Temperature(2.0)


def test_probabilities_are_float32_and_sum_to_one():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, -math.inf]], dtype=torch.bfloat16)
    probs = probabilities(x, TopKWarper(2))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    assert probs[0, 0] == 0 and probs[1, 2] == 0


# -- errors that teach ---------------------------------------------------------------------
INT_LOGITS = torch.tensor([1, 2, 3])
BAD = [
    (lambda: Temperature(0.0), "t", 0.0), (lambda: Temperature(-1.0), "t", -1.0),
    (lambda: Temperature(math.nan), "t", math.nan), (lambda: Temperature(math.inf), "t", math.inf),
    (lambda: Temperature("0.7"), "t", "0.7"), (lambda: Temperature(True), "t", True),
    (lambda: TopKWarper(0), "k", 0), (lambda: TopKWarper(-2), "k", -2),
    (lambda: TopKWarper(2.0), "k", 2.0),
    (lambda: TopKWarper(True), "k", True), (lambda: TopKWarper(None), "k", None),
    (lambda: TopP(0.0), "p", 0.0), (lambda: TopP(1.5), "p", 1.5), (lambda: TopP(-0.1), "p", -0.1),
    (lambda: TopP("0.9"), "p", "0.9"), (lambda: TopP(math.nan), "p", math.nan),
    (lambda: MinP(-0.01), "p", -0.01), (lambda: MinP(1.01), "p", 1.01),
    (lambda: MinP(math.nan), "p", math.nan), (lambda: MinP(None), "p", None),
    (lambda: build_warpers(temperature=0), "temperature", 0),
    (lambda: build_warpers(top_k=0), "top_k", 0), (lambda: build_warpers(top_k=3.5), "top_k", 3.5),
    (lambda: build_warpers(top_p=0.0), "top_p", 0.0), (lambda: build_warpers(min_p=2), "min_p", 2),
    (lambda: build_warpers(top_k=0, do_sample=False), "top_k", 0),
    (lambda: build_warpers(do_sample="yes"), "do_sample", "yes"),
    (lambda: Chain(TopKWarper), "warpers[0]", TopKWarper),
    (lambda: Chain(Greedy(), 5), "warpers[1]", 5),
    (lambda: sample_from(torch.zeros(1, 3), torch.Generator(), n=0), "n", 0),
    (lambda: sample_from(torch.zeros(1, 3), None), "generator", None),
    (lambda: sample_from(torch.zeros(1, 3), 0), "generator", 0),
]


@pytest.mark.parametrize("call, name, value", BAD, ids=lambda v: v if isinstance(v, str) else None)
def test_invalid_arguments_name_the_parameter_and_show_the_value(call, name, value):
    with pytest.raises(InvalidArgument, match=re.escape(f"{name}={value!r}: ")) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert any(fix in str(info.value) for fix in ("(try ", "e.g.", "True or False"))


@pytest.mark.parametrize("bad, shown", [
    (INT_LOGITS, "<tensor shape=(3,) dtype=torch.int64>"),
    (torch.tensor(1.0), "<tensor shape=() dtype=torch.float32>"),
    (torch.zeros(2, 0), "<tensor shape=(2, 0) dtype=torch.float32>"),
    ([1.0, 2.0], "[1.0, 2.0]"),
])
@pytest.mark.parametrize("warper", ALL[:6], ids=repr)
def test_bad_logits_are_explained(warper, bad, shown):
    expected = re.escape(f"logits={shown}: `logits` must be a float tensor")
    with pytest.raises(InvalidArgument, match=expected):
        warper(bad)


def test_sample_from_explains_bad_logits():
    with pytest.raises(InvalidArgument, match=re.escape("logits_2d=<tensor shape=(1, 2, 3)")):
        sample_from(torch.zeros(1, 2, 3), torch.Generator())
    with pytest.raises(InvalidArgument, match="no finite logit"):
        sample_from(torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]), torch.Generator())


# -- seeded sampling -----------------------------------------------------------------------
def test_sample_from_is_reproducible_and_leaves_global_rng_alone():
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    a = sample_from(x, torch.Generator().manual_seed(7), n=20)
    b = sample_from(x, torch.Generator().manual_seed(7), n=20)
    c = sample_from(x, torch.Generator().manual_seed(8), n=20)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.dtype == torch.long and a.shape == (3, 20)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_from(x[0], torch.Generator().manual_seed(7), n=4).shape == (4,)


def test_sample_from_draws_only_kept_tokens_at_their_probabilities():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    warped = Chain(TopKWarper(2))(x)
    draws = sample_from(warped, torch.Generator().manual_seed(0), n=20_000)[0]
    assert set(draws.tolist()) == {2, 3}
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, probabilities(x, TopKWarper(2))[0], atol=0.015, rtol=0)


def test_docstring_examples_run():
    result = doctest.testmod(warpers_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 9 and result.failed == 0
