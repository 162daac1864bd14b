"""``logitprobe`` command line: everyday questions about a model's next token.

    logitprobe top "I like oat milk in my" -k 10 --model smollm2
    logitprobe rank "I like oat milk in my" " coffee" --model smollm2
    logitprobe score "The capital of France is" " Paris" --model smollm2
    logitprobe sample "I like oat milk in my" -n 1000 --seed 0 --top-k 20 --model smollm2
    logitprobe generate "The capital of France is" --max-new-tokens 10 --model smollm2
    logitprobe lens "The capital of France is" " Paris" --model smollm2
    logitprobe compare "I like oat milk in my" --interventions boost.yaml --model smollm2
    logitprobe plot "I like oat milk in my" --kind logits --highlight " coffee" --out logits.png
    logitprobe run tests/test_geo.logit.yaml --model smollm2

Every command takes ``--json`` for scripts. Exit codes: 0 success, 1 a
behavioural check failed (``run``), 2 bad arguments (unknown token, k out of
range, invalid spec, ...), 3 model unavailable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["build_parser", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3


def _common(parser: argparse.ArgumentParser, *, interventions: bool = True) -> None:
    parser.add_argument("--model", default="gpt2",
                        help="model name, local directory, .gguf file, or 'smollm2' "
                             "(offline; default: gpt2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--prepend-bos", choices=["auto", "yes", "no"], default="auto",
                        help="BOS policy (default: auto = as the model's tokenizer does)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if interventions:
        parser.add_argument("--interventions", metavar="FILE",
                            help="YAML/JSON intervention specs applied to the forward pass")


def _warper_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logitprobe", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("top", help="the k most likely next tokens after a prompt")
    p.add_argument("prompt")
    p.add_argument("-k", type=int, default=10, help="how many tokens (default 10)")
    _common(p)

    p = sub.add_parser("rank", help="rank, probability and logit of tokens after a prompt")
    p.add_argument("prompt")
    p.add_argument("tokens", nargs="+", help="tokens such as ' coffee' (mind the leading space)")
    _common(p)

    p = sub.add_parser("score", help="log-probability of a continuation after a prompt")
    p.add_argument("prompt")
    p.add_argument("continuation")
    _common(p)

    p = sub.add_parser("sample", help="sample next tokens n times and count them")
    p.add_argument("prompt")
    p.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    _warper_options(p)
    _common(p)

    p = sub.add_parser("generate", help="continue a prompt token by token (KV cache)")
    p.add_argument("prompt")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    _warper_options(p)
    _common(p)

    p = sub.add_parser("lens", help="logit lens: tracked tokens' ranks after each layer")
    p.add_argument("prompt")
    p.add_argument("tokens", nargs="*", help="tokens to track")
    p.add_argument("-k", type=int, default=5, help="top-k shown per layer (default 5)")
    _common(p, interventions=False)

    p = sub.add_parser("compare", help="before/after an intervention spec file")
    p.add_argument("prompt")
    p.add_argument("tokens", nargs="*", help="tokens whose changes to report")
    p.add_argument("-k", type=int, default=10)
    _common(p)

    p = sub.add_parser("plot", help="draw a figure to a file")
    p.add_argument("prompt")
    p.add_argument("--kind", choices=["logits", "softmax", "log-softmax", "top-k", "lens"],
                   default="logits")
    p.add_argument("--highlight", nargs="*", default=[], help="tokens to mark")
    p.add_argument("-k", type=int, default=10, help="bars of the top-k plot")
    p.add_argument("--out", default="logits.png", help="output file (PNG, SVG, PDF)")
    p.add_argument("--dark", action="store_true", help="the tutorial's dark theme")
    _common(p)

    p = sub.add_parser("run", help="run a YAML behavioural test file")
    p.add_argument("files", nargs="+", help="*.logit.yaml files")
    _common(p, interventions=False)
    p.set_defaults(model=None)  # the file's `model:`, else gpt2
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import logitprobe

        print(logitprobe.__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from logitprobe.cli_commands import COMMANDS, CheckFailed
    from logitprobe.errors import LogitProbeError, ModelUnavailableError

    try:
        print(COMMANDS[args.command](args))
    except CheckFailed as exc:
        print(exc.report)
        return EXIT_FAILED
    except ModelUnavailableError as exc:
        print(f"logitprobe: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except (LogitProbeError, OSError) as exc:
        print(f"logitprobe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
