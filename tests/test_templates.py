"""Templates, perturbations, invariance checks, pass rates, the suite matrix and the HTML page.

No forward pass here: handmade distributions over the tiny vocabulary give exactly
known probabilities and ranks; expected values are computed independently (plain
torch, scipy-free binomial sums).
"""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe import InvalidArgument, LogitAssertionError
from logitprobe.invariance import (assert_argmax_unchanged, assert_prob_close,
                                   assert_prob_within, assert_rank_moves)
from logitprobe.passrate import assert_pass_rate, lower_bound, pass_rate
from logitprobe.perturbations import (BUILTIN, ChangeCase, Negate, NeutralClause, Punctuation,
                                      SwapName, Typo, perturb)
from logitprobe.report_html import render, topk_svg
from logitprobe.results import NextToken
from logitprobe.suite_report import matrix, matrix_text
from logitprobe.templates import TemplateCase, expand, placeholders

XHTML = "{http://www.w3.org/1999/xhtml}"
SVG = "{http://www.w3.org/2000/svg}"


# -- templates ---------------------------------------------------------------------------
def test_expand_rows_and_lexicons():
    cases = expand("{name} said the capital of {country} is",
                   rows=[{"country": "France", "capital": " Paris"},
                         {"country": "Japan", "capital": " Tokyo"}],
                   lexicons={"name": ["Mary", "John"]}, target="capital", capability="geo")
    assert [c.id for c in cases] == ["Mary-France", "John-France", "Mary-Japan", "John-Japan"]
    assert cases[2].prompt == "Mary said the capital of Japan is"
    assert cases[2]["capital"] == " Tokyo" and cases[2].target == " Tokyo"
    assert {c.capability for c in cases} == {"geo"} and {c.test_type for c in cases} == {"MFT"}
    assert cases[0].prompts == (cases[0].prompt,)


def test_expand_names_and_unique_ids():
    cases = expand("{a}!", lexicons={"a": ["x y", "x/y"]})
    assert [c.id for c in cases] == ["x_y", "x_y-2"]
    assert [c.id for c in expand("{a}", lexicons={"a": ["1", "2"]}, name="n{a}")] == ["n1", "n2"]
    assert str(cases[0]) == "x_y"


@pytest.mark.parametrize("kwargs, match", [
    (dict(template="", lexicons={"a": ["x"]}), "non-empty string"),
    (dict(template="{a", lexicons={"a": ["x"]}), "literal brace"),
    (dict(template="{a:>3}", lexicons={"a": ["x"]}), "plain name"),
    (dict(template="{a} {b}", lexicons={"a": ["x"]}), r"no values for \{b\}"),
    (dict(template="{a}", lexicons={"a": ["x"], "c": ["y"]}), "not a placeholder"),
    (dict(template="{a}", lexicons={"a": "xy"}), "split into characters"),
    (dict(template="{a}", rows=[{"a": "x"}, {"b": "y"}]), "same keys"),
    (dict(template="{a}", rows=[]), "at least one row"),
    (dict(template="{a}", rows=[{"a": "x"}], lexicons={"a": ["y"]}), "both a lexicon"),
    (dict(template="{a}", rows=[{"a": "x"}], target="z"), "target='z'"),
    (dict(template="{a}", rows=[{"a": "x"}], test_type="XYZ"), "MFT, INV, DIR"),
])
def test_expand_errors_name_the_argument(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        expand(kwargs.pop("template"), **kwargs)


def test_placeholders_in_order_once():
    assert placeholders("{b} {a} {b} {{literal}}") == ["b", "a"]


@given(st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=5, unique=True),
       st.lists(st.text("0123", min_size=1, max_size=3), min_size=1, max_size=4, unique=True))
@settings(max_examples=50, deadline=None)
def test_expand_is_the_product(xs, ys):
    cases = expand("<{x}|{y}>", lexicons={"x": xs, "y": ys})
    assert len(cases) == len(xs) * len(ys)
    assert {c.prompt for c in cases} == {f"<{x}|{y}>" for x in xs for y in ys}
    assert len({c.id for c in cases}) == len(cases)


# -- perturbations -----------------------------------------------------------------------
TEXTS = st.text(st.sampled_from("abcdefgh ABC,.;is not was"), min_size=1, max_size=40)


@pytest.mark.parametrize("name", sorted(BUILTIN))
@given(text=TEXTS, seed=st.integers(0, 2**32))
@settings(max_examples=40, deadline=None)
def test_perturbations_are_pure_and_seeded(name, text, seed):
    p = BUILTIN[name](names=("Ann", "Bob")) if name == "swap_name" else BUILTIN[name]()
    a = p(text, random.Random(seed))
    b = p(text, random.Random(seed))
    assert isinstance(a, str) and a == b  # same text and seed: same result


def test_each_perturbation_on_a_known_text():
    rng = random.Random(0)
    assert SwapName(("Mary", "John"))("Mary met Maryanne", rng) == "John met Maryanne"
    assert SwapName(("Mary", "John"))("nobody here", rng) == "nobody here"
    assert NeutralClause(("Hi.",))("x is", rng) == "Hi. x is"
    typo = Typo()("The capital is", random.Random(3))
    assert sorted(typo) == sorted("The capital is") and typo != "The capital is"
    changed = [w for w, v in zip(typo.split(), "The capital is".split()) if w != v]
    assert len(changed) == 1 and changed[0][0] == "c" and changed[0][-1] == "l"
    assert ChangeCase("upper")("ab c", rng) == "AB C"
    assert Punctuation()("a, b is", rng) == "a b is"
    assert Punctuation()("a b is", random.Random(0)) in ("a, b is", "a b, is")
    assert Negate()("The sky is blue", rng) == "The sky is not blue"
    assert Negate()("The sky is not blue", rng) == "The sky is not blue"
    with pytest.raises(InvalidArgument, match="two distinct"):
        SwapName(("Mary",))
    with pytest.raises(InvalidArgument, match="mode='shout'"):
        ChangeCase("shout")


def test_perturb_links_to_base_and_drops_unchanged():
    base = expand("{name} is here", lexicons={"name": ["Mary", "Zed"]})
    out = perturb(base, SwapName(("Mary", "John")), Negate(), seed=4)
    assert [(c.id, c.prompt, c.base.id, c.test_type) for c in out] == [
        ("Mary~swap_name", "John is here", "Mary", "INV"),
        ("Mary~negate", "Mary is not here", "Mary", "DIR"),
        ("Zed~negate", "Zed is not here", "Zed", "DIR")]  # no name to swap in "Zed is here"
    assert out[0].prompts == ("John is here", "Mary is here")
    assert perturb(base, NeutralClause(), seed=4) == perturb(base, NeutralClause(), seed=4)


def test_perturb_accepts_user_functions_and_copies():
    def shout(text, rng):
        return text + "!" * rng.randint(1, 3)

    out = perturb(expand("{a}", lexicons={"a": ["x"]}), shout, copies=6)
    assert all(c.perturbation == "shout" and c.base.id == "x" for c in out)
    assert len({c.prompt for c in out}) == len(out) <= 3  # repeats dropped
    with pytest.raises(InvalidArgument, match="not callable"):
        perturb(out, "typo")
    with pytest.raises(InvalidArgument, match="copies=0"):
        perturb(out, shout, copies=0)


# -- invariance and tolerance checks on handmade distributions ----------------------------
def dist(tiny, values, prompt="handmade"):
    logits = torch.zeros(tiny.vocab_size)
    for tid, v in values.items():
        logits[tid] = v
    return NextToken(logits, vocab=tiny.vocab, prompt=prompt, token_ids=[1], position=0)


def tok(tiny, tid):
    return tiny.vocab.decode_one(tid)


def test_argmax_unchanged(tiny):
    base = dist(tiny, {10: 5.0, 11: 4.0}, "base")
    same = dist(tiny, {10: 3.0, 11: 2.0}, "same")
    other = dist(tiny, {10: 3.0, 11: 6.0}, "other")
    assert assert_argmax_unchanged(base, same).id == 10
    with pytest.raises(LogitAssertionError, match="the argmax changed") as err:
        assert_argmax_unchanged(base, other)
    p = torch.softmax(other.logits.double(), -1)
    assert err.value.severity == pytest.approx(float(p[11] - p[10]), rel=1e-5)
    assert "top 5 (perturbed)" in str(err.value)


def test_prob_within_and_close(tiny):
    base = dist(tiny, {10: 5.0})
    moved = dist(tiny, {10: 4.0})
    pb = float(torch.softmax(base.logits.double(), -1)[10])
    pm = float(torch.softmax(moved.logits.double(), -1)[10])
    token = tok(tiny, 10)
    assert_prob_within(base, moved, token, tol=abs(pb - pm) + 1e-6)
    with pytest.raises(LogitAssertionError, match="more than tol") as err:
        assert_prob_within(base, moved, token, tol=abs(pb - pm) - 1e-3)
    assert err.value.severity == pytest.approx(1e-3, abs=1e-5)
    assert_prob_close(base, token, pb + 0.01, abs=0.011)
    assert_prob_close(base, token, pb * 1.1, rel=0.1)
    with pytest.raises(LogitAssertionError, match=r"expected 0\.1 \+/- 0\.01"):
        assert_prob_close(base, token, 0.1, abs=0.01)
    with pytest.raises(InvalidArgument, match="give a tolerance"):
        assert_prob_close(base, token, 0.1)


def test_rank_moves(tiny):
    base = dist(tiny, {10 + i: 10.0 - i for i in range(10)})  # id 19 is rank 10
    after = dist(tiny, {**{10 + i: 10.0 - i for i in range(10)}, 19: 7.5})  # now rank 4
    token = tok(tiny, 19)
    assert assert_rank_moves(base, after, token, by=6, direction="up").rank == 4
    with pytest.raises(LogitAssertionError, match="moved up by 6") as err:
        assert_rank_moves(base, after, token, by=7)
    assert err.value.severity == 1
    with pytest.raises(LogitAssertionError, match="moved down by -6"):
        assert_rank_moves(base, after, token, by=1, direction="down")
    with pytest.raises(InvalidArgument, match="direction='sideways'"):
        assert_rank_moves(base, after, token, direction="sideways")


# -- pass rates --------------------------------------------------------------------------
def _cdf_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed directly."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize("k, n", [(45, 50), (50, 50), (3, 10), (0, 5)])
def test_lower_bound_is_the_exact_one_sided_bound(k, n):
    low = lower_bound(k, n, 0.95)
    if k == 0:
        assert low == 0.0
    else:  # Clopper-Pearson: P(X >= k | p = low) = alpha
        assert _cdf_tail(k, n, low) == pytest.approx(0.05, abs=1e-6)


def _fails(ids):
    def check(case):
        if case.id in ids:
            err = AssertionError(f"{case.id} failed\nline 2")
            err.severity = float(len(case.id))
            raise err
    return check


def test_pass_rate_counts_and_reports_worst_first():
    cases = expand("{a}", lexicons={"a": [f"c{i}" for i in range(20)]})
    failing = {"c1", "c12", "c5"}
    result = pass_rate(cases, _fails(failing), at_least=0.9)
    assert (result.passed, result.n, result.ok, result.needed) == (17, 20, False, 18)
    with pytest.raises(LogitAssertionError) as err:
        assert_pass_rate(cases, _fails(failing), at_least=0.9, name="letters")
    text = str(err.value)
    assert text.startswith("letters: 17 of 20 passed (85.0%), expected at least 90%")
    assert "18 had to pass (1 more)" in text
    assert text.index("- c12") < text.index("- c1 ") < text.index("- c5")  # severity 3, 2, 2
    assert assert_pass_rate(cases, _fails({"c1"}), at_least=0.9).ok


def test_pass_rate_with_confidence_needs_more():
    cases = expand("{a}", lexicons={"a": [f"c{i}" for i in range(50)]})
    result = pass_rate(cases, _fails({"c1", "c2", "c3"}), at_least=0.9, confidence=0.95)
    assert not result.ok and result.lower < 0.9 < result.rate
    need = result.needed
    assert need is not None and lower_bound(need, 50, 0.95) >= 0.9 > lower_bound(need - 1, 50, 0.95)
    assert pass_rate(cases[:5], _fails(set()), at_least=0.9, confidence=0.95).needed is None
    assert "even 5 of 5 would not reach it" in str(
        pass_rate(cases[:5], _fails(set()), at_least=0.9, confidence=0.95))


def test_pass_rate_lets_bugs_through_and_checks_arguments():
    cases = expand("{a}", lexicons={"a": ["x"]})
    with pytest.raises(ZeroDivisionError):
        pass_rate(cases, lambda c: 1 / 0, at_least=0.5)
    with pytest.raises(InvalidArgument, match="at_least=90"):
        pass_rate(cases, _fails(()), at_least=90)
    with pytest.raises(InvalidArgument, match="confidence=0.3"):
        pass_rate(cases, _fails(()), at_least=0.9, confidence=0.3)
    with pytest.raises(InvalidArgument, match="cases=\\[\\]"):
        pass_rate([], _fails(()), at_least=0.9)


# -- matrix and HTML ---------------------------------------------------------------------
RECORDS = [
    {"id": "a", "capability": "capitals", "type": "MFT", "status": "passed", "prompt": "A is",
     "rank": 1, "prob": 0.7},
    {"id": "b<&>", "capability": "capitals", "type": "INV", "status": "failed", "prompt": "B\x00",
     "message": "verdict\n> 1 | ' x' | 0.5", "top": [[" x", 0.5], ["<y>", 0.25]], "target": " x"},
    {"id": "c", "capability": "negation", "type": "DIR", "status": "xfailed"},
    {"id": "d", "capability": "negation", "type": "DIR", "status": "skipped"},
]


def test_matrix_counts_cells_and_totals():
    m = matrix(RECORDS)
    assert m["rows"]["capitals"]["MFT"] == {"cases": 1, "failures": 0, "rate": 1.0}
    assert m["rows"]["capitals"]["INV"] == {"cases": 1, "failures": 1, "rate": 0.0}
    assert m["rows"]["negation"]["DIR"]["cases"] == 1  # skipped left out, xfailed passes
    assert m["total"]["total"] == {"cases": 3, "failures": 1, "rate": 2 / 3}
    text = matrix_text(RECORDS)
    assert "capitals   | 1 / 0 fail" in text and "pass rate 66.7% over 3 cases" in text


def test_html_report_parses_and_embeds_everything():
    page = render(RECORDS, title="t")
    assert "http://" not in page.replace("http://www.w3.org/", "")  # nothing to fetch
    root = ET.fromstring(page.encode())
    cases = ["".join(e.itertext()) for e in root.iter(f"{XHTML}span") if e.get("class") == "lp-case"]
    assert cases == ["a", "b<&>", "c", "d"]  # every case, escaped and restored by the parser
    failures = [e for e in root.iter(f"{XHTML}div") if e.get("class") == "lp-failure"]
    assert len(failures) == 1
    svg = failures[0].find(f".//{SVG}svg")
    bars = svg.findall(f"{SVG}rect")
    assert len(bars) == 2 and float(bars[0].get("width")) == pytest.approx(0.5 * 220)
    assert bars[0].get("fill") != bars[1].get("fill")  # the target's bar stands out
    assert "\\x00" in page  # control characters shown as escapes
    assert ET.fromstring(topk_svg([["a", 1.0]])).tag == f"{SVG}svg"


@pytest.mark.parametrize("module", ["templates", "perturbations", "passrate", "suite_report"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"logitprobe.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
