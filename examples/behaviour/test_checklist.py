"""A CheckList-style suite in Python: templates, perturbations and pass rates on SmolLM2.

    pytest examples/behaviour --logitprobe-model smollm2 --logitprobe-html out/report.html

Cases come from templates (``expand``); each parametrized test is named by its
case id (``test_capital_in_top_5[capital-France]``), and the plugin computes
the prompts of all of them in one batched pass before the first runs. The
summary matrix at the end of the run places every case by capability and test
type (MFT, INV, DIR).
"""

import pytest

from logitprobe import assert_argmax, assert_in_top, assert_prob_decreases, \
    assert_prob_increases
from logitprobe.invariance import assert_argmax_unchanged, assert_prob_within, \
    assert_rank_moves
from logitprobe.passrate import assert_pass_rate
from logitprobe.perturbations import Negate, NeutralClause, SwapName, perturb
from logitprobe.templates import expand

CAPITALS = expand(
    "The capital of {country} is", name="capital-{country}", capability="capitals",
    target="capital",
    rows=[{"country": "France", "capital": " Paris"},
          {"country": "Germany", "capital": " Berlin"},
          {"country": "Japan", "capital": " Tokyo"},
          {"country": "Greece", "capital": " Athens"},
          {"country": "Portugal", "capital": " Lisbon"}])
NAMES = ("Mary", "John", "Aisha", "Wei", "Carlos", "Olga")
SPEAKERS = expand("{name} said that the capital of {country} is", capability="capitals",
                  lexicons={"name": NAMES[:2], "country": ["France", "Germany"]})


# MFT: minimum functionality.
@pytest.mark.parametrize("case", CAPITALS)
def test_capital_in_top_5(probe, case):
    assert_in_top(probe.next_token(case.prompt), case.target, k=5)


# INV: the speaker's name and a neutral sentence before the question keep the answer.
@pytest.mark.parametrize("case", perturb(SPEAKERS, SwapName(NAMES), NeutralClause(), seed=1))
def test_answer_survives(probe, case):
    base, perturbed = probe.next_token([case.base.prompt, case.prompt])
    assert_argmax_unchanged(base, perturbed)


@pytest.mark.parametrize("case", perturb(CAPITALS, NeutralClause()))
def test_capital_probability_stable(probe, case):
    base, perturbed = probe.next_token([case.base.prompt, case.prompt])
    assert_prob_within(base, perturbed, case.target, tol=0.25)


# DIR: "is" -> "is not" moves probability away from the capital.
@pytest.mark.parametrize("case", perturb(CAPITALS[:3], Negate()))
def test_negation_lowers_the_capital(probe, case):
    base, negated = probe.next_token([case.base.prompt, case.prompt])
    assert_prob_decreases(base, negated, case.target, by=0.2)


# DIR: a negative verb raises " terrible" (by probability and by at least 100 ranks).
@pytest.mark.parametrize("case", expand("I hated the {thing}. It was", capability="sentiment",
                                        test_type="DIR",
                                        lexicons={"thing": ["movie", "food", "book"]}))
def test_hated_is_terrible(probe, case):
    loved, hated = probe.next_token([case.prompt.replace("hated", "loved"), case.prompt])
    assert_prob_increases(loved, hated, " terrible", by=0.005)
    assert_rank_moves(loved, hated, " terrible", by=100, direction="up")


# Arithmetic, and the digit tokenization trap: SmolLM2 writes every digit as its own token
# and the space before a number as another, so after "2 + 2 =" the next token is " " (p ~ 1)
# and after "2 + 2 = " it is "4", not " 4" (which is two tokens, ' ' and '4').
FEW_SHOT = "1 + 1 = 2\n3 + 5 = 8\n4 + 2 = 6\n"
SUMS = expand(FEW_SHOT + "{a} + {b} = ", name="{a}+{b}", capability="arithmetic",
              target="sum",
              rows=[{"a": a, "b": b, "sum": str(a + b)}
                    for a, b in [(2, 2), (3, 4), (1, 2), (5, 3), (2, 6), (4, 4), (3, 3),
                                 (1, 7), (6, 2), (2, 5)]])


def test_digit_tokens(probe):
    assert probe.tokenize(" 4") == [" ", "4"]
    assert_argmax(probe.next_token(FEW_SHOT + "2 + 2 ="), " ")
    assert_argmax(probe.next_token(FEW_SHOT + "2 + 2 = "), "4")


def test_sums_pass_rate(probe):
    # 8 of 10 sums are the argmax ("1 + 2" and "6 + 2" are not): a pass rate, not a boolean.
    result = assert_pass_rate(SUMS, lambda c: assert_argmax(probe.next_token(c.prompt), c.target),
                              at_least=0.7, probe=probe, name="few-shot sums")
    assert result.passed == 8
