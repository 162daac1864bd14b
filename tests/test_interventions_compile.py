"""The intervention compiler knows no spec kind: each kind is a spec and a plan.

A toy spec kind defined here, with its plan and nothing else, compiles and edits
the forward exactly as a hand-written TransformerLens hook does; the compiler
checks every spec before it builds any; a compiled plan keeps no state between
forwards except its ``fired`` count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from logitprobe.errors import LogitProbeError
from logitprobe.interventions import (AddLogit, BanTokens, Match, MeanAblate, Patch, Scale,
                                      ScaleLogit, SetLogit, Spec, Steer, ZeroAblate)
from logitprobe.interventions.compile import ActivationPlan, compile_specs
from logitprobe.interventions.plans import _PLANS
from logitprobe.interventions.specs import SPEC_TYPES

PROMPT = "The quick brown fox jumps over the lazy dog"
HOOK = "blocks.0.hook_resid_post"


# -- a new spec kind: its spec and its plan, nothing else --------------------------------
@dataclass(frozen=True)
class Negate(Spec):
    """Toy kind: multiply the activation by -1 (optionally fail the model check)."""

    kind: ClassVar[str] = "negate"
    hook: str
    positions: object = "all"
    reject: bool = False


CALLS: list[tuple[str, Negate]] = []


class _Negate(ActivationPlan[Negate], spec=Negate):
    @classmethod
    def check(cls, probe, spec, site):
        CALLS.append(("check", spec))
        if spec.reject:
            raise LogitProbeError(f"{spec!r}: rejected")

    @classmethod
    def build(cls, probe, spec, site):
        CALLS.append(("build", spec))
        return cls(spec, site)

    def edit(self, x, where):
        return torch.where(self.selection(x, where), -x, x)


@dataclass(frozen=True)
class Orphan(Spec):
    """A spec kind nobody wrote a plan for."""

    kind: ClassVar[str] = "orphan"
    hook: str = HOOK
    positions: object = "all"


def test_a_new_kind_needs_only_its_spec_and_its_plan(tiny):
    def negate_last(a, hook):
        a = a.clone()
        a[:, -1] = -a[:, -1]
        return a

    ids = torch.tensor([tiny.encode(PROMPT)])
    with torch.no_grad():
        ref = tiny.model.run_with_hooks(ids, fwd_hooks=[(HOOK, negate_last)])[0, -1]
    clean = tiny.next_token(PROMPT).logits
    nt = tiny.next_token(PROMPT, interventions=[Negate(HOOK, positions=(-1,))])
    assert not torch.allclose(nt.logits, clean)
    torch.testing.assert_close(nt.logits, ref, atol=1e-4, rtol=1e-4)


def test_every_spec_is_checked_before_any_plan_is_built(tiny):
    a, b = Negate(HOOK), Negate("blocks.1.hook_resid_pre")
    CALLS.clear()
    compile_specs(tiny, [a, b])
    assert CALLS == [("check", a), ("check", b), ("build", a), ("build", b)]
    CALLS.clear()
    bad = Negate(HOOK, reject=True)
    with pytest.raises(LogitProbeError, match="rejected"):
        compile_specs(tiny, [a, bad])
    assert CALLS == [("check", a), ("check", bad)]  # nothing built


def test_each_spec_kind_has_exactly_one_plan():
    kinds = list(SPEC_TYPES.values())
    assert all(k in _PLANS for k in kinds), [k for k in kinds if k not in _PLANS]
    plans = [_PLANS[k] for k in kinds]
    assert len(set(plans)) == len(plans)  # no plan serves two kinds
    with pytest.raises(TypeError, match="Scale specs already compile to _Scale"):
        class _Again(ActivationPlan[Scale], spec=Scale):
            pass
    assert _PLANS[Scale].__name__ == "_Scale"


def test_a_spec_without_a_plan_is_refused_by_name(tiny):
    with pytest.raises(LogitProbeError, match="no plan compiles Orphan specs"):
        tiny.next_token(PROMPT, interventions=[Orphan()])


# -- plans are built complete and stay so ------------------------------------------------
ALL_KINDS = [
    SetLogit(" the", to="max+1"), AddLogit(" the", 2.0), ScaleLogit(" the", 0.5),
    BanTokens([" the"]), ZeroAblate(HOOK, heads=None, positions="last"),
    Scale("blocks.0.attn.hook_z", 0.5, heads=[1]),
    MeanAblate(HOOK, reference=["a b c"], positions={"token": " fox"}),
    Steer(HOOK, positive="I love it", negative="I hate it", positions=[-2, 1]),
    Patch(HOOK, source="The lazy dog", positions=[-1, 0, 5]),
]


def test_plans_keep_no_state_between_forwards_but_fired(tiny):
    compiled = compile_specs(tiny, ALL_KINDS)
    assert {type(s) for s in compiled.specs} == set(SPEC_TYPES.values())
    before = [dict(vars(p)) for p in compiled.plans]
    tiny.next_token([PROMPT, "The lazy dog jumps"], interventions=compiled)
    assert compiled.fired == (1,) * len(ALL_KINDS)
    for plan, old in zip(compiled.plans, before):
        new = dict(vars(plan))
        assert new.pop("fired") == old.pop("fired") + 1
        assert new.keys() == old.keys(), type(plan).__name__
        assert all(new[k] is old[k] for k in old), type(plan).__name__


def test_match_positions_are_resolved_once_per_plan(tiny):
    compiled = compile_specs(tiny, [ZeroAblate(HOOK, positions=Match(" fox"))])
    assert compiled.plans[0].site.match_id == tiny.token_id(" fox")
