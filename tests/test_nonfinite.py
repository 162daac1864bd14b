"""Non-finite logits are never answers: finite-only grammar and spec numbers, a named error
that says which intervention produced NaN / +inf / an all -inf row, and named errors for
warped distributions with no mass (issue 11, item 4)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe import InvalidArgument
from logitprobe._finite import find_nonfinite
from logitprobe.engine import Engine
from logitprobe.errors import EmptyDistributionError, LogitProbeError, NonFiniteLogitsError
from logitprobe.interventions import AddLogit, BanTokens, Scale, ScaleLogit, SetLogit, Steer
from logitprobe.interventions.grammar import Expression
from logitprobe.warpers import Temperature, TopKWarper, probabilities, sample_from

PROMPT = "I like oat milk in my"
F32_MAX = float(torch.finfo(torch.float32).max)
INF, NAN = float("inf"), float("nan")


# -- the grammar: finite numbers only, or an error at the column --------------------------
@pytest.mark.parametrize("text, problem, column", [
    ("inf", "'inf' is not allowed", 1),
    ("-inf", "'inf' is not allowed", 2),
    ("max+NaN", "'NaN' is not allowed", 5),
    ("1e309", "the number 1e309 is not a finite float32 value", 1),
    ("max - 1e39", "the number 1e39 is not a finite float32 value", 7),
    ("0/0", "division by zero", 2),
    ("max/0", "division by zero", 4),
    ("max / (2-2)", "division by zero", 5),
    ("1e38*10", "overflows float32", 5),
    ("min+1e20*1e20", "overflows float32", 9),
])
def test_expression_rejects_non_finite_at_the_column(text, problem, column):
    with pytest.raises(InvalidArgument) as info:
        SetLogit(" a", to=text)
    assert re.search(re.escape(f"to={text!r}: ") + ".*" + re.escape(problem)
                     + f".* at column {column};",
                     str(info.value)), str(info.value)


_num = st.sampled_from(["0", "1", "2.5", "1e-45", "1e-30", "3e38", "1e38", "1e20", ".5", "7"])
_ops = st.sampled_from(["+", "-", "*", "/"])


@st.composite
def constant_expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return ("-" if draw(st.booleans()) else "") + draw(_num)
    left, right = draw(constant_expressions(depth - 1)), draw(constant_expressions(depth - 1))
    return f"({left}{draw(_ops)}{right})"


@settings(max_examples=300, deadline=None)
@given(constant_expressions())
def test_a_constant_expression_that_parses_is_a_finite_float32(text):
    try:
        expr = Expression(text)
    except InvalidArgument as exc:
        assert "at column" in str(exc)
        return
    value = expr(torch.zeros(1, 4), torch.zeros(1))
    assert torch.isfinite(value).all(), (text, value)


# -- spec numbers: finite and within float32 ------------------------------------------------
@pytest.mark.parametrize("make, fragment", [
    (lambda: Scale("blocks.0.hook_resid_pre", factor=1e308), "factor=1e+308: `factor` must be"),
    (lambda: Steer("blocks.0.hook_resid_pre", coefficient=1e308, vector=[1.0]),
     "coefficient=1e+308"),
    (lambda: Steer("blocks.0.hook_resid_pre", vector=[1.0, 5e38]), "vector[1]=5e+38"),
    (lambda: AddLogit(" a", amount=-1e39), "amount=-1e+39"),
    (lambda: ScaleLogit(" a", factor=10**400), "factor=inf"),
    (lambda: SetLogit(" a", to=1e309), "to=inf: `to` must be a finite number or -inf"),
    (lambda: SetLogit(" a", to=NAN), "to=nan"),
])
def test_spec_numbers_must_be_finite_float32(make, fragment):
    with pytest.raises(InvalidArgument, match=r"within float32 range") as info:
        make()
    assert fragment in str(info.value)


def test_minus_inf_and_float32_max_are_allowed():
    assert SetLogit(" a", to=-INF).to == -INF
    assert AddLogit(" a", amount=-F32_MAX).amount == -F32_MAX


# -- the check itself -------------------------------------------------------------------------
def test_find_nonfinite_kinds_and_padding():
    ok = torch.tensor([0.0, -INF, 1.0])
    assert find_nonfinite(ok.expand(2, 3, 3)) is None
    for row, what in [(torch.tensor([0.0, NAN, 1.0]), "NaN"),
                      (torch.tensor([0.0, INF, 1.0]), "+inf"),
                      (torch.full((3,), -INF), "no finite logit")]:
        x = ok.repeat(2, 3, 1)
        x[1, 2] = row
        assert find_nonfinite(x) == (1, 2, what)
        # row 1 reads only its last 0..2 positions: position 2 is read, so still bad
        assert find_nonfinite(x, [3, 1]) == (1, 2, what)
        x = ok.repeat(2, 3, 1)
        x[1, 0] = row  # a padding column of row 1 (it keeps 2 of 3): nobody reads it
        assert find_nonfinite(x, [3, 2]) is None
        assert find_nonfinite(x, [3, 3]) == (1, 0, what)


class _NaNBackend:
    """A backend whose model emits NaN at the last position of every row."""

    vocab_size, device, n_ctx = 5, torch.device("cpu"), None

    def forward(self, tokens, *, attention_mask, keep, hooks):
        out = torch.zeros(tokens.shape[0], keep, self.vocab_size)
        out[:, -1, 2] = NAN
        return out

    def weights_key(self):
        return None

    def foreign_hooks(self):
        return False


def test_engine_names_the_model_itself_and_caches_nothing():
    engine = Engine(_NaNBackend(), pad_id=0)
    engine.decode = lambda ids: "tok " * len(ids)
    with pytest.raises(NonFiniteLogitsError, match=r"the logits at position 2 of 'tok tok tok ' "
                       r"\(3 tokens\) contain NaN; produced by the model itself") as info:
        engine.logits([[1, 2, 3]], keep=2)
    assert "dtype" in str(info.value)
    assert isinstance(info.value, LogitProbeError) and isinstance(info.value, ArithmeticError)
    assert len(engine._cache) == 0


# -- interventions that produce non-finite logits, on the tiny model ----------------------------
def test_nan_from_an_expression_names_the_spec(tiny):
    harmless = AddLogit(" coffee", amount=1.0)
    bad = SetLogit(" tea", to="max/(logit-logit)")  # x/0 only at run time
    with pytest.raises(NonFiniteLogitsError) as info:
        tiny.next_token(PROMPT, interventions=[harmless, bad])
    msg = str(info.value)
    assert f"produced by {bad!r} (intervention 2 of 2)" in msg
    assert f"of {PROMPT!r}" in msg and "+inf" in msg
    # nothing was cached and the probe still answers
    assert math.isfinite(tiny.next_token(PROMPT, interventions=[harmless]).argmax.prob)
    with pytest.raises(NonFiniteLogitsError):
        tiny.next_token(PROMPT, interventions=[harmless, bad])


def test_overflowing_steer_names_the_spec(tiny):
    # each number is finite float32, their product is not: inf in the residual, NaN logits
    width = tiny.model.cfg.d_model
    spec = Steer("blocks.0.hook_resid_post", coefficient=1e30, vector=[1e30] + [0.0] * (width - 1))
    with pytest.raises(NonFiniteLogitsError, match=r"contain NaN; produced by Steer\("):
        tiny.next_token(PROMPT, interventions=[spec])
    with pytest.raises(NonFiniteLogitsError, match=r"produced by Steer\("):
        tiny.score(PROMPT, " coffee and tea", interventions=[spec])
    # the lens and attribution run their own forwards: the same guarantee holds there
    with pytest.raises(NonFiniteLogitsError, match=r"produced by Steer\("):
        tiny.lens(PROMPT, interventions=[spec])
    with pytest.raises(NonFiniteLogitsError, match=r"produced by Steer\("):
        tiny.attribute(PROMPT, " coffee", interventions=[spec])


def test_banning_every_token_is_an_error_banning_all_but_one_is_not(tiny):
    everything = list(range(tiny.vocab_size))
    with pytest.raises(NonFiniteLogitsError, match="every token is banned.*ban fewer tokens"):
        tiny.next_token(PROMPT, interventions=[BanTokens(everything)])
    keep = tiny.token_id(" coffee")
    nt = tiny.next_token(PROMPT, interventions=[BanTokens([i for i in everything if i != keep])])
    assert nt.argmax == " coffee" and nt.argmax.prob == 1.0
    assert nt.logits.isneginf().sum() == tiny.vocab_size - 1  # -inf is a legitimate logit


def test_generation_and_sampling_raise_the_named_error(tiny):
    ban = [BanTokens(list(range(tiny.vocab_size)))]
    with pytest.raises(NonFiniteLogitsError, match="every token is banned"):
        tiny.generate(PROMPT, max_new_tokens=3, interventions=ban)
    with pytest.raises(NonFiniteLogitsError, match="every token is banned"):
        tiny.generate(PROMPT, max_new_tokens=3, do_sample=True, seed=0, interventions=ban)
    with pytest.raises(NonFiniteLogitsError, match="every token is banned"):
        tiny.sample(PROMPT, 5, seed=0, interventions=ban)


def test_a_later_generation_step_names_its_position_and_spec(tiny):
    n = len(tiny.encode(PROMPT))
    spec = SetLogit(" tea", to="max/(logit-logit)", positions=[n + 1])  # fires on step 3 only
    with pytest.raises(NonFiniteLogitsError) as info:
        tiny.generate(PROMPT, max_new_tokens=5, interventions=[spec])
    assert f"at position {n + 1} of " in str(info.value)
    assert f"({n + 2} tokens) contain +inf; produced by {spec!r}" in str(info.value)
    seen = []
    with pytest.raises(NonFiniteLogitsError):
        for dist, _ in tiny.steps(PROMPT, max_new_tokens=5, interventions=[spec]):
            seen.append(dist)
    assert len(seen) == 2  # positions n-1 and n were fine


# -- warped distributions with no mass ---------------------------------------------------------
def test_tiny_temperature_is_a_named_error_not_an_index_error(tiny):
    for call in (lambda: tiny.sample(PROMPT, 3, temperature=1e-45, seed=0),
                 lambda: tiny.sample_frequencies(PROMPT, 10, temperature=1e-45, seed=0),
                 lambda: tiny.generate(PROMPT, do_sample=True, temperature=1e-45, seed=0)):
        with pytest.raises(EmptyDistributionError,
                           match=r"temperature=1e-45: logits / temperature overflows float32.*"
                                 r"do_sample=False"):
            call()
    # a small temperature that does not overflow is the greedy choice
    greedy = tiny.next_token(PROMPT).argmax
    assert {c.id for c in tiny.sample(PROMPT, 20, temperature=1e-6, seed=0)} == {greedy.id}


def test_probabilities_and_sample_from_refuse_rows_without_mass():
    with pytest.raises(EmptyDistributionError, match=r"before any warper"):
        probabilities(torch.tensor([[0.0, NAN]]), [TopKWarper(1)])
    with pytest.raises(EmptyDistributionError, match=r"before any warper"):
        probabilities(torch.full((3,), -INF), [])
    with pytest.raises(EmptyDistributionError, match=r"temperature=1e-40"):
        probabilities(torch.tensor([1.0, 2.0]), [Temperature(1e-40)])
    with pytest.raises(EmptyDistributionError, match="no finite logit"):
        sample_from(torch.full((1, 3), -INF), torch.Generator().manual_seed(0))
    assert issubclass(EmptyDistributionError, InvalidArgument)
    torch.testing.assert_close(probabilities(torch.tensor([0.0, -INF]), []),
                               torch.tensor([1.0, 0.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.lists(st.sampled_from([0.0, -1.5, 3.0, -INF, INF, NAN]), min_size=3,
                                  max_size=3), min_size=3, max_size=3), min_size=1, max_size=4),
       st.data())
def test_property_find_nonfinite_equals_a_plain_loop(rows, data):
    logits = torch.tensor(rows)  # (B, keep=3, vocab=3)
    keeps = data.draw(st.lists(st.integers(1, 3), min_size=len(rows), max_size=len(rows)))
    expected = None
    for r, row in enumerate(rows):
        for c in range(3 - keeps[r], 3):
            values = row[c]
            if any(math.isnan(v) for v in values):
                expected = (r, c, "NaN")
            elif INF in values:
                expected = (r, c, "+inf")
            elif all(v == -INF for v in values):
                expected = (r, c, "no finite logit")
            if expected:
                break
        if expected:
            break
    assert find_nonfinite(logits, keeps) == expected
