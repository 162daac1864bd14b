"""Specs as data, without a model: the expression grammar, construction checks, dict/JSON/YAML."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitprobe.errors import InvalidArgument
from logitprobe.interventions import (AddLogit, BanTokens, Expression, Match, MeanAblate, Patch,
                                      Scale, ScaleLogit, SetLogit, Steer, ZeroAblate,
                                      dump_specs, from_dict, from_json, from_yaml, load_specs,
                                      to_dict, to_json, to_yaml)
from logitprobe.interventions.serialize import coerce


# -- the grammar -----------------------------------------------------------------------
@pytest.fixture
def rows():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 50, generator=g)  # (batch, pos, vocab)


@pytest.mark.parametrize("text, expected", [
    ("max+10", lambda x, c: x.max(-1).values + 10),
    ("min", lambda x, c: x.min(-1).values),
    ("mean-2", lambda x, c: x.mean(-1) - 2),
    ("mean - 2*std", lambda x, c: x.mean(-1) - 2 * x.std(-1)),
    ("-(max)*2", lambda x, c: -x.max(-1).values * 2),
    ("logit/2 + 1e-1", lambda x, c: c / 2 + 0.1),
    ("2*3+1", lambda x, c: torch.full_like(c, 7.0)),
    ("(max+min)/2", lambda x, c: (x.max(-1).values + x.min(-1).values) / 2),
    ("+.5", lambda x, c: torch.full_like(c, 0.5)),
])
def test_expression_values(rows, text, expected):
    before = rows.clone()
    current = rows[..., 7]
    value = Expression(text)(rows, current)
    assert value.shape == current.shape and value.dtype == rows.dtype
    torch.testing.assert_close(value, expected(rows, current), rtol=0, atol=0)
    assert torch.equal(rows, before), "the input must not be modified"


def test_expression_is_exact_in_float32(rows):
    # "max+10" must give exactly what a hand-written float32 hook computes.
    value = Expression("max+10")(rows, rows[..., 0])
    assert torch.equal(value, rows.max(-1).values + 10)


@pytest.mark.parametrize("text, fragment", [
    ("max+", "ends too early at column 5"),
    ("foo", "unknown name 'foo' (known: max, min, mean, std, logit) at column 1"),
    ("max)", "unexpected ')' at column 4"),
    ("(max", "missing ')'"),
    ("max; import os", "unexpected character ';' at column 4"),
    ("__import__('os')", "unexpected character \"'\" at column 12"),
    ("__import__", "unknown name '__import__'"),
    ("max**2", "expected a number, a name or '(' but got '*' at column 5"),
    ("", "the expression is empty"),
    ("max" + "+1" * 150, "more than 200"),
])
def test_expression_errors_teach(text, fragment):
    with pytest.raises(InvalidArgument) as info:
        Expression(text)
    msg = str(info.value)
    assert fragment in msg
    assert "e.g. 'max+10'" in msg or "more than 200" in msg


def test_expression_never_evals():
    # A name outside the grammar is rejected before anything could run.
    with pytest.raises(InvalidArgument, match="unknown name 'open'"):
        SetLogit(" a", to="open")


# -- construction checks ---------------------------------------------------------------
@pytest.mark.parametrize("make, fragment", [
    (lambda: SetLogit(" a", to=float("nan")), "to=nan: `to` must be a finite number or -inf"),
    (lambda: SetLogit(" a", to=True), "to=True: `to` must be a number"),
    (lambda: SetLogit(" a", to="max+"), "SetLogit: to='max+': the expression ends too early"),
    (lambda: SetLogit("", to=1), "token='': the empty string is not a token"),
    (lambda: SetLogit(1.5, to=1), "token=1.5: `token` must be a token string"),
    (lambda: AddLogit(" a", amount=float("inf")), "amount=inf: `amount` must be a finite number"),
    (lambda: ScaleLogit(" a", factor="2"), "factor='2': `factor` must be a number"),
    (lambda: BanTokens([]), "tokens=[]: `tokens` must be a token or a non-empty list"),
    (lambda: SetLogit(" a", to=1, positions="first"), "positions='first': use 'all', 'last'"),
    (lambda: SetLogit(" a", to=1, positions=[]), "positions=[]: use 'all', 'last', an index"),
    (lambda: SetLogit(" a", to=1, positions=[1.5]), "positions=[1.5]: every index must be an int"),
    (lambda: SetLogit(" a", to=1, positions={"tok": " a"}), "a token match is written"),
    (lambda: ZeroAblate("blocks.0.hook_z", heads=[-1]), "heads=[-1]: `heads` must be None"),
    (lambda: ZeroAblate("blocks.0.mlp.hook_post", neurons="3"), "neurons='3'"),
    (lambda: ZeroAblate(""), "hook='': `hook` must be a hook point name"),
    (lambda: MeanAblate("blocks.0.hook_resid_pre", reference=[]), "reference=[]: give a non-empty"),
    (lambda: MeanAblate("blocks.0.hook_resid_pre", reference=["a", ""]), "reference[1]=''"),
    (lambda: Steer("blocks.0.hook_resid_pre"), "give vector=[...] or both positive= and negative="),
    (lambda: Steer("blocks.0.hook_resid_pre", vector=[1.0], positive="a", negative="b"),
     "give either vector=... or positive=/negative= prompts, not both"),
    (lambda: Steer("blocks.0.hook_resid_pre", vector=[1.0, float("nan")]), "vector[1]=nan"),
    (lambda: Scale("blocks.0.hook_resid_pre", factor=None), "factor=None"),
    (lambda: Patch("blocks.0.hook_resid_pre", source=""), "source='': `source` must be a non-empty"),
])
def test_construction_errors_teach(make, fragment):
    with pytest.raises(InvalidArgument) as info:
        make()
    assert fragment in str(info.value)


def test_normalized_fields():
    assert SetLogit(" a", to=10) == SetLogit(" a", to=10.0)
    assert SetLogit(" a", to=1, positions=3).positions == (3,)
    assert SetLogit(" a", to=1, positions={"token": " b"}).positions == Match(" b")
    assert BanTokens(" a").tokens == (" a",)
    assert Steer("h", vector=torch.tensor([1.0, 2.0])).vector == (1.0, 2.0)
    assert ZeroAblate("h", heads=2).heads == (2,)
    hash(SetLogit(" a", to="max+10", positions=[0, -1]))  # frozen and hashable


def test_import_does_not_import_torch():
    code = ("import logitprobe.interventions as li, sys; li.from_dict({'kind': 'ban_tokens', "
            "'tokens': [' a']}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- dict / JSON / YAML ----------------------------------------------------------------
def test_to_dict_omits_defaults_and_reads_back():
    spec = SetLogit(" coffee", to="max+10")
    assert to_dict(spec) == {"kind": "set_logit", "token": " coffee", "to": "max+10"}
    steer = Steer("blocks.3.hook_resid_pre", coefficient=4, positive="Love", negative="Hate",
                  positions={"token": " milk"})
    assert steer.to_dict() == {"kind": "steer", "hook": "blocks.3.hook_resid_pre",
                               "coefficient": 4.0, "positive": "Love", "negative": "Hate",
                               "positions": {"token": " milk"}}
    assert from_dict(steer.to_dict()) == steer


@pytest.mark.parametrize("data, fragment", [
    ({"kind": "set_logits", "token": " a", "to": 1},
     "kind='set_logits': unknown intervention kind (did you mean 'set_logit'?)"),
    ({"token": " a"}, "missing field 'kind'"),
    ({"kind": "set_logit", "token": " a", "to": 1, "postions": "all"},
     "set_logit: unknown field 'postions' (did you mean 'positions'?); set_logit takes token, to, "
     "positions"),
    ({"kind": "set_logit", "token": " a"}, "set_logit: missing field 'to'"),
    ([1, 2], "an intervention must be a mapping with a 'kind'"),
])
def test_from_dict_errors_teach(data, fragment):
    with pytest.raises(InvalidArgument) as info:
        from_dict(data)
    assert fragment in str(info.value)


def test_yaml_file_errors_name_file_and_field(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("interventions:\n  - kind: set_logit\n    token: ' coffee'\n    to: max+10\n"
                    "  - kind: zero_ablate\n    hook: blocks.0.attn.hook_z\n    head: [1]\n")
    with pytest.raises(InvalidArgument) as info:
        load_specs(path)
    assert str(info.value).startswith(f"{path}: interventions[1]: zero_ablate: unknown field "
                                      "'head' (did you mean 'heads'?)")
    path.write_text("interventions:\n  - kind: set_logit\n    token: ' a'\n    to: max+\n")
    with pytest.raises(InvalidArgument, match=r"exp.yaml: interventions\[0\]: SetLogit: to='max\+'"):
        load_specs(path)
    path.write_text("intervention:\n  - kind: ban_tokens\n    tokens: [' a']\n")
    with pytest.raises(InvalidArgument, match="unknown top-level field 'intervention' "
                                              r"\(did you mean 'interventions'\?\)"):
        load_specs(path)
    path.write_text("interventions: [kind: : :")
    with pytest.raises(InvalidArgument, match=r"exp.yaml: invalid YAML \(line 1"):
        load_specs(path)
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_specs(tmp_path / "missing.yaml")
    with pytest.raises(InvalidArgument, match="must be the path of a .yaml or .json file"):
        coerce("max+10")
    with pytest.raises(InvalidArgument, match="expected a spec"):
        coerce(42)


def test_plain_list_yaml_and_json_files(tmp_path):
    specs = [BanTokens([" a", 7]), ZeroAblate("blocks.0.attn.hook_z", heads=[0, 2])]
    (tmp_path / "l.yaml").write_text(
        "- {kind: ban_tokens, tokens: [' a', 7]}\n"
        "- {kind: zero_ablate, hook: blocks.0.attn.hook_z, heads: [0, 2]}\n")
    assert load_specs(tmp_path / "l.yaml") == specs
    dump_specs(specs, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())[0] == {"kind": "ban_tokens",
                                                                "tokens": [" a", 7]}
    assert load_specs(tmp_path / "s.json") == specs
    assert coerce(str(tmp_path / "s.json")) == tuple(specs)
    assert coerce({"interventions": [to_dict(s) for s in specs]}) == tuple(specs)


# -- the Hypothesis round trip ---------------------------------------------------------
_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
_text = st.text(min_size=1, max_size=12)
_token = st.one_of(_text, st.integers(0, 50_000))
_positions = st.one_of(
    st.sampled_from(["all", "last"]),
    st.lists(st.integers(-64, 64), min_size=1, max_size=4).map(tuple),
    _token.map(Match),
)
_idx = st.one_of(st.none(), st.lists(st.integers(0, 4000), min_size=1, max_size=4).map(tuple))
_hook = st.sampled_from(["blocks.0.hook_resid_pre", "blocks.3.attn.hook_z", "hook_embed",
                         "blocks.1.mlp.hook_post"])
_expr = st.sampled_from(["max+10", "min", "mean-2", "logit*2", "(max+min)/2", "-std"])
_prompts = st.lists(_text, min_size=1, max_size=3).map(tuple)

specs = st.one_of(
    st.builds(SetLogit, _token, st.one_of(_finite, _expr, st.just(float("-inf"))), _positions),
    st.builds(AddLogit, _token, _finite, _positions),
    st.builds(ScaleLogit, _token, _finite, _positions),
    st.builds(BanTokens, st.lists(_token, min_size=1, max_size=3).map(tuple), _positions),
    st.builds(ZeroAblate, _hook, _positions, _idx, _idx),
    st.builds(MeanAblate, _hook, _prompts, _positions, _idx, _idx),
    st.builds(Scale, _hook, _finite, _positions, _idx, _idx),
    st.builds(Steer, _hook, _finite, st.lists(_finite, min_size=1, max_size=5).map(tuple),
              st.none(), st.none(), _positions),
    st.builds(Steer, _hook, _finite, st.none(), _text, _text, _positions),
    st.builds(Patch, _hook, _text, _positions, _idx, _idx),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(specs, min_size=1, max_size=4))
def test_round_trip_dict_json_yaml(tmp_path_factory, batch):
    for spec in batch:
        assert from_dict(spec.to_dict()) == spec
        assert from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert from_json(to_json(batch)) == batch
    assert from_yaml(to_yaml(batch)) == batch
    path = tmp_path_factory.mktemp("rt") / "specs.yaml"
    dump_specs(batch, path)
    assert load_specs(path) == batch
    # equal specs have equal canonical dicts (what the cache key is made of)
    assert [s.to_dict() for s in from_yaml(to_yaml(batch))] == [s.to_dict() for s in batch]
