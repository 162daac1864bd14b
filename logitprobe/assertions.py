"""Behavioural assertions that fail with the evidence: usable in pytest and in plain scripts.

Every helper checks one statement about a :class:`~logitprobe.NextToken` (or,
for :func:`assert_greedy_starts_with`, a probe and a prompt), returns what it
measured when the statement holds, and otherwise raises
:class:`LogitAssertionError` whose message is a small report: a one-line
verdict, the evidence table with the target row marked ``>``, and a hint
(missing leading space, a string of several tokens, a near miss).

>>> nt = probe.next_token("The capital of France is")        # doctest: +SKIP
>>> assert_in_top(nt, " Paris", k=5).rank                    # doctest: +SKIP
1

Naming: ``assert_<what>[_<bound>]``; the token comes right after the
distribution, bounds after the token. Negative checks (``not_in_top``,
``rank_at_least``, ``prob_at_most``, ...) refuse a string of several tokens
with a :class:`~logitprobe.TokenError`: they would pass whatever the model says.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._checks import _check, _nt, _number, _rank, _target
from ._evidence import (ROWS, LogitAssertionError, better_spelling, describe, join_hints, report,
                        require_single, several_tokens_failure, short)
from .errors import InvalidArgument
from .tokens import check_k

if TYPE_CHECKING:
    from .probe import Probe
    from .results import Candidate, NextToken, Score

__all__ = [
    "LogitAssertionError",
    "assert_argmax",
    "assert_close",
    "assert_entropy_at_least",
    "assert_entropy_at_most",
    "assert_greedy_starts_with",
    "assert_in_top",
    "assert_logprob_at_least",
    "assert_logprob_at_most",
    "assert_more_likely",
    "assert_not_in_top",
    "assert_prob_at_least",
    "assert_prob_at_most",
    "assert_prob_decreases",
    "assert_prob_increases",
    "assert_rank_at_least",
    "assert_rank_at_most",
]

# -- top-k and rank ----------------------------------------------------------------------
@_check
def assert_in_top(nt: NextToken, token: Any, k: int = 10) -> Candidate:
    """``token`` is one of the ``k`` most likely next tokens (as ``token in nt.top(k)``)."""
    nt = _nt(nt)
    k = check_k(k, nt.vocab_size)
    target = _target(nt, token)
    if not target.single:
        raise several_tokens_failure(nt, target, f"in the top {k}")
    c = nt.candidate(target.id)
    if c.id in nt.top(k).ids:
        return c
    near = f"near miss: {c.rank - k} place(s) outside the top {k}" if c.rank <= 2 * k else None
    raise LogitAssertionError(
        f"{target.label()} is not in the top {k} after {short(nt.prompt, 80)}: "
        f"it is rank {c.rank} (p={c.prob:.4g})",
        report(nt, rows=k, marked=[c.id], cut=k),
        join_hints(better_spelling(nt, nt.vocab, target, c.rank), near))


@_check
def assert_not_in_top(nt: NextToken, token: Any, k: int = 10) -> Candidate:
    """``token`` is not one of the ``k`` most likely next tokens."""
    nt = _nt(nt)
    k = check_k(k, nt.vocab_size)
    tid = require_single(nt.vocab, _target(nt, token), f"not_in_top(k={k})")
    c = nt.candidate(tid)
    if c.id not in nt.top(k).ids:
        return c
    raise LogitAssertionError(
        f"{c.token!r} is in the top {k} after {short(nt.prompt, 80)}: it is rank {c.rank} "
        f"(p={c.prob:.4g})",
        report(nt, rows=k, marked=[c.id], cut=k))


@_check
def assert_rank_at_most(nt: NextToken, token: Any, rank: int) -> Candidate:
    """``token``'s 1-based rank is ``rank`` or better (ties share a rank)."""
    nt = _nt(nt)
    rank = _rank(rank, "rank", nt.vocab_size)
    target = _target(nt, token)
    if not target.single:
        raise several_tokens_failure(nt, target, f"at rank {rank} or better")
    c = nt.candidate(target.id)
    if c.rank <= rank:
        return c
    near = f"near miss: {c.rank - rank} place(s) too low" if c.rank <= 2 * rank else None
    raise LogitAssertionError(
        f"{target.label()} has rank {c.rank} after {short(nt.prompt, 80)}, expected rank "
        f"<= {rank} (p={c.prob:.4g})",
        report(nt, rows=rank, marked=[c.id], cut=rank),
        join_hints(better_spelling(nt, nt.vocab, target, c.rank), near))


@_check
def assert_rank_at_least(nt: NextToken, token: Any, rank: int) -> Candidate:
    """``token``'s 1-based rank is ``rank`` or worse (the model does not favour it)."""
    nt = _nt(nt)
    rank = _rank(rank, "rank", nt.vocab_size)
    c = nt.candidate(require_single(nt.vocab, _target(nt, token), f"rank_at_least({rank})"))
    if c.rank >= rank:
        return c
    raise LogitAssertionError(
        f"{c.token!r} has rank {c.rank} after {short(nt.prompt, 80)}, expected rank >= {rank} "
        f"(p={c.prob:.4g})",
        report(nt, rows=rank - 1, marked=[c.id], cut=rank - 1))


@_check
def assert_argmax(nt: NextToken, token: Any) -> Candidate:
    """``token`` is the most likely next token (``nt.argmax``)."""
    nt = _nt(nt)
    target = _target(nt, token)
    if not target.single:
        raise several_tokens_failure(nt, target, "the argmax")
    best = nt.argmax
    if best.id == target.id:
        return best
    c = nt.candidate(target.id)
    near = (f"near miss: {best.logit - c.logit:.3g} logits behind {best.token!r}"
            if c.rank == 2 or best.logit - c.logit < 0.5 else None)
    raise LogitAssertionError(
        f"the argmax after {short(nt.prompt, 80)} is {best.token!r} (p={best.prob:.4g}), not "
        f"{target.label()} (rank {c.rank}, p={c.prob:.4g})",
        report(nt, rows=ROWS, marked=[c.id, best.id]),
        join_hints(better_spelling(nt, nt.vocab, target, c.rank), near))


@_check
def assert_more_likely(nt: NextToken, token: Any, than: Any, *, margin: float = 0.0) -> Candidate:
    """``token`` beats ``than`` by more than ``margin`` nats of log-probability (= logits)."""
    nt = _nt(nt)
    margin = _number(margin, "margin", low=0.0, example="margin=1.0")
    target = _target(nt, token)
    if not target.single:
        raise several_tokens_failure(nt, target, f"more likely than {than!r}")
    than_id = require_single(nt.vocab, _target(nt, than, "than"), "more_likely's `than`")
    other = nt.candidate(than_id)
    c = nt.candidate(target.id)
    diff = c.logprob - other.logprob
    if diff > margin:
        return c
    by = f" by more than {margin:g} nats" if margin else ""
    near = f"near miss: short by {margin - diff:.3g} nats" if 0 <= margin - diff < 0.5 else None
    raise LogitAssertionError(
        f"{target.label()} is not more likely than {other.token!r}{by} after "
        f"{short(nt.prompt, 80)}: logprob difference {diff:.4g} ({describe(c)} vs "
        f"{describe(other)})",
        report(nt, rows=ROWS, marked=[c.id, other.id]),
        join_hints(better_spelling(nt, nt.vocab, target, c.rank), near))


# -- probability bounds ------------------------------------------------------------------
def _bound(nt: Any, token: Any, bound: Any, name: str, what: str, *, upper: bool,
           log: bool) -> Candidate:
    nt = _nt(nt)
    bound = (_number(bound, name, high=0.0, example=f"{name}=-5.0") if log
             else _number(bound, name, low=0.0, high=1.0, example=f"{name}=0.1"))
    target = _target(nt, token)
    if not target.single:
        if upper:
            require_single(nt.vocab, target, what)
        raise several_tokens_failure(nt, target, f"with {what}")
    c = nt.candidate(target.id)
    value = c.logprob if log else c.prob
    if (value <= bound) if upper else (value >= bound):
        return c
    sign = "<=" if upper else ">="
    label = "logprob" if log else "p"
    hint = None
    if not upper:
        gap = bound - value if log else value / bound if bound else 0.0
        near = (log and gap < 0.7) or (not log and gap >= 0.5)
        hint = join_hints(better_spelling(nt, nt.vocab, target, c.rank),
                          f"near miss: {label}={value:.4g} vs {bound:.4g}" if near else None)
    raise LogitAssertionError(
        f"{target.label()} has {label}={value:.4g} after {short(nt.prompt, 80)}, expected "
        f"{label} {sign} {bound:.4g} (rank {c.rank})",
        report(nt, rows=ROWS, marked=[c.id]), hint)


@_check
def assert_prob_at_least(nt: NextToken, token: Any, p: float) -> Candidate:
    """``token``'s next-token probability is at least ``p``."""
    return _bound(nt, token, p, "p", f"prob >= {p!r}", upper=False, log=False)


@_check
def assert_prob_at_most(nt: NextToken, token: Any, p: float) -> Candidate:
    """``token``'s next-token probability is at most ``p``."""
    return _bound(nt, token, p, "p", f"prob_at_most({p!r})", upper=True, log=False)


@_check
def assert_logprob_at_least(nt: NextToken, token: Any, logprob: float) -> Candidate:
    """``token``'s log-probability (nats, <= 0) is at least ``logprob``."""
    return _bound(nt, token, logprob, "logprob", f"logprob >= {logprob!r}", upper=False, log=True)


@_check
def assert_logprob_at_most(nt: NextToken, token: Any, logprob: float) -> Candidate:
    """``token``'s log-probability (nats, <= 0) is at most ``logprob``."""
    return _bound(nt, token, logprob, "logprob", f"logprob_at_most({logprob!r})", upper=True,
                  log=True)


# -- the whole distribution --------------------------------------------------------------
def _entropy(nt: Any, nats: Any, *, upper: bool) -> float:
    nt = _nt(nt)
    nats = _number(nats, "nats", low=0.0, example="nats=2.0")
    h = nt.entropy()
    if (h <= nats) if upper else (h >= nats):
        return h
    sign, what = ("<=", "too uncertain") if upper else (">=", "too confident")
    raise LogitAssertionError(
        f"the next-token entropy after {short(nt.prompt, 80)} is {h:.4g} nats, expected "
        f"{sign} {nats:g} ({what}; exp(H)={math.exp(h):.3g} tokens' worth)",
        report(nt, rows=ROWS, marked=[]))


@_check
def assert_entropy_at_most(nt: NextToken, nats: float) -> float:
    """The next-token distribution's entropy is at most ``nats`` (the model is confident)."""
    return _entropy(nt, nats, upper=True)


@_check
def assert_entropy_at_least(nt: NextToken, nats: float) -> float:
    """The next-token distribution's entropy is at least ``nats`` (the model hedges)."""
    return _entropy(nt, nats, upper=False)


@_check
def assert_close(nt: NextToken, other: NextToken, *, kl: float | None = None,
                 tv: float | None = None) -> tuple[float, float]:
    """Two next-token distributions are close: ``KL(nt || other) <= kl`` and/or ``TV <= tv``.

    Returns ``(kl, tv)`` as measured (nats; total variation in [0, 1]).
    """
    from ._reports import close_report, divergences

    nt, other = _nt(nt), _nt(other, "other")
    if kl is None and tv is None:
        raise InvalidArgument("kl=None, tv=None: give a bound, e.g. assert_close(a, b, kl=0.1) "
                              "or tv=0.05")
    kl = None if kl is None else _number(kl, "kl", low=0.0, example="kl=0.1")
    tv = None if tv is None else _number(tv, "tv", low=0.0, high=1.0, example="tv=0.05")
    if nt.vocab_size != other.vocab_size:
        raise InvalidArgument(f"other: its vocabulary has {other.vocab_size} tokens, nt's has "
                              f"{nt.vocab_size}; compare distributions of the same model family")
    d_kl, d_tv = divergences(nt, other)
    broken = ([f"KL={d_kl:.4g} > {kl:g}"] if kl is not None and d_kl > kl else []) + \
             ([f"TV={d_tv:.4g} > {tv:g}"] if tv is not None and d_tv > tv else [])
    if not broken:
        return d_kl, d_tv
    raise LogitAssertionError(
        f"the distributions after {short(nt.prompt, 60)} and {short(other.prompt, 60)} differ: "
        + ", ".join(broken), close_report(nt, other, d_kl, d_tv))


# -- across prompts: direction and greedy continuation -----------------------------------
def _direction(before: Any, after: Any, token: Any, by: Any, *, up: bool) -> Candidate:
    from ._reports import direction_report

    before, after = _nt(before, "before"), _nt(after, "after")
    by = _number(by, "by", low=0.0, high=1.0, example="by=0.05")
    what = "prob_increases" if up else "prob_decreases"
    tb = require_single(before.vocab, _target(before, token), what)
    ta = require_single(after.vocab, _target(after, token), what)
    cb, ca = before.candidate(tb), after.candidate(ta)
    change = ca.prob - cb.prob
    if (change > by) if up else (-change > by):
        return ca
    verb = "rise" if up else "fall"
    more = f" by more than {by:g}" if by else ""
    raise LogitAssertionError(
        f"p({ca.token!r}) did not {verb}{more}: {cb.prob:.4g} -> {ca.prob:.4g} "
        f"(change {change:+.4g}; rank {cb.rank} -> {ca.rank})",
        direction_report(before, after, cb, ca))


@_check
def assert_prob_increases(before: NextToken, after: NextToken, token: Any, *,
                          by: float = 0.0) -> Candidate:
    """p(``token``) rises from ``before`` to ``after`` by more than ``by`` (CheckList DIR)."""
    return _direction(before, after, token, by, up=True)


@_check
def assert_prob_decreases(before: NextToken, after: NextToken, token: Any, *,
                          by: float = 0.0) -> Candidate:
    """p(``token``) falls from ``before`` to ``after`` by more than ``by``."""
    return _direction(before, after, token, by, up=False)


@_check
def assert_greedy_starts_with(probe: Probe, prompt: str, text: str, *,
                              interventions: Any = None, score: Score | None = None) -> Score:
    """Greedy decoding from ``prompt`` produces text that starts with ``text``.

    One forward when it holds (teacher forcing: every token of ``text`` is the
    argmax); otherwise greedy decoding settles it, so a different tokenization
    of the same text still passes. That decoding is KV-cached and stops 3 tokens
    past the divergence; the failure shows the matched prefix and the steps
    around the divergence. ``score`` reuses a precomputed ``probe.score(prompt, text)``.
    """
    from ._reports import greedy_failure

    if not hasattr(probe, "score") or not hasattr(probe, "engine"):
        raise InvalidArgument(f"probe={short(repr(probe), 60)}: expected a logitprobe Probe "
                              "(logitprobe.load(...)), not " + type(probe).__name__)
    if not isinstance(text, str) or not text:
        raise InvalidArgument(f"text={text!r}: `text` must be a non-empty str, e.g. ' Paris'")
    if score is None:
        score = probe.score(prompt, text, interventions=interventions)
    if score.is_greedy:
        return score
    failure = greedy_failure(probe, prompt, text, score, interventions)
    if failure is None:  # greedy decoding tokenizes the same text differently
        return score
    raise failure
