"""Run the benchmarks: ``python benchmarks/run.py [--smoke] [--device cuda]``.

Writes ``benchmarks/results/<mode>.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import logitprobe  # noqa: E402
from common import Context, to_json, to_markdown  # noqa: E402

MODULES = ["bench_queries", "bench_prefix", "bench_generation", "bench_suite", "bench_templates",
           "bench_startup"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, one repeat (for CI)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="workload sizes (e.g. 0.2 on a loaded machine; targets are for 1)")
    parser.add_argument("--only", nargs="*", help="benchmark modules to run")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(MODULES))
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: unknown benchmark module(s); choose from "
                     f"{', '.join(MODULES)}")
    repeats = args.repeats or (1 if args.smoke else 5)
    ctx = Context(smoke=args.smoke, device=args.device, repeats=repeats, scale=args.scale)
    start = time.time()
    for name in args.only or MODULES:
        module = importlib.import_module(name)
        print(f"[{time.time() - start:6.0f} s] {name} ...", file=sys.stderr, flush=True)
        module.run(ctx)
    meta = {
        "logitprobe": logitprobe.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "device": args.device,
        "repeats": repeats,
        "scale": args.scale,
        "seconds": round(time.time() - start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "smoke" if args.smoke else "full"
    (out / f"{mode}.json").write_text(json.dumps(to_json(ctx, meta), indent=2))
    table = to_markdown(ctx, meta)
    (out / f"{mode}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
