"""``logitprobe`` command line: everyday questions about a model's next token.

    logitprobe top "I like oat milk in my" -k 10 --model smollm2
    logitprobe rank "I like oat milk in my" " coffee" --model smollm2
    logitprobe score "The capital of France is" " Paris" --model smollm2

Exit codes: 0 success, 2 bad arguments (unknown token, k out of range, ...),
3 model unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_MODEL = 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="gpt2",
                        help="model name, local directory, .gguf file, or 'smollm2' "
                             "(offline; default: gpt2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--prepend-bos", choices=["auto", "yes", "no"], default="auto",
                        help="BOS policy (default: auto = as the model's tokenizer does)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logitprobe", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    top = sub.add_parser("top", help="the k most likely next tokens after a prompt")
    top.add_argument("prompt")
    top.add_argument("-k", type=int, default=10, help="how many tokens (default 10)")
    _common(top)

    rank = sub.add_parser("rank", help="rank, probability and logit of tokens after a prompt")
    rank.add_argument("prompt")
    rank.add_argument("tokens", nargs="+", help="tokens such as ' coffee' (mind the leading space)")
    _common(rank)

    score = sub.add_parser("score", help="log-probability of a continuation after a prompt")
    score.add_argument("prompt")
    score.add_argument("continuation")
    _common(score)
    return parser


def _load(args: argparse.Namespace) -> Any:
    import logitprobe

    bos = {"auto": None, "yes": True, "no": False}[args.prepend_bos]
    return logitprobe.load(args.model, device=args.device, prepend_bos=bos)


def _cmd_top(args: argparse.Namespace) -> str:
    probe = _load(args)
    top = probe.next_token(args.prompt).top(args.k)
    if args.json:
        return json.dumps({"model": args.model, "prompt": args.prompt,
                           "top": [vars(c) for c in top]}, indent=2)
    return f"Top {top.k} next tokens after {args.prompt!r} ({args.model}):\n{top}"


def _cmd_rank(args: argparse.Namespace) -> str:
    from logitprobe.results import format_table

    probe = _load(args)
    nt = probe.next_token(args.prompt)
    cands = [nt.candidate(t) for t in args.tokens]
    if args.json:
        return json.dumps({"model": args.model, "prompt": args.prompt,
                           "tokens": [vars(c) for c in cands]}, indent=2)
    lines = [f"After {args.prompt!r} ({args.model}, vocabulary of {nt.vocab_size}):"]
    for c in cands:
        lines.append(f"{c.token!r} ranks {c.rank} of {nt.vocab_size}: "
                     f"p={c.prob:.4g}, logit={c.logit:.3f}")
    rows = list(nt.top(10))
    rows += [c for c in cands if c.rank > 10]  # the asked-for tokens, even far down
    lines.append(format_table(rows, marked=cands[0].id))
    return "\n".join(lines)


def _cmd_score(args: argparse.Namespace) -> str:
    probe = _load(args)
    score = probe.score(args.prompt, args.continuation)
    if args.json:
        return json.dumps({"model": args.model, "prompt": args.prompt,
                           "continuation": args.continuation, "logprob": score.logprob,
                           "is_greedy": score.is_greedy,
                           "tokens": [vars(t) for t in score.tokens]}, indent=2)
    return str(score)


COMMANDS: dict[str, Callable[[argparse.Namespace], str]] = {
    "top": _cmd_top,
    "rank": _cmd_rank,
    "score": _cmd_score,
}


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
    from logitprobe.errors import LogitProbeError, ModelUnavailableError

    try:
        print(COMMANDS[args.command](args))
    except ModelUnavailableError as exc:
        print(f"logitprobe: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except LogitProbeError as exc:
        print(f"logitprobe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
