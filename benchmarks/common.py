"""Benchmark plumbing: timing with repeats, subjects, results and the report.

Every figure is a median over repeated runs with min and max; every comparison
is a ratio of two figures measured in the same run (the machines are shared
and noisy, absolute times vary).
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent


@dataclass
class Timing:
    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


def sync() -> None:
    """Wait for queued GPU work (timings on CUDA must include it)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], *, repeats: int, warmup: int = 1,
            setup: Callable[[], Any] | None = None) -> Timing:
    """Median/min/max wall time of ``fn()`` over ``repeats`` runs (``setup`` untimed)."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
        gc.collect()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return Timing.of(samples)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                setup: Callable[[], Any] | None = None) -> dict[str, tuple[Timing, Any]]:
    """Time ``fns`` in turns after one warm-up round, so all see the same machine load.

    Returns each function's timing and its last result.
    """
    results: dict[str, Any] = {}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            if setup:
                setup()
            gc.collect()
            sync()
            start = time.perf_counter()
            results[name] = fn()
            sync()
            if round_:
                samples[name].append(time.perf_counter() - start)
    return {name: (Timing.of(samples[name]), results[name]) for name in fns}


@dataclass
class Result:
    """One benchmark line: a figure, or a ratio of two figures measured together."""

    group: str
    name: str
    value: float  # seconds for a timing, x for a ratio, a fraction, tokens/s, ...
    unit: str
    timing: Timing | None = None
    target: str = ""  # e.g. ">= 4x"
    ok: bool | None = None  # None: no target
    note: str = ""


@dataclass
class Context:
    smoke: bool
    device: str
    repeats: int
    results: list[Result] = field(default_factory=list)
    scale: float = 1.0  # workload sizes (e.g. 0.2 on a loaded machine); targets are for 1.0
    subjects: dict[str, Any] = field(default_factory=dict)

    def add(self, result: Result) -> Result:
        if self.smoke:  # toy sizes: targets are not judged
            result.ok = None
        self.results.append(result)
        return result


def ratio(group: str, name: str, slow: Timing, fast: Timing, *, at_least: float | None = None,
          at_most: float | None = None, note: str = "") -> Result:
    """``slow.median / fast.median`` with an optional target."""
    value = slow.median / fast.median
    target, ok = "", None
    if at_least is not None:
        target, ok = f">= {at_least:g}x", value >= at_least
    if at_most is not None:
        target, ok = f"<= {at_most:g}x", value <= at_most
    return Result(group, name, value, "x", None, target, ok, note)


def _rss_mb(field_name: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(field_name)


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measure without
        pass


def peak_memory(fn: Callable[[], Any], device: str) -> float:
    """Peak memory of one ``fn()`` above what was in use before it, in MB.

    CUDA: the allocator's peak. CPU: the process's resident-set high-water mark
    (reset through ``/proc/self/clear_refs`` first); 0.0 where that is unavailable.
    Before it, glibc's ``malloc_trim(0)`` hands freed memory back to the system, so
    that memory a previous call freed and this one reuses counts as growth (else
    whichever side runs second reads about 0).
    """
    gc.collect()
    _trim()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = _rss_mb("VmRSS")
        fn()
        return max(0.0, _rss_mb("VmHWM") - base)
    except OSError:
        return 0.0


def gflops_ceiling(device: str, *, smoke: bool) -> float:
    """Achieved float32 matmul GFLOP/s on shapes like a batched GPT-2 MLP."""
    n = 256 if smoke else 2048
    a = torch.randn(n, 768, device=device)
    b = torch.randn(768, 3072, device=device)
    def run():
        for _ in range(4):
            torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    t = measure(run, repeats=5, warmup=2)
    return 4 * 2 * n * 768 * 3072 / t.median / 1e9


def to_markdown(ctx: Context, meta: dict) -> str:
    lines = [f"# logitprobe benchmarks ({'smoke' if ctx.smoke else 'full'})", ""]
    if ctx.smoke:
        lines += ["Smoke mode: toy sizes, one repeat; it checks that the harness runs. The "
                  "figures mean nothing and targets are not judged.", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| group | benchmark | value | median | min | max | target | ok | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in ctx.results:
        t = r.timing
        tm = (f"{t.median * 1e3:.1f} ms", f"{t.min * 1e3:.1f} ms", f"{t.max * 1e3:.1f} ms") if t else ("", "", "")
        ok = "" if r.ok is None else ("yes" if r.ok else "**NO**")
        lines.append(f"| {r.group} | {r.name} | {r.value:.4g} {r.unit} | {tm[0]} | {tm[1]} | {tm[2]} | "
                     f"{r.target} | {ok} | {r.note} |")
    return "\n".join(lines) + "\n"


def to_json(ctx: Context, meta: dict) -> dict:
    return {"meta": meta, "results": [asdict(r) for r in ctx.results]}


def hf_batches(probe: Any, seqs: list[list[int]], device: str) -> list[tuple]:
    """The engine's own length groups of ``seqs``, left-padded as it pads them, for the HF model."""
    from logitprobe.engine import _Request, left_pad

    out = []
    for group in probe.engine._groups([_Request(tuple(s), 1) for s in seqs]):
        batch = left_pad([r.ids for r in group], probe.engine.pad_id)
        out.append((batch.tokens.to(device), batch.mask.to(device)))
    return out


def run_pytest(path: Any, directory: Any, device: str, rootdir: Any) -> None:
    """Run pytest in this process on ``path`` with logitprobe's plugin; assert it passed."""
    import pytest  # only the benchmarks that time pytest need it

    code = pytest.main([str(path), f"--logitprobe-model={directory}",
                        f"--logitprobe-device={device}", "-q", "-p", "no:cacheprovider",
                        "-p", "no:unraisableexception", "-p", "no:hypothesispytest",
                        "-p", "no:xdist", "--rootdir", str(rootdir)])
    assert code == 0, f"pytest exit code {code}"
