"""Behavioural test files as data: ``test_*.logit.yaml`` cases, validated, batched, checked.

A file is a list of cases (or a mapping with ``cases:`` and an optional
``model:``). Each case has a ``prompt`` and an ``expect`` block whose keys are
the assertion helpers' names without ``assert_``::

    - name: capital
      prompt: "The capital of France is"
      expect:
        in_top: {token: " Paris", k: 5}
        more_likely: {token: " Paris", than: " London", margin: 1.0}
        greedy_starts_with: " Paris"

Expectations may also be a list of one-key mappings (to repeat one), and
take a scalar (their first field), a list (fields in order) or a mapping.
``close_to`` and ``prob_increases``/``prob_decreases`` compare with another
prompt (``prompt:``/``from:``), by default the same prompt without the case's
``interventions``.

Files are read with ``yaml.safe_load`` semantics and validated before any
model is loaded; an error names the file, the case and the field. All the
forward passes a group of cases needs are computed together by
:func:`prefetch` (a few batched passes instead of one per case).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import assertions, invariance
from ._evidence import LogitAssertionError
from ._schema import SPECS, BehaviourFileError, Case, Expectation, Suite, load_suite, parse_suite
from ._text import short
from .errors import LogitProbeError
from .progress import check_progress, track

if TYPE_CHECKING:
    from .probe import Probe

__all__ = ["SPECS", "STATUSES", "BehaviourFileError", "Case", "Expectation", "Prefetched", "Suite",
           "case_status", "check_case", "load_suite", "parse_suite", "prefetch", "queries",
           "run_suite", "token_problem"]


# -- batching and checking ---------------------------------------------------------------
def _ikey(interventions: Any) -> str | None:
    if interventions is None:
        return None
    return json.dumps(interventions, sort_keys=True, default=repr)


def queries(case: Case) -> list[tuple]:
    """The forward passes a case needs: ``("next", prompt, position, ikey)`` or ``("score", ...)``.

    ``ikey`` is the case's interventions as canonical JSON (None for none).
    """
    ikey = _ikey(case.interventions)
    out: list[tuple] = []
    kinds = {e.spec.needs for e in case.expectations}
    if kinds & {"next", "pair"} or getattr(case, "snapshot", None) is not None:
        out.append(("next", case.prompt, case.position, ikey))
    for exp in case.expectations:
        if exp.spec.needs == "pair":
            out.append(("next", case.baseline_prompt(exp), case.position, None))
        elif exp.spec.needs == "score":
            out.append(("score", case.prompt, exp.get("text"), ikey))
    return out


class Prefetched:
    """Results of batched forwards, handed out once per use and then released."""

    def __init__(self) -> None:
        self._results: dict[tuple, Any] = {}
        self._uses: dict[tuple, int] = {}

    def __contains__(self, query: tuple) -> bool:
        return query in self._results

    def __len__(self) -> int:
        return len(self._results)

    def put(self, query: tuple, result: Any, uses: int) -> None:
        self._results[query] = result
        self._uses[query] = uses

    def take(self, query: tuple) -> Any:
        result = self._results.get(query)
        if result is not None:
            self._uses[query] -= 1
            if self._uses[query] <= 0:
                del self._results[query], self._uses[query]
        return result


def prefetch(probe: Probe, cases: list[Case], into: Prefetched | None = None) -> Prefetched:
    """Run every forward pass ``cases`` need in batched calls (one per kind x intervention set).

    A batch that fails (a prompt longer than the context, an invalid intervention)
    is left out: each case then runs its own queries and reports its own error.
    """
    into = Prefetched() if into is None else into
    uses: dict[tuple, int] = {}
    interventions: dict[str | None, Any] = {}
    for case in cases:
        interventions[_ikey(case.interventions)] = case.interventions
        for q in dict.fromkeys(queries(case)):
            uses[q] = uses.get(q, 0) + 1
    groups: dict[tuple, list[tuple]] = {}
    for q in uses:
        if q not in into:
            groups.setdefault((q[0], q[2] if q[0] == "next" else None, q[3]), []).append(q)
    for (kind, position, ikey), qs in groups.items():
        iv = None if ikey is None else list(interventions[ikey])
        try:
            if kind == "next":
                results = probe.next_token([q[1] for q in qs], position=position, interventions=iv)
            else:
                results = probe.score([q[1] for q in qs], [q[2] for q in qs], interventions=iv)
        except Exception:  # noqa: BLE001 - each case re-runs alone and reports its own error
            continue
        for q, result in zip(qs, results):
            into.put(q, result, uses[q])
    return into


def _run(probe: Probe, case: Case, query: tuple, results: Prefetched | None) -> Any:
    if results is not None and query in results:
        return results.take(query)
    iv = None if query[3] is None else list(case.interventions or ())
    if query[0] == "next":
        return probe.next_token(query[1], position=query[2], interventions=iv)
    return probe.score(query[1], query[2], interventions=iv)


def check_case(probe: Probe, case: Case, results: Prefetched | None = None) -> Any:
    """Check every expectation of ``case``; raise one report listing all that failed.

    Returns the case's next-token result (None when no expectation needed one).
    """
    __tracebackhide__ = True
    ikey = _ikey(case.interventions)
    iv = None if case.interventions is None else list(case.interventions)
    # Take every result the case needs first, so each prefetched one is released.
    try:
        got = {q: _run(probe, case, q, results) for q in dict.fromkeys(queries(case))}
    except LogitProbeError as exc:  # a prompt too long for the model, an unknown hook, ...
        raise _located(case, exc) from None
    subject = got.get(("next", case.prompt, case.position, ikey))
    failures: list[tuple[int, Expectation, Exception]] = []
    for n, exp in enumerate(case.expectations, 1):
        helper = getattr(assertions, exp.spec.helper, None) or getattr(invariance, exp.spec.helper)
        args = dict(exp.args)
        try:
            if exp.spec.needs == "next":
                helper(subject, **args)
            elif exp.spec.needs == "pair":
                base = got[("next", case.baseline_prompt(exp), case.position, None)]
                if exp.name == "close_to":
                    helper(subject, base, kl=args.get("kl"), tv=args.get("tv"))
                elif exp.name in ("prob_increases", "prob_decreases"):
                    helper(base, subject, args["token"], by=args.get("by", 0.0))
                else:  # logitprobe.invariance: (base, perturbed, **fields)
                    helper(base, subject, **{k: v for k, v in args.items() if k != "from"})
            else:
                score = got[("score", case.prompt, args["text"], ikey)]
                helper(probe, case.prompt, args["text"], interventions=iv, score=score)
        except LogitProbeError as exc:
            failures.append((n, exp, exc))
    if failures:
        raise _combined(case, failures)
    return subject


def _combined(case: Case, failures: list[tuple[int, Expectation, Exception]]) -> Exception:
    total = len(case.expectations)
    blocks = []
    for n, exp, exc in failures:
        kind = "" if isinstance(exc, LogitAssertionError) else f"{type(exc).__name__}: "
        blocks.append(f"[expectation {n}/{total}: {exp.name}] {kind}{exc}")
    if len(failures) == 1:
        n, exp, exc = failures[0]
        if isinstance(exc, LogitAssertionError):
            return LogitAssertionError(f"{case.where}, {exp.name}: {exc.verdict}", exc.evidence,
                                       exc.hint)
        return _located(case, exc, f", {exp.name}")
    names = ", ".join(exp.name for _, exp, _ in failures)
    return LogitAssertionError(f"{case.where}: {len(failures)} of {total} expectations failed "
                               f"({names})", "\n\n".join(blocks))


def _located(case: Case, exc: Exception, what: str = "") -> Exception:
    """``exc`` again, its message prefixed with the file and the case (same type when it can)."""
    message = f"{case.where}{what}: {exc}"
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - an error type with another signature
        return LogitProbeError(message)


def token_problem(case: Case, counter: Any) -> str | None:
    """What the model's tokenizer alone shows is wrong with ``case`` (None: nothing).

    ``counter`` has ``n_ctx`` (or None), ``count(text) -> (plain, with_special)``
    (token counts of a prompt without and with the special tokens the tokenizer
    adds) and ``pieces(text) -> int``. A case is reported only when it fails
    whichever BOS policy the model uses: no weights are needed, so pytest checks
    this at collection (see ``logitprobe._yaml_items``).
    """
    n_ctx = counter.n_ctx
    prompts = {case.prompt: "prompt"}
    for exp in case.expectations:
        if exp.spec.needs == "pair":
            other = "prompt" if exp.name == "close_to" else "from"
            prompts.setdefault(case.baseline_prompt(exp), f"{exp.name}: `{other}`")
    for text, label in prompts.items():
        plain, special = counter.count(text)
        low, high = plain, max(special, plain + 1)  # the model may or may not add a BOS
        if special == 0:
            return (f"{case.where}: {label} {short(text, 80)} is 0 tokens for this model's "
                    "tokenizer; give some text")
        if n_ctx is not None and low > n_ctx:
            return (f"{case.where}: {label} {short(text, 80)} is {special} tokens, longer than "
                    f"the model's context of {n_ctx}; shorten it")
        if not -high <= case.position < high:
            return (f"{case.where}: position={case.position}: {label} {short(text, 80)} has "
                    f"{special} tokens, so `position` must be in [{-special}, {special - 1}]")
    for exp in case.expectations:
        for param in exp.spec.params:
            token = exp.get(param.name)
            if param.kind != "token" or not isinstance(token, str):
                continue
            n = counter.pieces(token)
            if n != 1:
                hint = ""
                if n > 1 and not token.startswith(" ") and counter.pieces(" " + token) == 1:
                    hint = f"; did you mean {' ' + token!r} (with a leading space)?"
                return (f"{case.where}: {exp.name}: {param.name}={short(token, 80)} is {n} tokens "
                        "for this model's tokenizer; a single-token expectation needs one token "
                        f"(greedy_starts_with checks multi-token text){hint}")
        if exp.spec.needs == "score" and n_ctx is not None:
            total = counter.count(case.prompt)[0] + counter.pieces(exp.get("text")) - 1
            if total > n_ctx:
                return (f"{case.where}: {exp.name}: the prompt and {short(exp.get('text'), 80)} "
                        f"are {total + 1} tokens, longer than the model's context of {n_ctx}; "
                        "shorten them")
    return None


STATUSES = ("passed", "failed", "skipped", "xfailed", "XPASS")


def case_status(case: Case, failure: Exception | None) -> str:
    """A checked case's outcome, as the pytest plugin reports it: one of :data:`STATUSES`.

    ``skip:`` cases are ``skipped``; ``xfail:`` cases are strict (``xfailed`` when they fail,
    ``XPASS`` when they pass, which fails the run, as ``failed`` does).
    """
    if case.skip:
        return "skipped"
    if case.xfail:
        return "xfailed" if failure is not None else "XPASS"
    return "failed" if failure is not None else "passed"


def run_suite(probe: Probe, suite: Suite | str | Path, *,
              progress: Any = False) -> list[tuple[Case, Exception | None]]:
    """Check every case of a suite outside pytest: ``[(case, None or the failure), ...]``.

    ``progress=True`` (or a tqdm-like callable) shows a bar over the cases.
    """
    progress = check_progress(progress)
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    results = prefetch(probe, list(suite.cases))
    outcome: list[tuple[Case, Exception | None]] = []
    for case in track(suite.cases, progress, total=len(suite.cases), desc="run_suite"):
        try:
            check_case(probe, case, results)
            outcome.append((case, None))
        except (AssertionError, LogitProbeError) as exc:
            outcome.append((case, exc))
    return outcome
