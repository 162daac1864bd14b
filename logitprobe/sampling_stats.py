"""How often is a token sampled? Frequencies, confidence intervals and tests.

Sampling is random, so a claim such as "' coffee' is sampled at least 30% of the
time" can only be checked up to a chosen confidence. :func:`frequency_check`
does it with a two-sided binomial confidence interval at level ``confidence``:

- "at least p" fails only when the whole interval lies below ``p``;
- "at most p" fails only when the whole interval lies above ``p``;
- "between a and b" (both bounds) fails when either happens.

**Guarantee** (``method="exact"``, Clopper-Pearson): if the claim is true of the
true sampling probability, the check fails with probability at most
``1 - confidence``; for a one-sided claim at most ``(1 - confidence) / 2``. The
exact interval is conservative, so this holds for every ``n`` and ``p``
(``tests/test_sampling.py`` verifies it by exact summation over outcomes).
``method="wilson"`` gives shorter intervals, but its coverage is only
approximately ``confidence`` (it can dip below it for small ``n`` or ``p`` near
0 or 1), so its guarantee is approximate too.

Pure Python (no torch, no scipy): the regularized incomplete beta and gamma
functions are computed by their continued fractions / series.

>>> frequency_check(312, 1000, at_least=0.3).passed
True
>>> frequency_check(250, 1000, at_least=0.3).passed
False
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping, Sequence

from .errors import InvalidArgument

__all__ = ["ChiSquareResult", "FrequencyCheck", "binomial_interval", "chi_square_test",
           "frequency_check"]

METHODS = ("exact", "wilson")


# -- special functions ----------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The x in [0, 1] with ``I_x(a, b) = q`` (bisection: monotone, 1e-15 wide)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def gammaincc(a: float, x: float) -> float:
    """Regularized upper incomplete gamma function ``Q(a, x)`` for ``a > 0``."""
    if x <= 0.0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # series for P(a, x)
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300  # continued fraction for Q(a, x) (modified Lentz)
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(log_front) * h


# -- validation ------------------------------------------------------------------------
def _count(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a non-negative int")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a non-negative int") from None
    if value < 0:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a non-negative int")
    return value


def _confidence(confidence: Any) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0.0 < float(confidence) < 1.0:
        raise InvalidArgument(f"confidence={confidence!r}: `confidence` must be a number strictly "
                              "between 0 and 1 (try confidence=0.99)")
    return float(confidence)


def _method(method: Any) -> str:
    if method not in METHODS:
        raise InvalidArgument(f"method={method!r}: `method` must be one of {METHODS!r} "
                              "('exact' is Clopper-Pearson, with a guaranteed false-failure rate)")
    return method


def _probability(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= float(value) <= 1.0:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a probability in [0, 1] "
                              f"(e.g. {name}=0.25)")
    return float(value)


# -- intervals -------------------------------------------------------------------------
def binomial_interval(count: int, n: int, *, confidence: float = 0.95,
                      method: str = "exact") -> tuple[float, float]:
    """Two-sided confidence interval for a probability from ``count`` successes in ``n`` trials.

    ``method="exact"``: Clopper-Pearson, coverage >= ``confidence`` for every true p.
    ``method="wilson"``: Wilson score interval, coverage ~``confidence`` (shorter).

    >>> [round(x, 4) for x in binomial_interval(30, 100, confidence=0.95)]
    [0.2124, 0.3998]
    """
    count, n = _count(count, "count"), _count(n, "n")
    if n == 0:
        raise InvalidArgument("n=0: an interval needs at least one trial (n >= 1)")
    if count > n:
        raise InvalidArgument(f"count={count!r}: `count` cannot exceed n={n}")
    confidence, method = _confidence(confidence), _method(method)
    alpha = 1.0 - confidence
    if method == "exact":
        low = 0.0 if count == 0 else _beta_quantile(alpha / 2, count, n - count + 1)
        high = 1.0 if count == n else _beta_quantile(1 - alpha / 2, count + 1, n - count)
        return low, high
    z = NormalDist().inv_cdf(1 - alpha / 2)
    denom = n + z * z
    center = (count + z * z / 2) / denom
    half = z / denom * math.sqrt(count * (n - count) / n + z * z / 4)
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class FrequencyCheck:
    """The verdict on "sampled with frequency at least/at most p", with its evidence.

    ``passed`` is False only when the confidence interval excludes the claim (see the
    module docstring for the false-failure guarantee). ``confirmed`` is the stronger
    statement that the interval lies entirely inside the claimed range.
    """

    token: str | None
    count: int
    n: int
    at_least: float | None
    at_most: float | None
    confidence: float
    method: str
    low: float
    high: float

    @property
    def frequency(self) -> float:
        return self.count / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def passed(self) -> bool:
        """False when the data contradict the claim at this confidence."""
        if self.at_least is not None and self.high < self.at_least:
            return False
        if self.at_most is not None and self.low > self.at_most:
            return False
        return True

    @property
    def confirmed(self) -> bool:
        """True when the whole interval lies inside the claimed range."""
        return ((self.at_least is None or self.low >= self.at_least)
                and (self.at_most is None or self.high <= self.at_most))

    @property
    def claim(self) -> str:
        parts = []
        if self.at_least is not None:
            parts.append(f"at least {self.at_least:.4g}")
        if self.at_most is not None:
            parts.append(f"at most {self.at_most:.4g}")
        who = repr(self.token) if self.token is not None else "the outcome"
        return f"{who} is sampled with frequency {' and '.join(parts)}"

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"{verdict}: {self.claim}",
                 f"  observed {self.count}/{self.n} = {self.frequency:.4f}; "
                 f"{self.confidence:.4g} {self.method} interval [{self.low:.4f}, {self.high:.4f}]"]
        if not self.passed:
            lines.append(f"  a true claim fails this check with probability at most "
                         f"{1 - self.confidence:.3g}"
                         + (" (approximately: Wilson)" if self.method == "wilson" else ""))
        elif not self.confirmed:
            lines.append("  not contradicted, but not confirmed either: more samples would narrow "
                         "the interval")
        return "\n".join(lines)


def frequency_check(count: int, n: int, *, at_least: float | None = None,
                    at_most: float | None = None, confidence: float = 0.99,
                    method: str = "exact", token: str | None = None) -> FrequencyCheck:
    """Check "sampled with frequency at least ``at_least`` / at most ``at_most``".

    >>> print(frequency_check(250, 1000, at_least=0.3, token=" coffee"))
    FAILED: ' coffee' is sampled with frequency at least 0.3
      observed 250/1000 = 0.2500; 0.99 exact interval [0.2155, 0.2869]
      a true claim fails this check with probability at most 0.01
    """
    lo_claim = _probability(at_least, "at_least")
    hi_claim = _probability(at_most, "at_most")
    if lo_claim is None and hi_claim is None:
        raise InvalidArgument("at_least=None, at_most=None: give at least one bound, "
                              "e.g. frequency_check(count, n, at_least=0.3)")
    if lo_claim is not None and hi_claim is not None and lo_claim > hi_claim:
        raise InvalidArgument(f"at_least={at_least!r}, at_most={at_most!r}: `at_least` must "
                              "not exceed `at_most`")
    low, high = binomial_interval(count, n, confidence=confidence, method=method)
    return FrequencyCheck(token=token, count=int(count), n=int(n), at_least=lo_claim,
                          at_most=hi_claim, confidence=float(confidence), method=method,
                          low=low, high=high)


# -- goodness of fit -------------------------------------------------------------------
@dataclass(frozen=True)
class ChiSquareResult:
    """Pearson's chi-square goodness-of-fit test of observed counts against probabilities."""

    statistic: float
    dof: int
    p_value: float
    categories: int  # after pooling the rare ones
    n: int

    def rejects(self, false_alarm: float = 0.001) -> bool:
        """True when the counts are implausible under the probabilities at this level."""
        return self.p_value < false_alarm

    def __str__(self) -> str:
        return (f"chi-square = {self.statistic:.3f} with {self.dof} degrees of freedom "
                f"({self.categories} categories, n={self.n}): p = {self.p_value:.4g}")


def chi_square_test(observed: Mapping[int, int] | Sequence[int], probs: Sequence[float] | Any,
                    *, min_expected: float = 5.0) -> ChiSquareResult:
    """Pearson's chi-square test that ``observed`` counts were drawn from ``probs``.

    ``observed`` maps category index -> count (or is a sequence of counts aligned with
    ``probs``). Categories whose expected count ``n * p`` is below ``min_expected`` are
    pooled into one (the chi-square approximation needs ~5 per cell). A count in a
    category of probability 0 makes the p-value 0: that sample is impossible.
    The p-value is the survival function of the chi-square distribution.
    """
    p = [float(x) for x in (probs.tolist() if hasattr(probs, "tolist") else probs)]
    if isinstance(observed, Mapping):
        counts = dict(observed)
    else:
        counts = {i: int(c) for i, c in enumerate(observed) if c}
    n = sum(counts.values())
    if n == 0:
        raise InvalidArgument("observed: there are no observations (all counts are 0)")
    total = sum(p)
    if not math.isfinite(total) or total <= 0 or any(x < 0 for x in p):
        raise InvalidArgument("probs: must be non-negative with a positive finite sum")
    for k in counts:
        if not 0 <= k < len(p):
            raise InvalidArgument(f"observed: category {k!r} is outside probs (size {len(p)})")
    p = [x / total for x in p]
    if any(c > 0 and p[k] == 0.0 for k, c in counts.items()):
        return ChiSquareResult(math.inf, 0, 0.0, 0, n)
    cells: list[tuple[float, int]] = []  # (expected, observed)
    pooled_e, pooled_o = 0.0, 0
    for k, pk in enumerate(p):
        if pk == 0.0:
            continue
        e = n * pk
        if e < min_expected:
            pooled_e += e
            pooled_o += counts.get(k, 0)
        else:
            cells.append((e, counts.get(k, 0)))
    if pooled_e > 0:
        cells.append((pooled_e, pooled_o))
    if len(cells) < 2:
        return ChiSquareResult(0.0, 0, 1.0, len(cells), n)
    stat = sum((o - e) ** 2 / e for e, o in cells)
    dof = len(cells) - 1
    return ChiSquareResult(stat, dof, gammaincc(dof / 2, stat / 2), len(cells), n)
