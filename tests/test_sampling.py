"""Sampling: counter-based seeds, sampled frequencies vs the warped softmax, and the statistics.

False-alarm rate of the goodness-of-fit tests here: each rejects a correct sampler
with probability 1e-3 (chi-square at p < 1e-3); the seeds are fixed, so a pass is
reproducible, and each test also shows the same check rejecting a wrong distribution.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe.errors import EmptyDistributionError, InvalidArgument
from logitprobe.rng import _GOLDEN, draw, mix64, row_keys, stream_base, uniforms
from logitprobe.sampling_stats import (binomial_interval, chi_square_test, frequency_check,
                                       gammaincc)
from logitprobe.warpers import _probabilities, build_warpers, probabilities

FALSE_ALARM = 1e-3
PROMPT = "The cat sat on the"


# -- the random numbers ---------------------------------------------------------------
def test_tensor_splitmix_matches_python_integers():
    # int64 tensor arithmetic must wrap exactly like unbounded ints modulo 2**64.
    for seed in (0, 1, 2**63 + 5, 2**64 - 1, 123456789):
        base = stream_base(seed, PROMPT)
        keys = row_keys(base, torch.arange(7))
        for t in (0, 1, 99):
            got = uniforms(keys, t).tolist()
            want = []
            for i in range(7):
                key = mix64(base + (i + 1) * _GOLDEN)
                want.append((mix64(key + (t + 1) * _GOLDEN) >> 11) / 2**53)
            assert got == want


def test_uniforms_are_uniform():
    u = uniforms(row_keys(stream_base(7, "x"), torch.arange(100_000)), 3)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    counts = torch.histc(u.float(), bins=20, min=0.0, max=1.0)
    assert not chi_square_test(counts.long().tolist(), [1 / 20] * 20).rejects(FALSE_ALARM)
    # consecutive steps of one row are not correlated
    a = uniforms(row_keys(stream_base(7, "x"), torch.arange(100_000)), 4)
    assert abs(float(torch.corrcoef(torch.stack([u, a]))[0, 1])) < 0.02


def test_draw_never_picks_zero_probability_and_respects_boundaries():
    probs = torch.tensor([0.0, 0.25, 0.0, 0.75, 0.0])
    u = torch.tensor([0.0, 0.2499999, 0.25, 0.9999999999, 1 - 2**-53])
    assert draw(probs, u).tolist() == [1, 1, 3, 3, 3]
    # the batched form (one uniform per row) agrees with the one-CDF form
    assert draw(probs.expand(5, -1), u).tolist() == [1, 1, 3, 3, 3]
    # unnormalized rows are fine
    assert draw(probs * 7, u).tolist() == [1, 1, 3, 3, 3]


# -- special functions and intervals ---------------------------------------------------
@pytest.mark.parametrize("a, x", [(0.5, 0.1), (3, 10), (12.5, 9.0), (50, 60), (0.5, 30),
                                  (200, 180)])
def test_gammaincc_matches_torch(a, x):
    ref = torch.special.gammaincc(torch.tensor(a, dtype=torch.float64),
                                  torch.tensor(x, dtype=torch.float64)).item()
    assert gammaincc(a, x) == pytest.approx(ref, rel=1e-8, abs=1e-300)


def _upper_tail(k: int, n: int, p: float) -> float:  # P(X >= k), X ~ Binomial(n, p)
    return math.fsum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (3, 10), (10, 10), (30, 100), (97, 100)])
def test_clopper_pearson_bounds_solve_the_binomial_tail_equations(k, n):
    low, high = binomial_interval(k, n, confidence=0.95, method="exact")
    if k == 0:
        assert low == 0.0
    else:  # P(X >= k | low) = 2.5%
        assert _upper_tail(k, n, low) == pytest.approx(0.025, rel=1e-6)
    if k == n:
        assert high == 1.0
    else:  # P(X <= k | high) = 2.5%
        assert 1 - _upper_tail(k + 1, n, high) == pytest.approx(0.025, rel=1e-6)


@pytest.mark.parametrize("k, n", [(0, 20), (7, 20), (30, 100), (999, 1000)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    low, high = binomial_interval(k, n, confidence=0.9, method="wilson")
    z = 1.6448536269514722  # the 95% normal quantile (two-sided 90%)
    for p in (low, high):
        if 0.0 < p < 1.0:
            assert abs(k / n - p) == pytest.approx(z * math.sqrt(p * (1 - p) / n), rel=1e-9)


@pytest.mark.parametrize("n", [10, 60, 250])
def test_exact_check_false_failure_rate_is_at_most_one_minus_confidence(n):
    """The documented guarantee, by exact summation over every possible count."""
    confidence = 0.9
    highs, lows = [], []
    for k in range(n + 1):
        lo, hi = binomial_interval(k, n, confidence=confidence)
        lows.append(lo)
        highs.append(hi)
    pmf = lambda k, p: math.comb(n, k) * p**k * (1 - p) ** (n - k)  # noqa: E731
    worst = 0.0
    for p in [0.001, 0.01, 0.05, 0.1, 0.23, 0.5, 0.77, 0.9, 0.99]:
        # "at least p" is true when the sampling probability is p; it fails when high < p.
        fail_at_least = math.fsum(pmf(k, p) for k in range(n + 1) if highs[k] < p)
        fail_at_most = math.fsum(pmf(k, p) for k in range(n + 1) if lows[k] > p)
        worst = max(worst, fail_at_least + fail_at_most)
        assert fail_at_least <= (1 - confidence) / 2 + 1e-12
        assert fail_at_most <= (1 - confidence) / 2 + 1e-12
    assert worst <= 1 - confidence


def test_frequency_check_verdicts_and_report():
    ok = frequency_check(312, 1000, at_least=0.3, token=" coffee")
    assert ok.passed and not ok.confirmed and ok.frequency == 0.312
    bad = frequency_check(250, 1000, at_least=0.3, token=" coffee")
    assert not bad.passed and bad.high < 0.3
    text = str(bad)
    assert text.startswith("FAILED: ' coffee' is sampled with frequency at least 0.3")
    assert "250/1000" in text and "probability at most 0.01" in text
    assert frequency_check(10, 1000, at_most=0.05).confirmed
    assert not frequency_check(100, 1000, at_most=0.05).passed
    both = frequency_check(500, 1000, at_least=0.4, at_most=0.6)
    assert both.passed and both.confirmed
    assert not frequency_check(500, 1000, at_least=0.6, at_most=0.7).passed


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(count=5, n=10), "give at least one bound"),
    (dict(count=5, n=10, at_least=0.5, at_most=0.2), "`at_least` must not exceed `at_most`"),
    (dict(count=5, n=10, at_least=1.5), r"at_least=1.5: `at_least` must be a probability"),
    (dict(count=11, n=10, at_least=0.5), r"count=11: `count` cannot exceed n=10"),
    (dict(count=0, n=0, at_least=0.5), "n=0: an interval needs at least one trial"),
    (dict(count=-1, n=10, at_least=0.5), r"count=-1: `count` must be a non-negative int"),
    (dict(count=5, n=10, at_least=0.5, confidence=1.0), r"confidence=1.0: `confidence` must be"),
    (dict(count=5, n=10, at_least=0.5, method="bayes"), r"method='bayes': `method` must be one"),
])
def test_frequency_check_bad_arguments(kwargs, pattern):
    count, n = kwargs.pop("count"), kwargs.pop("n")
    with pytest.raises(InvalidArgument, match=pattern):
        frequency_check(count, n, **kwargs)


def test_chi_square_test():
    probs = [0.5, 0.3, 0.2, 0.0]
    res = chi_square_test([52, 28, 20, 0], probs)
    stat = (2**2 / 50 + 2**2 / 30 + 0 / 20)
    assert res.statistic == pytest.approx(stat) and res.dof == 2
    ref = torch.special.gammaincc(torch.tensor(1.0, dtype=torch.float64),
                                  torch.tensor(stat / 2, dtype=torch.float64)).item()
    assert res.p_value == pytest.approx(ref)
    assert chi_square_test([80, 10, 10, 0], probs).rejects(FALSE_ALARM)
    impossible = chi_square_test({3: 1, 0: 99}, probs)
    assert impossible.p_value == 0.0 and impossible.rejects()
    # rare categories are pooled: 1000 cells of expected 0.1 become one cell
    pooled = chi_square_test({0: 900}, [0.9] + [0.0001] * 1000)
    assert pooled.categories == 2
    with pytest.raises(InvalidArgument, match="outside probs"):
        chi_square_test({7: 1}, probs)


# -- sampling from the model -----------------------------------------------------------
WARPER_SETTINGS = [
    dict(),
    dict(temperature=0.6),
    dict(temperature=1.4, top_k=40),
    dict(top_p=0.5),
    dict(temperature=0.8, min_p=0.9),
]


@pytest.mark.parametrize("warp", WARPER_SETTINGS,
                         ids=lambda w: ",".join(f"{k}={v}" for k, v in w.items()) or "plain")
def test_sampled_frequencies_match_the_warped_softmax(tiny, warp):
    freq = tiny.sample_frequencies(PROMPT, n=20_000, seed=11, **warp)
    logits = tiny.next_token(PROMPT).logits[None]
    expected = probabilities(logits, build_warpers(do_sample=True, **warp))[0]
    torch.testing.assert_close(freq.probs, expected.float())
    assert sum(freq.counts.values()) == 20_000 and freq.n == 20_000
    fit = freq.chi_square()
    assert not fit.rejects(FALSE_ALARM), str(fit)
    if warp:  # the same counts are implausible under the unwarped softmax
        assert chi_square_test(freq.counts, logits.softmax(-1)[0]).rejects(FALSE_ALARM)


def test_frequency_claims_on_sampled_tokens(tiny):
    freq = tiny.sample_frequencies(PROMPT, n=5000, seed=3, temperature=0.5, top_k=5)
    top = tiny.next_token(PROMPT).top(5)
    for cand in top:
        p = freq.prob(cand.id)
        check = freq.check(cand.id, at_least=p, at_most=p, confidence=0.999)
        assert check.passed, str(check)
    best = top[0]
    assert not freq.check(best.id, at_least=freq.prob(best.id) + 0.1).passed
    assert freq.count(best.id) == freq.counts[best.id] and freq.frequency(best.id) == \
        freq.counts[best.id] / 5000
    assert "5000 samples after" in str(freq) and "99% interval" in str(freq)


def test_sample_prefix_property_and_candidates(tiny):
    ten = tiny.sample(PROMPT, 10, seed=5, temperature=1.3)
    assert tiny.sample(PROMPT, 4, seed=5, temperature=1.3) == ten[:4]
    assert [c.id for c in tiny.sample(PROMPT, 10, seed=6, temperature=1.3)] != [c.id for c in ten]
    dist = tiny.next_token(PROMPT)
    for c in ten:  # each sample carries its unwarped probability and rank
        assert c == dist.candidate(c.id) and c.prob == pytest.approx(dist.prob(c.id))
    # a list of prompts: each prompt's samples are what it gets alone
    both = tiny.sample(["Paris", PROMPT], 10, seed=5, temperature=1.3)
    assert both[1] == ten
    assert [c.id for c in both[0]] != [c.id for c in ten]


def test_seeded_sampling_leaves_the_global_rng_alone(tiny):
    state = torch.get_rng_state()
    a = tiny.sample(PROMPT, 50, seed=1)
    tiny.sample_frequencies(PROMPT, n=100, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    assert tiny.sample(PROMPT, 50, seed=1) == a


def test_unseeded_sampling_records_a_reproducible_seed(tiny):
    freq = tiny.sample_frequencies(PROMPT, n=300)
    again = tiny.sample_frequencies(PROMPT, n=300, seed=freq.seed)
    assert again.counts == freq.counts


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(n=0), r"n=0: `n` must be a positive int"),
    (dict(n=2.5), r"n=2.5: `n` must be a positive int"),
    (dict(seed="abc"), r"seed='abc': `seed` must be an int"),
    (dict(seed=True), r"seed=True: `seed` must be an int"),
    (dict(temperature=0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
])
def test_sample_bad_arguments(tiny, kwargs, pattern):
    with pytest.raises(InvalidArgument, match=pattern):
        tiny.sample(PROMPT, **kwargs)
    if "n" not in kwargs:
        with pytest.raises(InvalidArgument, match=pattern):
            tiny.sample_frequencies(PROMPT, n=10, **kwargs)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), vocab=st.integers(1, 300), seed=st.integers(0, 2**32),
       zeros=st.floats(0, 0.9))
def test_draw_into_a_reused_buffer_gives_the_same_draws(rows, vocab, seed, zeros):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(rows, vocab, generator=g)
    probs[torch.rand(rows, vocab, generator=g) < zeros] = 0
    probs[:, 0] += 1e-3  # every row keeps some mass
    buf = torch.full((rows, vocab), float("nan"), dtype=torch.float64)  # stale content
    for step in range(3):  # the generation loop reuses one buffer across steps
        u = uniforms(row_keys(seed, torch.arange(rows)), step)
        # Independent reference: the float64 prefix sums and the first index above u * total.
        cdf = torch.tensor([list(_seq_cumsum(r)) for r in probs.tolist()],
                           dtype=torch.float64)
        x = torch.minimum(u[:, None] * cdf[:, -1:],
                          torch.nextafter(cdf[:, -1:], torch.zeros(rows, 1, dtype=torch.float64)))
        expected = [int((c <= xi).sum()) for c, xi in zip(cdf, x[:, 0])]
        assert draw(probs, u, out=buf).tolist() == draw(probs, u).tolist() == expected
        probs = probs.roll(1, dims=1)


def _seq_cumsum(row):
    total = 0.0
    for p in row:  # float32 values summed left to right in float64, as a cumsum does
        total += p
        yield total


@pytest.mark.parametrize("warp", [dict(), dict(top_k=3), dict(top_p=0.8), dict(min_p=0.2),
                                  dict(top_k=5, top_p=0.9, min_p=0.1), dict(temperature=0.5)])
def test_probabilities_of_checked_logits_are_the_same_tensor(warp):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1)) * 3
    logits[0, :10] = -float("inf")  # banned tokens are fine
    chain = build_warpers(**warp)
    expected = torch.softmax(chain(logits), -1)
    assert torch.equal(_probabilities(logits, chain, finite=True), expected)
    assert torch.equal(probabilities(logits, chain), expected)


def test_a_temperature_overflow_is_still_caught_when_the_logits_were_checked():
    logits = torch.tensor([[3e38, 0.0]])  # finite, but / 0.5 overflows float32
    with pytest.raises(EmptyDistributionError, match="temperature=0.5"):
        _probabilities(logits, build_warpers(temperature=0.5), finite=True)
