"""Behavioural tests in Python: ``pytest examples/behaviour --logitprobe-model smollm2``.

The ``probe`` fixture is the model named by ``--logitprobe-model`` (default
gpt2), loaded once per session. Plain ``assert`` works and shows the evidence
when it fails; the ``assert_*`` helpers cover checks that are not one
comparison.
"""

import pytest

from logitprobe.assertions import (assert_argmax, assert_close, assert_greedy_starts_with,
                                   assert_in_top, assert_more_likely, assert_prob_decreases,
                                   assert_prob_increases)

CAPITALS = [("France", " Paris"), ("Germany", " Berlin"), ("Japan", " Tokyo")]


def test_coffee_with_oat_milk(probe):
    assert " coffee" in probe.next_token("I like oat milk in my").top(5)


def test_no_capital_for_oat_milk(probe):
    assert " Paris" not in probe.next_token("I like oat milk in my").top(10)


@pytest.mark.parametrize("country, capital", CAPITALS)
def test_capitals(probe, country, capital):
    nt = probe.next_token(f"The capital of {country} is")
    assert_in_top(nt, capital, k=3)
    assert_more_likely(nt, capital, " London", margin=1.0)


def test_capitals_batched(probe):
    # One batched forward for all prompts; each check reads its own distribution.
    prompts = [f"The capital of {country} is" for country, _ in CAPITALS]
    for nt, (_, capital) in zip(probe.next_token(prompts), CAPITALS):
        assert_argmax(nt, capital)


def test_swapping_the_country_moves_the_answer(probe):
    france, germany = probe.next_token(["The capital of France is", "The capital of Germany is"])
    assert_prob_decreases(france, germany, " Paris", by=0.1)
    assert_prob_increases(france, germany, " Berlin", by=0.1)


def test_paraphrase_keeps_the_distribution(probe):
    a, b = probe.next_token(["The capital of France is", "The capital city of France is"])
    assert_close(a, b, tv=0.3)


def test_greedy_answer(probe):
    assert_greedy_starts_with(probe, "The Eiffel Tower is located in the city of", " Paris")
