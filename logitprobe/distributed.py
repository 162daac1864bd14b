"""Scaling out: suites over several processes (torch.distributed) and pytest workers over GPUs.

Data parallel: every rank loads its own copy of the model (one device per local
rank), checks its share of a suite's cases and rank 0 gathers the outcomes::

    torchrun --nproc-per-node 2 -m logitprobe run tests/test_geo.logit.yaml --model smollm2

Cases are dealt out by token count (longest first, each to the least loaded
rank), so every rank has about the same work and keeps the suite's batching.
Rank 0 puts the outcomes back in the suite's order, so the report and the
``--json`` output are those of one process. gloo on CPU, nccl on CUDA.

A rank whose check raises an unexpected error sends it on: every rank then
raises :class:`~logitprobe.errors.DistributedError` naming that rank and case.
A rank that dies (killed, out of memory) never answers; the collectives give
up after ``timeout`` seconds (torchrun also stops the other ranks as soon as
one exits with an error).
"""

from __future__ import annotations

import atexit
import os
import pickle
import re
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist

from ._evidence import LogitAssertionError, short
from .behaviour import Case, Suite, check_case, load_suite, prefetch, queries
from .behaviour import run_suite as run_suite_here
from .errors import DistributedError, InvalidArgument, LogitProbeError
from .progress import check_progress, track

__all__ = ["DEFAULT_TIMEOUT", "World", "init", "is_lead", "rank_device", "run_suite", "shard",
           "worker_device", "world"]

DEFAULT_TIMEOUT = 1800.0  # seconds; torch's default for gloo (nccl's is 600)
_XDIST_WORKER = re.compile(r"gw(\d+)")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a torchrun (or other env://) launch."""

    rank: int
    size: int
    local_rank: int


def world() -> World | None:
    """The ranks this process is one of; None when it runs alone (no torchrun, or one rank)."""
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
        return World(rank, size, _env_int("LOCAL_RANK", rank)) if size > 1 else None
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return None
    rank = _env_int("RANK", 0)
    return World(rank, size, _env_int("LOCAL_RANK", rank))


def is_lead() -> bool:
    """Whether this process reports: rank 0, or a process running alone."""
    w = world()
    return w is None or w.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={short(value, 40)}: not an integer; torchrun sets it "
                               f"(start the command with torchrun, or unset {name})") from None


def rank_device(device: Any = None) -> Any:
    """The device of this rank's model: ``cuda:{LOCAL_RANK}`` for None or ``"cuda"`` on a GPU
    machine under torchrun, else ``device`` unchanged (an explicit index is kept)."""
    w = world()
    if w is None or (device is not None and str(device) != "cuda"):
        return device
    if device is None and not torch.cuda.is_available():
        return None  # load() picks the CPU
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if w.local_rank >= count:
        raise DistributedError(
            f"LOCAL_RANK={w.local_rank}: this machine has {count} CUDA GPU(s) and each rank needs "
            f"its own; start at most {count} process(es) per machine (torchrun --nproc-per-node "
            f"{max(count, 1)}), or pass --device cpu")
    return f"cuda:{w.local_rank}"


def worker_device(device: Any = None, worker: str | None = None) -> Any:
    """Under pytest-xdist, worker ``gwN``'s device: ``cuda:{N % device count}``.

    ``device`` (what the user asked for) wins; outside xdist, or without a GPU,
    returns ``device`` (None lets :func:`logitprobe.load` choose).

    >>> worker_device("cpu", worker="gw3")
    'cpu'
    """
    if device is not None:
        return device
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    match = _XDIST_WORKER.fullmatch(worker)
    if match is None or not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    return f"cuda:{int(match.group(1)) % count}" if count else None


def init(*, timeout: float = DEFAULT_TIMEOUT, device: Any = None,
         backend: str | None = None) -> World:
    """Join the process group torchrun describes (idempotent); collectives time out after
    ``timeout`` seconds. ``backend`` defaults to nccl when this rank's model is on CUDA
    (``device``, as for :func:`rank_device`), else gloo."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgument(f"timeout={short(timeout, 40)}: `timeout` must be a positive "
                              "number of seconds (e.g. timeout=600)")
    w = world()
    if w is None:
        raise DistributedError(
            "WORLD_SIZE is unset or 1: this process was not started as one of several ranks; "
            "launch it with torchrun --nproc-per-node N (or call logitprobe.behaviour.run_suite)")
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if str(rank_device(device)).startswith("cuda") else "gloo"
        try:
            if backend == "nccl":
                torch.cuda.set_device(w.local_rank)  # object collectives go through this device
            dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout)))
        except Exception as exc:  # noqa: BLE001 - DistStoreError, RuntimeError: with context
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DistributedError(
                f"rank {w.rank} of {w.size}: joining the other ranks ({backend}) failed: "
                f"{_cut(first, 200)}; check that every rank started (torchrun "
                f"--nproc-per-node), and MASTER_ADDR/MASTER_PORT, within "
                f"timeout={float(timeout):g} s") from exc
        atexit.register(_finish)
    return w


def _finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(costs: Sequence[float], ranks: int) -> list[list[int]]:
    """Deal indices ``0..len(costs)-1`` to ``ranks`` shares of about equal total cost.

    Longest first, each to the least loaded share (ties: the lower rank); each share
    is in ascending order. Deterministic, so every rank computes the same split.

    >>> shard([5, 1, 4, 2], 2)
    [[0, 1], [2, 3]]
    """
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise InvalidArgument(f"ranks={short(ranks, 40)}: `ranks` must be a positive int")
    shares: list[list[int]] = [[] for _ in range(ranks)]
    loads = [0.0] * ranks
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(ranks), key=lambda r: (loads[r], r))
        shares[r].append(i)
        loads[r] += costs[i]
    return [sorted(s) for s in shares]


def _cost(probe: Any, case: Case) -> int:
    """Tokens a case's forward passes evaluate (its prompts, and prompt + text for scores)."""
    total = 0
    for q in dict.fromkeys(queries(case)):
        texts = [q[1]] if q[0] == "next" else [q[1], q[2]]
        for text in texts:
            try:
                total += len(probe.encode(text))
            except Exception:  # noqa: BLE001 - a bad prompt still gets a share; its case reports it
                total += len(str(text)) // 4 + 1
    return total


@dataclass(frozen=True)
class _Crash:
    """An unexpected error on one rank, sent to rank 0 as text (tracebacks do not pickle)."""

    rank: int
    where: str
    error: str
    traceback: str


def run_suite(probe: Any, suite: Suite | str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT,
              progress: Any = False) -> list[tuple[Case, Exception | None]] | None:
    """:func:`logitprobe.behaviour.run_suite` over the ranks of a torchrun launch.

    Rank 0 returns ``[(case, None or the failure), ...]`` in the suite's order, the
    list one process returns; the other ranks return None. Alone (no torchrun) this
    is ``behaviour.run_suite``. Every rank must call it with the same suite.
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if world() is None:
        return run_suite_here(probe, suite, progress=progress)
    w = init(timeout=timeout, device=probe.device)
    cases = list(suite.cases)
    share = shard([_cost(probe, c) for c in cases], w.size)[w.rank]
    outcome, crash = _check_share(probe, cases, share, w.rank, progress if w.rank == 0 else False)
    gathered = [None] * w.size if w.rank == 0 else None
    try:
        dist.gather_object((outcome, crash), gathered, dst=0)
        # Every rank's send consumed before any rank goes on: a rank that raises next and
        # leaves with a send still pending is aborted by gloo at exit (SIGABRT, not its code).
        dist.barrier()
    except Exception as exc:  # noqa: BLE001 - DistBackendError, RuntimeError: re-raised with context
        # Leave the broken group now: left to interpreter exit, gloo's pending send aborts
        # the process ("terminate called without an active exception").
        _finish()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DistributedError(
            f"rank {w.rank} of {w.size}: gathering the results failed: another rank stopped "
            f"(killed, out of memory) or did not answer within timeout={float(timeout):g} s "
            f"({_cut(first, 200)}); look for that rank's error above") from exc
    if w.rank != 0:
        if crash is not None:
            _finish()  # leave the group now, not in the interpreter's teardown
            raise DistributedError(_crash_message(crash))
        return None
    crashes = [c for _, c in gathered if c is not None]
    if crashes:
        _finish()
        raise DistributedError(_crash_message(crashes[0], len(crashes)))
    merged: dict[int, Exception | None] = {}
    for part, _ in gathered:
        merged.update(part)
    return [(case, merged[i]) for i, case in enumerate(cases)]


def _check_share(probe: Any, cases: list[Case], share: list[int], rank: int,
                 progress: Any) -> tuple[dict[int, Exception | None], _Crash | None]:
    outcome: dict[int, Exception | None] = {}
    where = "(batched forward passes)"
    try:
        results = prefetch(probe, [cases[i] for i in share])
        for i in track(share, check_progress(progress), total=len(share), desc="run_suite"):
            where = cases[i].where
            try:
                check_case(probe, cases[i], results)
                outcome[i] = None
            except (AssertionError, LogitProbeError) as exc:
                outcome[i] = _portable(exc)
    except Exception as exc:  # noqa: BLE001 - sent to rank 0, which names this rank and case
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return outcome, _Crash(rank, where, f"{type(exc).__name__}: {exc}", "".join(lines))
    return outcome, None


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling with the same type and text, else a stand-in with that text."""
    try:
        clone = pickle.loads(pickle.dumps(exc))
        if type(clone) is type(exc) and str(clone) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - an error type that does not pickle
        pass
    return LogitAssertionError(str(exc)) if isinstance(exc, AssertionError) else \
        LogitProbeError(str(exc))


def _crash_message(crash: _Crash, count: int = 1) -> str:
    more = f" (and {count - 1} other rank(s))" if count > 1 else ""
    tail = "".join(crash.traceback.strip().splitlines(keepends=True)[-6:])
    return (f"rank {crash.rank} failed on {crash.where}{more}: {_cut(crash.error, 300)}; "
            f"no report was written. The end of its traceback:\n{_cut(tail, 1500)}")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
