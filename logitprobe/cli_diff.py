"""``logitprobe diff``: what changed between a baseline and a candidate model?

    logitprobe diff --prompts prompts.txt --model smollm2 --candidate-dtype bfloat16
    logitprobe diff "The capital of France is" --model smollm2 --candidate-interventions ablate.yaml
    logitprobe diff --suite tests/test_geo.logit.yaml --model smollm2 --candidate-dtype bfloat16

Prints the comparison (KL both ways, TV, top-1 agreement, top-k overlap,
quantiles, worst prompts first), the verdict flips of ``--suite`` files with an
exact McNemar test, ``--json`` for scripts and ``--plot`` for a figure. With
``--min-top1`` / ``--max-kl`` it exits 1 when the candidate breaks the bound.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import logitprobe

from .behaviour import load_suite
from .cli_commands import CheckFailed, _json, check_figure_path
from .errors import InvalidArgument
from .interventions import load_specs

__all__ = ["add_parser", "diff"]

DTYPES = ("float32", "float16", "bfloat16", "float64")


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the ``diff`` subcommand (``common`` adds --model, --device, --json, ...)."""
    p = sub.add_parser("diff", help="compare a baseline and a candidate model over prompts")
    p.add_argument("prompt", nargs="*", help="prompts (or --prompts FILE, or --suite)")
    p.add_argument("--prompts", metavar="FILE", help="a text file, one prompt per line")
    p.add_argument("--suite", metavar="FILE", nargs="+", default=[],
                   help="behavioural *.logit.yaml files: their verdict flips (and their prompts, "
                        "when none are given)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="baseline dtype")
    p.add_argument("--candidate", metavar="MODEL", default=None,
                   help="candidate model (default: --model)")
    p.add_argument("--candidate-dtype", choices=DTYPES, default=None,
                   help="candidate dtype (default: --dtype)")
    p.add_argument("--candidate-interventions", metavar="FILE", default=None,
                   help="intervention specs applied to the candidate only")
    p.add_argument("--tokens", nargs="+", default=[], help="tokens whose ranks to follow")
    p.add_argument("-k", type=int, default=10, help="top-k of the overlap (default 10)")
    p.add_argument("--worst", type=int, default=10, help="worst prompts shown (default 10)")
    p.add_argument("--plot", metavar="OUT", default=None,
                   help="also draw the KL distribution and the rank changes to OUT (.png, ...)")
    p.add_argument("--min-top1", type=float, default=None, metavar="F",
                   help="exit 1 when top-1 agrees on fewer than this fraction of prompts")
    p.add_argument("--max-kl", type=float, default=None, metavar="NATS",
                   help="exit 1 when the --quantile of KL(baseline || candidate) is above this")
    p.add_argument("--quantile", type=float, default=0.95, help="quantile of --max-kl (0.95)")
    common(p)


def _prompts(args: argparse.Namespace, suites: list[Any]) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts:
        lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
        prompts += [line for line in lines if line.strip()]
    if not prompts:
        prompts = list(dict.fromkeys(c.prompt for s in suites for c in s.cases if not c.skip))
    if not prompts:
        raise InvalidArgument("prompt: no prompts to compare; pass them as arguments, with "
                              "--prompts FILE (one per line), or with --suite FILE.logit.yaml")
    return prompts


def _load(model: str, dtype: str, args: argparse.Namespace) -> Any:
    import torch

    bos = {"auto": None, "yes": True, "no": False}[args.prepend_bos]
    return logitprobe.load(model, device=args.device, dtype=getattr(torch, dtype),
                           prepend_bos=bos)


def diff(args: argparse.Namespace) -> str:
    from .model_diff import compare_models, suite_flips  # torch: `logitprobe --help` needs none


    for name in ("k", "worst"):
        if getattr(args, name) < 1:
            raise InvalidArgument(f"--{name}={getattr(args, name)}: must be at least 1")
    suites = [load_suite(f) for f in args.suite]  # validate before loading a model
    if args.plot:
        check_figure_path(args.plot, "--plot")
    prompts = _prompts(args, suites)
    b_iv = load_specs(args.interventions) if args.interventions else None
    c_iv = load_specs(args.candidate_interventions) if args.candidate_interventions else None
    c_model = args.candidate or args.model
    c_dtype = args.candidate_dtype or args.dtype
    if (c_model, c_dtype, args.candidate_interventions) == (args.model, args.dtype,
                                                           args.interventions):
        raise InvalidArgument("--candidate: the candidate is the baseline; give another "
                              "--candidate model, --candidate-dtype or --candidate-interventions")
    baseline = _load(args.model, args.dtype, args)
    candidate = _load(c_model, c_dtype, args)
    labels = (f"{args.model} ({args.dtype})" + (" + interventions" if b_iv else ""),
              f"{c_model} ({c_dtype})" + (f" + {Path(args.candidate_interventions).name}"
                                         if c_iv else ""))
    result = compare_models(baseline, candidate, prompts, tokens=args.tokens, k=args.k,
                            baseline_interventions=b_iv, candidate_interventions=c_iv,
                            labels=labels)
    flips = [suite_flips(baseline, candidate, s, baseline_interventions=b_iv,
                         candidate_interventions=c_iv, labels=labels) for s in suites]
    figure = _plot(result, args.plot) if args.plot else None
    failures = []
    for check in (lambda: args.min_top1 is not None and result.assert_top1_agreement(
                      args.min_top1, show=args.worst),
                  lambda: args.max_kl is not None and result.assert_quantile(
                      "kl", args.quantile, at_most=args.max_kl, show=args.worst)):
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    if args.json:
        report = _json(**result.to_dict(worst=args.worst),
                       flips={s.source: f.to_dict() for s, f in zip(suites, flips)},
                       figure=figure, failures=failures)
    else:
        parts = [str(result).replace(result.table(result.worst(10)),
                                     result.table(result.worst(args.worst)))]
        parts += [f"verdict flips, {s.source}:\n{f}" for s, f in zip(suites, flips)]
        parts += [f"wrote {figure}"] if figure else []
        parts += [f"FAILED: {f}" for f in failures]
        report = "\n\n".join(parts)
    if failures:
        raise CheckFailed(report)
    return report


def _plot(result: Any, out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from logitprobe.plot.diff import plot_model_diff

    path = Path(out)
    axes = plot_model_diff(result)
    fig = axes[0].figure
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
