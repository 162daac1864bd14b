"""Golden snapshots of next-token predictions: store the top k, compare later within tolerance.

A snapshot records, for each prompt of a check, the top ``k`` tokens (default
20) with ids, ranks and log-probabilities, and the entropy, with provenance:
the model's name, a fingerprint of its weights, its dtype and device type. It
lives in a diff-friendly YAML file beside the test
(``__snapshots__/<test file>.snap.yaml``, one line per token, keys sorted).

A later run compares its predictions with the stored ones:

- a stored token's log-probability may move by ``atol + rtol * |logprob|``
  (defaults per dtype of the snapshot, :data:`TOLERANCES`: float32 noise is
  ~1e-5 nats, bfloat16 noise ~1e-1);
- a token may enter the top k only if it is a near-tie with the stored k-th
  (its log-probability now within tolerance of the stored k-th's); rank swaps
  among near-ties are not failures unless ``strict_ranks=True``;
- the entropy may move by the same tolerance.

A snapshot taken with other weights (another fingerprint) or on another device
type fails loudly instead of comparing, unless ``allow_other_model`` /
``allow_other_device``. A dtype change is compared, with the snapshot's dtype's
tolerance (so a float32 snapshot checked under bfloat16 shows what moved).

The pytest side (fixture ``logit_snapshot``, the ``snapshot:`` key of
behavioural YAML cases, ``--logitprobe-snapshot-update``) is in
:mod:`logitprobe._regression_plugin`; docs/regression.md is the guide. The file and its
format are :mod:`logitprobe._snapshot_file`; the provenance (the weights' fingerprint)
is :mod:`logitprobe._provenance`. Both are re-exported here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import divergence
# the provenance and the file live in their own modules; every name stays importable from here
from ._provenance import (SAMPLES, fingerprint, fingerprint_like, library_versions,  # noqa: F401
                          provenance)
from ._snapshot_file import (FORMAT, Entry, SnapshotFile, StoredCase, StoredToken,  # noqa: F401
                             dumps, rounded)
from ._text import Table, clip
from .errors import InvalidArgument, LogitAssertionError, SnapshotError
from .interventions.serialize import coerce, to_dict
from .tokens import check_k

__all__ = ["DEFAULT_K", "TOLERANCES", "CaseDiff", "SnapshotError", "SnapshotFile",
           "SnapshotResult", "check_snapshot", "compare_entry", "fingerprint", "provenance",
           "record"]

DEFAULT_K = 20
# dtype -> (atol, rtol) on log-probabilities (nats): |now - stored| <= atol + rtol * |stored|.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-6, 1e-7),
    "float32": (1e-3, 1e-4),
    "float16": (2e-2, 2e-3),
    "bfloat16": (1e-1, 1e-2),
}


# -- recording ---------------------------------------------------------------------------
def interventions_key(interventions: Any) -> str | None:
    if not interventions:
        return None
    return json.dumps([to_dict(s) for s in coerce(interventions)], sort_keys=True, default=repr)


def record(probe: Any, nts: Sequence[Any], *, k: int = DEFAULT_K, position: int = -1,
           interventions: Any = None) -> Entry:
    """An :class:`Entry` of ``nts`` (the probe's ``NextToken`` results) as it would be stored."""
    cases = []
    for nt in nts:
        # rounded as the file stores them, so a recorded entry equals the one read back
        top = tuple(StoredToken(c.rank, c.id, c.token, rounded(c.logprob)) for c in nt.top(k))
        ent = rounded(float(divergence.entropy(nt.logits)))
        cases.append(StoredCase(nt.prompt, ent, top))
    return Entry(**provenance(probe), k=k, cases=tuple(cases), position=position,
                 interventions=interventions_key(interventions))


# -- comparing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRow:
    """A token in the stored or the current top k; ``status``: entered, left, moved or ''."""

    token: str
    id: int
    rank_before: int | None  # None: not in the stored top k
    rank_after: int
    logprob_before: float | None
    logprob_after: float
    status: str
    over: bool  # its log-probability moved more than the tolerance


@dataclass(frozen=True)
class CaseDiff:
    """One prompt compared with its snapshot; ``reasons`` is empty when it passes."""

    prompt: str
    errors: tuple[float, ...]  # |logprob now - stored| per stored token
    entropy_before: float
    entropy_after: float
    rows: tuple[TokenRow, ...]
    reasons: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def max_error(self) -> float:
        return max(self.errors, default=0.0)

    @property
    def changed(self) -> bool:
        """Anything entered, left or moved in the top k, or moved beyond tolerance."""
        return any(r.status or r.over for r in self.rows)


def _tol(value: float, atol: float, rtol: float) -> float:
    return atol + rtol * abs(value)


def compare_case(stored: StoredCase, nt: Any, *, atol: float, rtol: float,
                 strict_ranks: bool = False) -> CaseDiff:
    """Compare one prompt's current ``NextToken`` with its stored top k."""
    k = len(stored.top)
    now = nt.top(k)
    now_rank = {c.id: c.rank for c in now}
    stored_ids = {t.id for t in stored.top}
    rows, errors = [], []
    for t in stored.top:
        c = nt.candidate(t.id)
        err = abs(c.logprob - t.logprob)
        errors.append(err)
        status = "left" if t.id not in now_rank else ("moved" if now_rank[t.id] != t.rank else "")
        rows.append(TokenRow(t.token, t.id, t.rank, c.rank, t.logprob, c.logprob, status,
                             err > _tol(t.logprob, atol, rtol)))
    floor = min((t.logprob for t in stored.top), default=-math.inf)
    entered = []
    for c in now:
        if c.id not in stored_ids:
            # it was at most the stored k-th: above it by more than the tolerance, it moved
            over = c.logprob > floor + _tol(floor, atol, rtol)
            entered.append(TokenRow(c.token, c.id, None, c.rank, None, c.logprob, "entered", over))
    ent = float(divergence.entropy(nt.logits))
    reasons = []
    n_over = sum(r.over for r in rows)
    if n_over:
        reasons.append(f"{n_over} of {k} log-probabilities moved beyond tolerance")
    if any(r.over for r in entered):
        reasons.append(f"{sum(r.over for r in entered)} token(s) entered the top {k} from "
                       "outside it (not a near-tie)")
    if abs(ent - stored.entropy) > _tol(stored.entropy, atol, rtol):
        reasons.append(f"entropy moved {stored.entropy:.4f} -> {ent:.4f}")
    if strict_ranks and any(r.status for r in [*rows, *entered]):
        reasons.append(f"the top-{k} ranking changed (strict_ranks)")
    return CaseDiff(stored.prompt, tuple(errors), stored.entropy, ent, tuple(rows + entered),
                    tuple(reasons))


def check_provenance(entry: Entry, now: dict[str, str], *, where: str,
                     allow_other_model: bool = False, allow_other_device: bool = False) -> None:
    """Fail loudly when the snapshot's weights or device type are not this run's."""
    __tracebackhide__ = True
    fix = "rewrite it with --logitprobe-snapshot-update if the new model is the reference"
    if entry.fingerprint != now["fingerprint"] and not allow_other_model:
        raise SnapshotError(
            f"{where}: the snapshot was taken with other weights: model {entry.model!r} "
            f"(fingerprint {entry.fingerprint}), this run has {now['model']!r} (fingerprint "
            f"{now['fingerprint']}). Comparing them would test the difference between two "
            f"models, not a regression; {fix}, or compare anyway with allow_other_model=True "
            "(--logitprobe-snapshot-any-model)")
    if entry.device != now["device"] and not allow_other_device:
        raise SnapshotError(
            f"{where}: the snapshot was taken on {entry.device!r}, this run is on "
            f"{now['device']!r}; kernels differ between device types beyond the tolerance. "
            f"Keep one snapshot per device type (e.g. a `device` marker), {fix}, or compare "
            "anyway with allow_other_device=True (--logitprobe-snapshot-any-device)")


def compare_entry(entry: Entry, nts: Sequence[Any], *, atol: float | None = None,
                  rtol: float | None = None, strict_ranks: bool = False) -> SnapshotResult:
    """Compare current results with a stored entry (provenance checked separately)."""
    d_atol, d_rtol = TOLERANCES.get(entry.dtype, TOLERANCES["float32"])
    atol = d_atol if atol is None else _nonneg(atol, "atol")
    rtol = d_rtol if rtol is None else _nonneg(rtol, "rtol")
    cases = tuple(compare_case(s, nt, atol=atol, rtol=rtol, strict_ranks=strict_ranks)
                  for s, nt in zip(entry.cases, nts))
    return SnapshotResult(cases, atol=atol, rtol=rtol, snapshot_dtype=entry.dtype)


def _nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a number >= 0 (nats), "
                              f"e.g. {name}=0.01")
    return float(value)


@dataclass
class SnapshotResult:
    """Every prompt of a snapshot check compared; ``report()`` is the failure message."""

    cases: tuple[CaseDiff, ...]
    atol: float
    rtol: float
    snapshot_dtype: str
    dtype_now: str | None = None
    key: str = ""
    path: str = ""
    extra: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def failed(self) -> list[CaseDiff]:
        return [c for c in self.cases if not c.passed]

    @property
    def max_error(self) -> float:
        return max((c.max_error for c in self.cases), default=0.0)

    @property
    def mean_error(self) -> float:
        errors = [e for c in self.cases for e in c.errors]
        return sum(errors) / len(errors) if errors else 0.0

    def verdict(self) -> str:
        n, bad = len(self.cases), len(self.failed)
        return (f"snapshot {self.key!r}: {bad} of {n} case(s) differ; largest log-probability "
                f"error {self.max_error:.4g} nats, mean {self.mean_error:.4g}")

    def report(self, show: int = 10) -> str:
        dtype = self.snapshot_dtype + ("" if self.dtype_now in (None, self.snapshot_dtype)
                                       else f" snapshot, compared under {self.dtype_now}")
        lines = [f"tolerance: |logprob now - stored| <= {self.atol:g} + {self.rtol:g} * |stored| "
                 f"({dtype}); file: {self.path}"]
        for i, c in enumerate(self.cases):
            if c.passed:
                continue
            lines.append("")
            lines.append(f"[case {i + 1}] {clip(repr(c.prompt), 70)}: {'; '.join(c.reasons)}")
            lines.append(f"  max error {c.max_error:.4g}, entropy {c.entropy_before:.4f} -> "
                         f"{c.entropy_after:.4f}")
            lines.append(_rows_table(c.rows, show))
        return "\n".join(lines + self.extra)

    def error(self) -> LogitAssertionError:
        return LogitAssertionError(self.verdict(), self.report(),
                                   "if the change is intended, rewrite the snapshot with "
                                   "pytest --logitprobe-snapshot-update")


def _rows_table(rows: Sequence[TokenRow], show: int) -> str:
    changed = [r for r in rows if r.status or r.over]
    # beyond tolerance first, largest change first (entered tokens have no stored value)
    changed.sort(key=lambda r: (not r.over, -(math.inf if r.logprob_before is None
                                               else abs(r.logprob_after - r.logprob_before))))
    table = Table(("status", "<7"), ("token", "<20"), ("id", ">7"), ("rank", ">9"),
                  ("logprob stored -> now", ">23"), ("change", ">8"))
    lines = ["  " + line for line in table.header()]
    for r in changed[:show]:
        rank = f"{r.rank_before if r.rank_before else '-'} -> {r.rank_after}"
        before = "-" if r.logprob_before is None else f"{r.logprob_before:.4f}"
        delta = "" if r.logprob_before is None else f"{r.logprob_after - r.logprob_before:+.4f}"
        lines.append("  " + table.row(r.status, repr(r.token), r.id, rank,
                                      f"{before} -> {r.logprob_after:.4f}", delta,
                                      mark="!" if r.over else " "))
    if len(changed) > show:
        lines.append(f"    ... {len(changed) - show} more")
    lines.append("    (! beyond tolerance; entered/left: in the top k now/only in the snapshot; "
                 "moved: another rank)")
    return "\n".join(lines)


# -- one check, from prompts to verdict --------------------------------------------------
def check_snapshot(file: SnapshotFile, key: str, probe: Any, prompts: Sequence[str] | str, *,
                   k: int = DEFAULT_K, atol: float | None = None, rtol: float | None = None,
                   strict_ranks: bool = False, allow_other_model: bool = False,
                   allow_other_device: bool = False, interventions: Any = None,
                   position: int = -1, update: bool = False, results: Sequence[Any] | None = None
                   ) -> tuple[str, SnapshotResult | None]:
    """Check ``prompts`` against the entry ``key`` of ``file`` (one batched forward).

    Returns ``(status, result)``: ``"passed"`` (with the comparison), or with
    ``update=True`` ``"written"`` (a new entry) / ``"rewritten"`` (a failing or
    outdated one; a passing entry is kept as it is, so files do not churn).
    Raises :class:`SnapshotError` (missing, other weights or device) or the
    comparison's :class:`~logitprobe.LogitAssertionError`. ``results`` are the
    prompts' ``NextToken`` when the caller already has them.
    """
    __tracebackhide__ = True
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    k = check_k(k, probe.vocab_size)
    if results is None:
        results = probe.next_token(prompts, position=position, interventions=interventions)
    where = f"snapshot {key!r} in {file.path}"
    entry = file.get(key)
    if entry is None:
        if update:
            file.set(key, record(probe, results, k=k, position=position,
                                 interventions=interventions))
            return "written", None
        exists = "has no such entry" if file.path.exists() else "does not exist yet"
        raise SnapshotError(f"{where}: missing (the file {exists}). Write it with pytest "
                            "--logitprobe-snapshot-update, check the file in, and rerun")
    now = provenance(probe)
    if not update:  # an older file: compare fingerprints in its scheme
        now["fingerprint"] = fingerprint_like(probe, entry.fingerprint)
    query = (tuple(prompts), k, position, interventions_key(interventions))
    if entry.query() != query:
        if update:
            file.set(key, record(probe, results, k=k, position=position,
                                 interventions=interventions))
            return "rewritten", None
        raise SnapshotError(f"{where}: the test now asks something else than the snapshot holds "
                            f"(prompts, k, position or interventions changed: stored "
                            f"{clip(repr(entry.query()), 160)}); rewrite it with pytest "
                            "--logitprobe-snapshot-update")
    if not update:
        check_provenance(entry, now, where=where, allow_other_model=allow_other_model,
                         allow_other_device=allow_other_device)
    same = entry.fingerprint == now["fingerprint"] and entry.device == now["device"]
    result = compare_entry(entry, results, atol=atol, rtol=rtol, strict_ranks=strict_ranks)
    result.key, result.path, result.dtype_now = key, str(file.path), now["dtype"]
    if not same:
        result.extra.append(f"(compared across models/devices: snapshot {entry.model} "
                            f"{entry.fingerprint} on {entry.device}, now {now['model']} "
                            f"{now['fingerprint']} on {now['device']})")
    if update and (not result.passed or not same or entry.dtype != now["dtype"]):
        file.set(key, record(probe, results, k=k, position=position, interventions=interventions))
        return "rewritten", result
    if not result.passed:
        raise result.error()
    return "passed", result
