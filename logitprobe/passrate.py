"""Pass rates: an expectation over a group of cases, "holds for at least 90% of them".

A model is rarely right on every paraphrase; a suite states the rate it must
reach. :func:`pass_rate` runs a check on every case and counts; with
``confidence=`` it also states the exact (Clopper-Pearson) one-sided lower
bound on the true rate, computed with
:func:`logitprobe.sampling_stats.binomial_interval`, and requires that bound to
reach ``at_least``. :func:`assert_pass_rate` raises a report that lists the
failing cases worst first (by the failure's ``severity`` when the check sets
one, see :mod:`logitprobe.invariance`) and says how many had to pass.

>>> from logitprobe.templates import expand
>>> cases = expand("{a}", lexicons={"a": ["1", "2", "3", "4"]})
>>> def check(case):
...     if case.prompt == "4":
...         raise AssertionError("four is not allowed")
>>> result = pass_rate(cases, check, at_least=0.7)
>>> result.ok, result.passed, result.n, result.needed
(True, 3, 4, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ._evidence import LogitAssertionError, short
from .errors import InvalidArgument
from .sampling_stats import binomial_interval

__all__ = ["CaseOutcome", "PassRate", "assert_pass_rate", "pass_rate"]

SHOWN = 10  # failing cases whose evidence the report shows (the rest by id)
EVIDENCE_LINES = 8  # lines of each failure's evidence in the report


@dataclass(frozen=True)
class CaseOutcome:
    """One case of a pass-rate group: its id, the failure (None if it passed), how bad."""

    id: str
    error: BaseException | None = None
    severity: float | None = None

    @property
    def passed(self) -> bool:
        return self.error is None


def lower_bound(passed: int, n: int, confidence: float) -> float:
    """The exact one-sided lower confidence bound on a rate from ``passed`` of ``n``.

    The lower end of the two-sided Clopper-Pearson interval at ``2 * confidence - 1``.
    """
    return binomial_interval(passed, n, confidence=2 * confidence - 1, method="exact")[0]


@dataclass(frozen=True)
class PassRate:
    """The outcome of a group: rate, optional lower bound, the verdict and the report."""

    outcomes: tuple[CaseOutcome, ...]
    at_least: float
    confidence: float | None = None
    name: str = "cases"

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def rate(self) -> float:
        return self.passed / self.n

    @property
    def lower(self) -> float | None:
        """The lower confidence bound on the rate (None without ``confidence``)."""
        if self.confidence is None:
            return None
        return lower_bound(self.passed, self.n, self.confidence)

    @property
    def ok(self) -> bool:
        value = self.rate if self.confidence is None else self.lower
        return value >= self.at_least - 1e-12

    @property
    def needed(self) -> int | None:
        """How many of the ``n`` cases must pass for the group to pass (None: even all fail to)."""
        if self.confidence is None:
            return min(self.n, max(0, math.ceil(self.at_least * self.n - 1e-9)))
        for k in range(math.ceil(self.at_least * self.n - 1e-9), self.n + 1):
            if lower_bound(k, self.n, self.confidence) >= self.at_least - 1e-12:
                return k
        return None

    def failures(self) -> list[CaseOutcome]:
        """The failing cases, worst first (known severity, largest first, then in order)."""
        failed = [o for o in self.outcomes if not o.passed]
        return sorted(failed, key=lambda o: (o.severity is None, -(o.severity or 0.0)))

    def verdict(self) -> str:
        head = (f"{self.name}: {self.passed} of {self.n} passed ({self.rate:.1%}), expected at "
                f"least {self.at_least:.0%}")
        if self.confidence is not None:
            head += (f" with {self.confidence:.0%} confidence (exact lower bound "
                     f"{self.lower:.1%})")
        need = self.needed
        if self.ok:
            return head
        if need is None:
            return head + (f"; even {self.n} of {self.n} would not reach it at this "
                           "confidence: add cases or lower the confidence")
        return head + f"; {need} had to pass ({need - self.passed} more)"

    def __str__(self) -> str:
        lines = [self.verdict()]
        failures = self.failures()
        if failures:
            lines.append(f"failing cases, worst first ({len(failures)}):")
        for o in failures[:SHOWN]:
            sev = "" if o.severity is None else f" (severity {o.severity:.4g})"
            text = str(o.error).splitlines() or [type(o.error).__name__]
            lines.append(f"- {o.id}{sev}: {text[0]}")
            lines += ["    " + line for line in text[1:1 + EVIDENCE_LINES]]
            if len(text) > 1 + EVIDENCE_LINES:
                lines.append("    ...")
        if len(failures) > SHOWN:
            rest = ", ".join(o.id for o in failures[SHOWN:SHOWN + 40])
            more = len(failures) - SHOWN - 40
            lines.append(f"and {len(failures) - SHOWN} more: {rest}"
                         + (f", ... ({more} not named)" if more > 0 else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"PassRate(name={self.name!r}, passed={self.passed}, n={self.n}, "
                f"at_least={self.at_least}, ok={self.ok})")


def _check_args(at_least: Any, confidence: Any) -> tuple[float, float | None]:
    if isinstance(at_least, bool) or not isinstance(at_least, (int, float)) \
            or not 0 < at_least <= 1:
        raise InvalidArgument(f"at_least={at_least!r}: `at_least` must be a rate in (0, 1], "
                              "e.g. at_least=0.9")
    if confidence is not None and (isinstance(confidence, bool)
                                   or not isinstance(confidence, (int, float))
                                   or not 0.5 < confidence < 1):
        raise InvalidArgument(f"confidence={confidence!r}: `confidence` must be in (0.5, 1), "
                              "e.g. confidence=0.95 (or None for the observed rate)")
    return float(at_least), None if confidence is None else float(confidence)


def outcome(case_id: str, error: BaseException | None,
            severity: Callable[[Any, BaseException], float] | None = None,
            case: Any = None) -> CaseOutcome:
    """A :class:`CaseOutcome`, with the severity from ``severity(case, error)`` or the error."""
    if error is None:
        return CaseOutcome(case_id)
    value = severity(case, error) if severity is not None else getattr(error, "severity", None)
    return CaseOutcome(case_id, error, None if value is None else float(value))


def pass_rate(cases: Sequence[Any], check: Callable[[Any], Any], *, at_least: float,
              confidence: float | None = None, probe: Any = None,
              severity: Callable[[Any, BaseException], float] | None = None,
              name: str = "cases") -> PassRate:
    """Run ``check(case)`` on every case and count those that do not raise an AssertionError.

    A check fails a case by raising ``AssertionError`` (every ``assert_*`` helper's
    ``LogitAssertionError`` is one); any other exception is a bug and propagates.
    ``probe``: compute every case's prompts (``case.prompts``, or ``case.prompt``)
    in one batched call first, so the checks' ``probe.next_token`` hit the cache.
    ``severity(case, error)`` orders the failures (default: ``error.severity``).
    """
    at_least, confidence = _check_args(at_least, confidence)
    cases = list(cases)
    if not cases:
        raise InvalidArgument("cases=[]: a pass rate needs at least one case")
    if not callable(check):
        raise InvalidArgument(f"check={short(repr(check), 60)}: give a function of one case "
                              "that raises AssertionError when the case fails")
    if probe is not None:
        prompts = list(dict.fromkeys(p for c in cases for p in
                                     getattr(c, "prompts", (getattr(c, "prompt", None),))
                                     if isinstance(p, str)))
        if prompts:
            probe.next_token(prompts)  # one batched pass; the checks read the engine's cache
    outcomes = []
    for i, case in enumerate(cases):
        case_id = str(getattr(case, "id", None) or getattr(case, "name", None) or i)
        try:
            check(case)
            outcomes.append(CaseOutcome(case_id))
        except AssertionError as exc:
            outcomes.append(outcome(case_id, exc, severity, case))
    return PassRate(tuple(outcomes), at_least, confidence, name)


def assert_pass_rate(cases: Sequence[Any], check: Callable[[Any], Any], *, at_least: float,
                     confidence: float | None = None, probe: Any = None,
                     severity: Callable[[Any, BaseException], float] | None = None,
                     name: str = "cases") -> PassRate:
    """:func:`pass_rate`, raising :class:`~logitprobe.LogitAssertionError` when it is too low.

    The report: the verdict (observed rate, bound, how many had to pass), then
    the failing cases worst first with the first lines of their evidence.
    """
    __tracebackhide__ = True
    result = pass_rate(cases, check, at_least=at_least, confidence=confidence, probe=probe,
                       severity=severity, name=name)
    if result.ok:
        return result
    text = str(result).split("\n", 1)
    raise LogitAssertionError(text[0], text[1] if len(text) > 1 else "")
