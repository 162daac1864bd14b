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
    logitprobe diff --prompts prompts.txt --model smollm2 --candidate-dtype bfloat16

Every command takes ``--json`` for scripts; the exit codes are in ``EXIT_CODES``
(and ``logitprobe --help``); docs/cli.md is the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from typing import Any, NoReturn, Sequence

import logitprobe

from ._text import clip, short
from .cli_commands import COMMANDS, CheckFailed
from .cli_diff import add_parser as _add_diff_parser
from .cli_diff import diff
from .errors import DistributedError, InvalidArgument, LogitProbeError, ModelUnavailableError

__all__ = ["EXIT_CODES", "build_parser", "exit_code", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_ERROR = 4
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "a behavioural check failed (logitprobe run)",
    EXIT_USAGE: "usage error: bad arguments or options, a rejected value (unknown token, k out of "
                "range, invalid spec or test file, ...), a file that cannot be read or written",
    EXIT_MODEL: "the model is unavailable (not cached offline, missing path, corrupt file)",
    EXIT_ERROR: "any other error (a bug or an environment fault); rerun with --traceback",
}
TRACEBACK_ENV = "LOGITPROBE_TRACEBACK"
# Positional/option text that must be UTF-8 (paths are left to the operating system).
_TEXT_ARGUMENTS = {"prompt": "prompt", "tokens": "tokens", "continuation": "continuation",
                   "highlight": "--highlight"}
_EPILOG = "\n".join([
    "exit codes:",
    *(textwrap.fill(what, 78, initial_indent=f"  {code}  ", subsequent_indent="     ")
      for code, what in EXIT_CODES.items()),
    "",
    "With --json, an error is a JSON object on stdout:",
    '  {"error": {"type": ..., "message": ..., "exit_code": ...}}',
    f"--traceback (or {TRACEBACK_ENV}=1) prints the full traceback of an unexpected error.",
])


class _ParseError(Exception):
    """argparse rejected the command line (raised instead of argparse's exit)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors return to :func:`main` (for --json and exit codes)."""

    def error(self, message: str) -> NoReturn:
        raise _ParseError(self, message)


def _common(parser: argparse.ArgumentParser, *, interventions: bool = True) -> None:
    parser.add_argument("--model", default="gpt2",
                        help="model name, local directory, .gguf file, or 'smollm2' "
                             "(offline; default: gpt2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--prepend-bos", choices=["auto", "yes", "no"], default="auto",
                        help="BOS policy (default: auto = as the model's tokenizer does)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help=f"print the full traceback of an unexpected error "
                             f"(or set {TRACEBACK_ENV}=1)")
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
    parser = _Parser(prog="logitprobe", description="everyday questions about a model's next token",
                     epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--traceback", action="store_true",
                        help=f"print the full traceback of an unexpected error "
                             f"(or set {TRACEBACK_ENV}=1)")
    sub = _Subcommands(parser.add_subparsers(dest="command"))

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
    p.add_argument("--highlight", nargs="*", default=[],
                   help="tokens to mark (logits, lens: any number; top-k: one)")
    p.add_argument("-k", type=int, default=10, help="bars of the top-k plot")
    p.add_argument("--out", default="logits.png",
                   help="output file; its extension picks the format (.png, .svg, .pdf, ...)")
    p.add_argument("--dark", action="store_true", help="the tutorial's dark theme")
    _common(p)

    p = sub.add_parser("run", help="run a YAML behavioural test file")
    p.add_argument("files", nargs="+", help="*.logit.yaml files")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others before it gives "
                        "up (default 1800); see docs/scaling.md")
    p.add_argument("--html", metavar="PATH", default=None,
                   help="also write a self-contained HTML report (matrix, every case, failing "
                        "cases' evidence and top-k charts)")
    _common(p, interventions=False)
    p.set_defaults(model=None)  # the file's `model:`, else gpt2

    _add_diff_parser(sub, _common)  # logitprobe diff: baseline vs candidate model
    return parser


class _Subcommands:
    """``add_subparsers()`` whose every subcommand shows the exit codes in its --help."""

    def __init__(self, action: Any):
        self._action = action

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self._action.add_parser(name, epilog=_EPILOG,
                                       formatter_class=argparse.RawDescriptionHelpFormatter,
                                       **kwargs)


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a command (see ``EXIT_CODES``).

    Every error logitprobe raises on purpose (``LogitProbeError``) is about what was
    asked and exits 2, except ``ModelUnavailableError`` (3); so does an ``OSError``
    (a file named on the command line that cannot be read or written). Anything
    else is unexpected and exits 4.
    """
    if isinstance(exc, ModelUnavailableError):
        return EXIT_MODEL
    if isinstance(exc, DistributedError):  # a rank raised, died or timed out: not the user's input
        return EXIT_ERROR
    if isinstance(exc, (LogitProbeError, OSError)):
        return EXIT_USAGE
    return EXIT_ERROR


def _wants_json(argv: Sequence[str]) -> bool:
    argv = list(argv)
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def _report_error(kind: str, message: str, code: int, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": {"type": kind, "message": message, "exit_code": code}},
                         indent=2))
    else:
        print(f"logitprobe: error: {message}", file=sys.stderr)
    return code


def _check_text(args: argparse.Namespace) -> None:
    """Text arguments must be UTF-8: undecodable argv bytes arrive as lone surrogates."""
    for dest, name in _TEXT_ARGUMENTS.items():
        value = getattr(args, dest, None)
        values = [value] if isinstance(value, str) else list(value or ())
        for i, text in enumerate(values):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                where = name if isinstance(value, str) else f"{name}[{i}]"
                raise InvalidArgument(
                    f"{where}={short(text, 60)}: not valid UTF-8 text ({text[exc.start]!r} is a "
                    f"lone surrogate, what Python makes of bytes it could not decode); "
                    f"pass the text in UTF-8") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``EXIT_CODES``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = _wants_json(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ParseError as exc:
        if as_json:
            return _report_error("UsageError", f"{exc.parser.prog}: {exc.message}", EXIT_USAGE,
                                 as_json=True)
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.version:
        print(logitprobe.__version__)
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        _check_text(args)
        # `diff` lives in cli_diff, which builds on cli_commands' helpers
        text = (diff if args.command == "diff" else COMMANDS[args.command])(args)
        if text is not None:  # None: a torchrun rank other than 0, which reports nothing
            print(text)
    except CheckFailed as exc:
        print(exc.report)
        return EXIT_FAILED
    except Exception as exc:  # the exit code says which kind; see exit_code()
        code = exit_code(exc)
        if code != EXIT_ERROR or isinstance(exc, LogitProbeError):  # raised on purpose: in full
            return _report_error(type(exc).__name__, str(exc), code, as_json=as_json)
        if args.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        first = clip(first, 300)
        message = (f"unexpected {type(exc).__name__}{': ' + first if first else ''} (rerun with "
                   f"--traceback or {TRACEBACK_ENV}=1 for the full traceback)")
        return _report_error(type(exc).__name__, message, code, as_json=as_json)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
