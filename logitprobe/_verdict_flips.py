"""Verdict flips: a behavioural suite run under two models, and whether the flips are chance.

:func:`suite_flips` runs every case of a suite under a baseline and a candidate and
pairs the verdicts; :class:`Flips` counts the regressions and fixes and tests them
with an exact McNemar test (:func:`mcnemar_exact`). Re-exported by
:mod:`logitprobe.model_diff`, the public path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ._provenance import side_labels
from ._text import clip
from .behaviour import Suite, load_suite, run_suite
from .errors import InvalidArgument
from .sampling_stats import betainc

__all__ = ["CaseOutcome", "Flips", "failure_text", "mcnemar_exact", "suite_flips"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under "no difference", each of the ``n = b + c`` flips goes either way with
    probability 1/2: ``p = min(1, 2 * P(X <= min(b, c)))``, ``X ~ Binomial(n, 1/2)``
    (the binomial CDF by the regularized incomplete beta function of
    :mod:`logitprobe.sampling_stats`).

    >>> round(mcnemar_exact(7, 1), 4), mcnemar_exact(0, 0)  # 2 * (1 + 8) / 2**8 = 0.0703125
    (0.0703, 1.0)
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{name}={value!r}: `{name}` must be a count (an int >= 0)")
    n, low = b + c, min(b, c)
    if n == 0 or 2 * low == n:
        return 1.0
    cdf = betainc(n - low, low + 1, 0.5)  # P(X <= low) = I_{1/2}(n - low, low + 1)
    return min(1.0, 2.0 * cdf)


@dataclass(frozen=True)
class CaseOutcome:
    """One behavioural case under both models (``message``: the first failure line)."""

    name: str
    baseline_passed: bool
    candidate_passed: bool
    message: str | None = None

    @property
    def flipped(self) -> bool:
        return self.baseline_passed != self.candidate_passed


class Flips:
    """Verdict flips of a behavioural suite run under a baseline and a candidate model.

    ``regressions``: passed under the baseline, fail under the candidate;
    ``fixes``: the reverse. ``p_value`` is the exact McNemar test of "the models
    pass and fail equally often": small (below 0.05, say) means the flips
    lean one way more than chance would explain.
    """

    def __init__(self, cases: Sequence[CaseOutcome], *, baseline: str, candidate: str):
        self.cases = tuple(cases)
        self.baseline = baseline
        self.candidate = candidate

    @property
    def regressions(self) -> list[CaseOutcome]:
        return [c for c in self.cases if c.baseline_passed and not c.candidate_passed]

    @property
    def fixes(self) -> list[CaseOutcome]:
        return [c for c in self.cases if c.candidate_passed and not c.baseline_passed]

    @property
    def p_value(self) -> float:
        return mcnemar_exact(len(self.regressions), len(self.fixes))

    def verdict(self) -> str:
        r, f, n = len(self.regressions), len(self.fixes), len(self.cases)
        passed_b = sum(c.baseline_passed for c in self.cases)
        passed_c = sum(c.candidate_passed for c in self.cases)
        p = self.p_value
        meaning = ("no flips" if r + f == 0 else
                   "more than chance would explain" if p < 0.05 else
                   "could be noise (p >= 0.05)")
        return (f"{n} cases: {passed_b} pass under {self.baseline}, {passed_c} under "
                f"{self.candidate}; {r} regression(s), {f} fix(es); exact McNemar p = {p:.4g}: "
                f"{meaning}")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "candidate": self.candidate, "cases": len(self.cases),
                "regressions": [c.name for c in self.regressions],
                "fixes": [c.name for c in self.fixes], "p_value": self.p_value}

    def __str__(self) -> str:
        lines = [self.verdict()]
        flipped = [c for c in self.cases if c.flipped]
        if flipped:
            head = f"  {'case':<40} | {'baseline':>8} | {'candidate':>9} | candidate's failure"
            lines += [head, "  " + "-" * (len(head) - 2)]
            for c in flipped:
                msg = clip((c.message or "").splitlines()[0] if c.message else "", 60)
                lines.append(f"  {clip(c.name, 40):<40} | "
                             f"{'pass' if c.baseline_passed else 'FAIL':>8} | "
                             f"{'pass' if c.candidate_passed else 'FAIL':>9} | {msg}")
        return "\n".join(lines)


def suite_flips(baseline: Any, candidate: Any, suite: Any, *, baseline_interventions: Any = None,
                candidate_interventions: Any = None,
                labels: tuple[str, str] | None = None) -> Flips:
    """Run a behavioural suite (a file or a :class:`~logitprobe.behaviour.Suite`) under both models.

    Skipped cases are left out; ``*_interventions`` apply to every query of that
    side (on top of a case's own interventions).
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    active = Suite(suite.source, tuple(c for c in suite.cases if not c.skip), suite.model)
    outcomes = []
    for probe, iv in ((baseline, baseline_interventions), (candidate, candidate_interventions)):
        if iv:
            with probe.intervene(*_as_list(iv)):
                outcomes.append(run_suite(probe, active))
        else:
            outcomes.append(run_suite(probe, active))
    cases = [CaseOutcome(case.name, eb is None, ec is None,
                         None if ec is None else failure_text(case, ec))
             for (case, eb), (_, ec) in zip(*outcomes)]
    names = side_labels(labels, baseline, candidate, baseline_interventions,
                        candidate_interventions)
    return Flips(cases, baseline=names[0], candidate=names[1])


def failure_text(case: Any, exc: BaseException) -> str:
    """A case's failure message without the ``file, case N 'name', `` prefix the table has."""
    text, prefix = str(exc), f"{case.where}, "
    return text[len(prefix):] if text.startswith(prefix) else text


def _as_list(interventions: Any) -> list:
    return list(interventions) if isinstance(interventions, (list, tuple)) else [interventions]
