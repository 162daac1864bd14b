"""What sharding a suite over torchrun ranks costs: the gather on rank 0, in time and bytes.

    torchrun --standalone --nproc-per-node 2 benchmarks/distributed_overhead.py --model smollm2
    python benchmarks/distributed_overhead.py --model smollm2      # one process, for the total

The suite is the example suite (examples/behaviour/test_geo.logit.yaml) repeated
``--copies`` times, each copy's prompts prefixed with its number so no forward is
a cache hit. The gather is timed after a barrier, so waiting for a slower rank is
not counted as gather time. Prints one JSON line (rank 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import statistics
import time
from pathlib import Path

import torch.distributed as dist

import logitprobe
from logitprobe import distributed
from logitprobe.behaviour import Suite, load_suite

SUITE = Path(__file__).resolve().parents[1] / "examples" / "behaviour" / "test_geo.logit.yaml"


def suite(copies: int) -> Suite:
    base = load_suite(SUITE)
    cases = [dataclasses.replace(c, prompt=f"{k}. {c.prompt}", name=f"{c.name}_{k}",
                                 index=k * len(base.cases) + c.index)
             for k in range(copies) for c in base.cases]
    return Suite(base.source, tuple(cases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gathers: list[float] = []
    sizes: list[int] = []
    real_gather = dist.gather_object

    def timed_gather(obj, gather_list=None, dst=0):  # barrier first: time the transfer alone
        dist.barrier()
        sizes.append(len(pickle.dumps(obj)))
        start = time.perf_counter()
        real_gather(obj, gather_list, dst=dst)
        gathers.append(time.perf_counter() - start)

    dist.gather_object = timed_gather
    probe = logitprobe.load(args.model, device=distributed.rank_device(None))
    cases = suite(args.copies)
    totals = []
    for _ in range(args.repeats):
        probe.clear_cache()
        start = time.perf_counter()
        outcome = distributed.run_suite(probe, cases)
        totals.append(time.perf_counter() - start)
    w = distributed.world()
    if distributed.is_lead():
        failed = sum(e is not None for _, e in outcome)
        print(json.dumps({
            "ranks": 1 if w is None else w.size, "model": args.model, "cases": len(cases.cases),
            "failed": failed, "total_s_median": round(statistics.median(totals), 4),
            "gather_ms_median": round(1000 * statistics.median(gathers), 3) if gathers else None,
            "rank0_payload_bytes": sizes[-1] if sizes else None}))


if __name__ == "__main__":
    main()
