"""An intervention experiment as data, on the embedded SmolLM2 (offline).

1. The tutorial's hook, declaratively: " coffee" gets the maximum logit + 10.
2. Steering "France" towards "Italy" at the country token, saved as a YAML experiment
   and loaded back.
3. Before/after comparisons, a greedy generation under the edit, and a patching sweep
   (which layers carry the country from "France" to the answer), plotted.

Run:  python examples/intervention_experiment.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import logitprobe  # noqa: E402
from logitprobe import interventions as iv  # noqa: E402
from logitprobe.interventions.plots import plot_comparison, plot_patch_sweep  # noqa: E402

FRANCE, ITALY = "The capital of France is", "The capital of Italy is"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("intervention-experiment"),
                        help="directory for the YAML experiment and the figures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    probe = logitprobe.load("smollm2")

    # 1. the tutorial's hook
    boost = iv.SetLogit(" coffee", to="max+10")
    cmp = probe.compare(FRANCE, [boost], tokens=[" Paris", " coffee"])
    print(cmp, end="\n\n")

    # 2. an experiment as a file
    experiment = [iv.Steer("blocks.6.hook_resid_pre", positive=" Italy", negative=" France",
                           positions={"token": " France"})]
    path = args.out / "france-to-italy.yaml"
    iv.dump_specs(experiment, path)
    assert iv.load_specs(path) == experiment
    cmp = probe.compare(FRANCE, str(path), tokens=[" Paris", " Rome"])
    print(f"{path}:\n{path.read_text()}\n{cmp}\n")
    plot_comparison(cmp).figure.savefig(args.out / "comparison.png", dpi=120)

    gen = probe.generate(FRANCE, max_new_tokens=12, interventions=str(path))
    print(f"greedy under the edit: {FRANCE!r} + {gen.text!r}\n")

    # 3. where does the country travel? Patch each layer's residual stream, per position,
    #    from the Italy run (clean: answer " Rome") into the France run (corrupted).
    sweep = probe.patch_sweep(ITALY, FRANCE, [" Rome", " Paris"], activation="resid_pre")
    print(sweep)
    layer, pos = sweep.peak()
    print(f"largest effect: layer {layer}, position {pos} {sweep.corrupted_tokens[pos]!r}")
    plot_patch_sweep(sweep).figure.savefig(args.out / "patch-sweep.png", dpi=120)
    print(f"\nfigures written to {args.out}/")


if __name__ == "__main__":
    main()
