"""What a fresh process pays to load SmolLM2 from the cache, and what the checksum adds.

    python benchmarks/bench_load.py [--repeats 3]

Each repeat starts two fresh Python processes, alternating: one loads
``logitprobe.load("smollm2")`` as users do (every cached file's SHA-256 checked),
one with the check switched off. Each reports import, load and first-answer
times; the script prints medians and the check's share of a warm load (goal:
under 10%). Run it after one load has written the cache (the first load
dequantizes, ~30 s, and is not what this measures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import logitprobe
from logitprobe import _weights_cache, loading
t1 = time.perf_counter()
if sys.argv[1] == "unchecked":
    loading.problem = lambda directory: None
p = logitprobe.load("smollm2", device="cpu")
t2 = time.perf_counter()
p.next_token("I like oat milk in my")
t3 = time.perf_counter()
target = loading.dequantized_dir(loading.smollm2_path())
h0 = time.perf_counter()
assert _weights_cache.problem(target) is None
h1 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "answer": t3 - t2, "total": t3 - t0,
                  "check": h1 - h0}))
"""


def child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    child("checked")  # writes the cache if missing; warms the page cache
    runs: dict[str, list[dict]] = {"checked": [], "unchecked": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(child(mode))
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for mode, rs in runs.items()}
    print("| process | import s | load() s | first answer s | total s |")
    print("|---|---|---|---|---|")
    for mode, m in med.items():
        print(f"| {mode} | {m['import']:.2f} | {m['load']:.2f} | {m['answer']:.2f} | "
              f"{m['total']:.2f} |")
    check = statistics.median(r["check"] for rs in runs.values() for r in rs)
    print(f"\nchecksum check alone: {check:.2f} s = {100 * check / med['unchecked']['load']:.1f}% "
          f"of an unchecked warm load(); load() checked - unchecked: "
          f"{med['checked']['load'] - med['unchecked']['load']:+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
