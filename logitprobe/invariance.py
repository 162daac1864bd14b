"""Invariance and directional checks between a base case and its perturbed copy.

CheckList's INV and DIR tests on next-token distributions. Each helper takes the
base distribution first, then the perturbed one (as ``assert_prob_increases``
does), returns what it measured when the statement holds and otherwise raises
:class:`~logitprobe.LogitAssertionError` with both distributions as evidence.
Closeness in KL or total variation is :func:`~logitprobe.assert_close`; a
probability that rises or falls by more than ``by`` is
:func:`~logitprobe.assert_prob_increases` / ``assert_prob_decreases``.

A failure carries ``err.severity`` (how far from holding, in the check's own
unit) so pass-rate reports can list the worst failures first.

>>> base, typo = probe.next_token(["The capital of France is",
...                                "The captial of France is"])      # doctest: +SKIP
>>> assert_argmax_unchanged(base, typo).token                       # doctest: +SKIP
' Paris'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._checks import _check, _nt, _number, _target
from ._evidence import ROWS, prompt_line, report, require_single, table
from ._text import short
from .errors import InvalidArgument, LogitAssertionError

if TYPE_CHECKING:
    from .results import Candidate, NextToken

__all__ = ["assert_argmax_unchanged", "assert_prob_close", "assert_prob_within",
           "assert_rank_moves"]


def _fail(verdict: str, evidence: str, severity: float, hint: str | None = None
          ) -> LogitAssertionError:
    err = LogitAssertionError(verdict, evidence, hint)
    err.severity = float(severity)  # read by logitprobe.passrate to order failures
    return err


def _both(base: NextToken, nt: NextToken, marked: list[int], k: int = 5) -> str:
    return "\n".join([prompt_line(base, "base"), prompt_line(nt, "perturbed"),
                      table(base, k=k, marked=marked, title=f"top {k} (base):"),
                      table(nt, k=k, marked=marked, title=f"top {k} (perturbed):")])


def _pair(base: Any, nt: Any) -> tuple[NextToken, NextToken]:
    base, nt = _nt(base, "base"), _nt(nt, "nt")
    if base.vocab_size != nt.vocab_size:
        raise InvalidArgument(f"nt: its vocabulary has {nt.vocab_size} tokens, base's has "
                              f"{base.vocab_size}; compare distributions of one model")
    return base, nt


@_check
def assert_argmax_unchanged(base: NextToken, nt: NextToken) -> Candidate:
    """The most likely next token is the same after the perturbation (CheckList INV).

    Returns the (shared) argmax of ``nt``. ``err.severity`` on failure: how much
    more probable the new argmax is than the base argmax after the perturbation.
    """
    base, nt = _pair(base, nt)
    a, b = base.argmax, nt.argmax
    if a.id == b.id:
        return b
    moved = nt.candidate(a.id)
    raise _fail(f"the argmax changed from {a.token!r} (p={a.prob:.4g}) to {b.token!r} "
                f"(p={b.prob:.4g}); {a.token!r} is now rank {moved.rank} (p={moved.prob:.4g})",
                _both(base, nt, [a.id, b.id]), b.prob - moved.prob)


@_check
def assert_prob_within(base: NextToken, nt: NextToken, token: Any, tol: float) -> Candidate:
    """``token``'s probability after the perturbation is within ``tol`` of the base's.

    ``|p_nt(token) - p_base(token)| <= tol``; returns the token's candidate in ``nt``.
    """
    base, nt = _pair(base, nt)
    tol = _number(tol, "tol", low=0.0, high=1.0, example="tol=0.05")
    tb = require_single(base.vocab, _target(base, token), "prob_within")
    cb, cn = base.candidate(tb), nt.candidate(tb)
    change = cn.prob - cb.prob
    if abs(change) <= tol:
        return cn
    raise _fail(f"p({cn.token!r}) moved by {change:+.4g} ({cb.prob:.4g} -> {cn.prob:.4g}, "
                f"rank {cb.rank} -> {cn.rank}), more than tol={tol:g}",
                _both(base, nt, [tb]), abs(change) - tol)


@_check
def assert_rank_moves(base: NextToken, nt: NextToken, token: Any, *, by: int = 1,
                      direction: str = "up") -> Candidate:
    """``token``'s rank moves by at least ``by`` places, ``up`` (towards 1) or ``down`` (DIR).

    Returns the token's candidate in ``nt``.
    """
    base, nt = _pair(base, nt)
    if isinstance(by, bool) or not isinstance(by, int) or by < 1:
        raise InvalidArgument(f"by={by!r}: `by` must be an int >= 1 (places of rank)")
    if direction not in ("up", "down"):
        raise InvalidArgument(f"direction={short(direction, 30)}: must be 'up' (towards rank "
                              "1, more likely) or 'down'")
    tb = require_single(base.vocab, _target(base, token), "rank_moves")
    cb, cn = base.candidate(tb), nt.candidate(tb)
    moved = cb.rank - cn.rank if direction == "up" else cn.rank - cb.rank
    if moved >= by:
        return cn
    raise _fail(f"the rank of {cn.token!r} moved {direction} by {moved} (rank {cb.rank} -> "
                f"{cn.rank}, p {cb.prob:.4g} -> {cn.prob:.4g}), expected at least {by}",
                _both(base, nt, [tb]), by - moved)


@_check
def assert_prob_close(nt: NextToken, token: Any, value: float, *, abs: float | None = None,
                      rel: float | None = None) -> Candidate:
    """``token``'s probability is ``value`` within ``abs`` and/or ``rel`` (as math.isclose).

    Passes when ``|p - value| <= max(abs, rel * value)`` (a missing one counts 0).
    """
    nt = _nt(nt)
    value = _number(value, "value", low=0.0, high=1.0, example="value=0.5")
    if abs is None and rel is None:
        raise InvalidArgument("abs=None, rel=None: give a tolerance, e.g. "
                              "assert_prob_close(nt, ' Paris', 0.8, abs=0.05) or rel=0.1")
    a = 0.0 if abs is None else _number(abs, "abs", low=0.0, high=1.0, example="abs=0.05")
    r = 0.0 if rel is None else _number(rel, "rel", low=0.0, example="rel=0.1")
    target = _target(nt, token)
    tid = require_single(nt.vocab, target, "prob_close")
    c = nt.candidate(tid)
    tol = max(a, r * value)
    if _absolute(c.prob - value) <= tol:  # `abs` is the argument here
        return c
    raise _fail(f"{target.label()} has p={c.prob:.4g} after {short(nt.prompt, 80)}, expected "
                f"{value:g} +/- {tol:.4g} (rank {c.rank})",
                report(nt, rows=ROWS, marked=[tid]), _absolute(c.prob - value) - tol)


def _absolute(x: float) -> float:
    return x if x >= 0 else -x
