"""The ``logitprobe`` subcommands: each takes parsed arguments and returns the text to print."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import logitprobe

from ._text import short
from .behaviour import STATUSES, Suite, case_status, load_suite, run_suite
from .errors import InvalidArgument
from .interventions import load_specs
from ._yaml_templates import group_severity
from .passrate import PassRate
from .passrate import outcome as case_outcome
from .report_html import render as render_html
from .suite_report import matrix, matrix_text

__all__ = ["COMMANDS", "CheckFailed"]


class CheckFailed(Exception):
    """A behavioural check failed; ``report`` is what to print (exit code 1)."""

    def __init__(self, report: str):
        super().__init__(report)
        self.report = report


def _load(args: argparse.Namespace) -> Any:
    bos = {"auto": None, "yes": True, "no": False}[args.prepend_bos]
    # load() is silent; on a terminal, a bar for what takes seconds (the first dequantization)
    return logitprobe.load(args.model, device=args.device, prepend_bos=bos,
                           progress=sys.stderr.isatty())


def _json(**data: Any) -> str:
    """Strict JSON (RFC 8259): infinities and NaN are written as the strings in ``_NONFINITE``."""
    return json.dumps(_jsonable(data), indent=2, allow_nan=False)


# How non-finite floats are written: a banned token's logit/log-probability is "-inf", the KL
# divergence of a comparison that bans a likely token is "inf"; float(s) reads them back.
_NONFINITE = {math.inf: "inf", -math.inf: "-inf"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else _NONFINITE.get(value, "nan")
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # tensors and numpy values
        return _jsonable(value.tolist())
    return str(value)


def _warpers(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
            "min_p": args.min_p}


def _interventions(args: argparse.Namespace) -> Any:
    path = getattr(args, "interventions", None)
    if path is None:
        return None
    return load_specs(path)


def top(args: argparse.Namespace) -> str:
    probe = _load(args)
    result = probe.next_token(args.prompt, interventions=_interventions(args)).top(args.k)
    if args.json:
        return _json(model=args.model, prompt=args.prompt, top=list(result))
    return f"Top {result.k} next tokens after {args.prompt!r} ({args.model}):\n{result}"


def rank(args: argparse.Namespace) -> str:
    from logitprobe.results import format_table

    probe = _load(args)
    nt = probe.next_token(args.prompt, interventions=_interventions(args))
    cands = [nt.candidate(t) for t in args.tokens]
    if args.json:
        return _json(model=args.model, prompt=args.prompt, tokens=cands)
    lines = [f"After {args.prompt!r} ({args.model}, vocabulary of {nt.vocab_size}):"]
    lines += [f"{c.token!r} ranks {c.rank} of {nt.vocab_size}: p={c.prob:.4g}, logit={c.logit:.3f}"
              for c in cands]
    rows = list(nt.top(10)) + [c for c in cands if c.rank > 10]  # asked-for tokens, even far down
    lines.append(format_table(rows, marked=cands[0].id))
    return "\n".join(lines)


def score(args: argparse.Namespace) -> str:
    probe = _load(args)
    result = probe.score(args.prompt, args.continuation, interventions=_interventions(args))
    if args.json:
        return _json(model=args.model, prompt=args.prompt, continuation=args.continuation,
                     logprob=result.logprob, is_greedy=result.is_greedy, tokens=result.tokens)
    return str(result)


def sample(args: argparse.Namespace) -> str:
    probe = _load(args)
    freq = probe.sample_frequencies(args.prompt, args.n, seed=args.seed,
                                    interventions=_interventions(args), **_warpers(args))
    if args.json:
        return _json(model=args.model, prompt=args.prompt, n=args.n, seed=args.seed,
                     counts=freq.most_common())
    return str(freq)


def generate(args: argparse.Namespace) -> str:
    probe = _load(args)
    kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, seed=args.seed,
                  interventions=_interventions(args), **_warpers(args))
    if not args.do_sample:
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in ("temperature", "top_k", "top_p", "min_p") or v is not None}
    from tqdm.auto import tqdm

    # Token by token (the same tokens generate() returns), with a progress bar on a terminal.
    chosen = [c for _, c in tqdm(probe.steps(args.prompt, **kwargs), total=args.max_new_tokens,
                                 desc="generating", unit="tok", file=sys.stderr,
                                 disable=not sys.stderr.isatty(), leave=False)]
    text = "".join(c.token for c in chosen)
    if args.json:
        return _json(model=args.model, prompt=args.prompt, text=text, steps=chosen)
    from logitprobe.results import format_table

    # One row per step, in order: each chosen token's rank, logit and probability when chosen.
    return "\n".join([args.prompt + text, "", format_table(chosen)])


def lens(args: argparse.Namespace) -> str:
    probe = _load(args)
    result = probe.lens(args.prompt, args.tokens, k=args.k)
    if args.json:
        return _json(model=args.model, prompt=args.prompt, layers=list(result.labels),
                     ranks={t: result.rank(t) for t in args.tokens},
                     probs={t: result.prob(t) for t in args.tokens})
    return str(result)


def compare(args: argparse.Namespace) -> str:
    probe = _load(args)
    result = probe.compare(args.prompt, _interventions(args), tokens=args.tokens, k=args.k)
    if args.json:
        return _json(model=args.model, prompt=args.prompt, kl=result.kl,
                     argmax_changed=result.argmax_changed, changes=result.changes)
    return str(result)


def plot(args: argparse.Namespace) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from logitprobe import plot as lp_plot

    out = check_figure_path(args.out, "--out")
    if args.kind == "top-k" and len(args.highlight) > 1:
        raise InvalidArgument(f"--highlight={short(args.highlight, 60)}: the top-k plot marks one "
                              f"token; pass one, or use --kind logits to mark several")
    probe = _load(args)
    with lp_plot.style("dark" if args.dark else "light"):
        if args.kind == "lens":
            drawn = lp_plot.plot_lens(probe.lens(args.prompt, args.highlight or ()))
        else:
            nt = probe.next_token(args.prompt, interventions=_interventions(args))
            highlight = args.highlight or None
            drawn = {
                "logits": lambda: lp_plot.plot_logits(nt, highlight=highlight),
                "softmax": lambda: lp_plot.plot_softmax_panels(nt),
                "log-softmax": lambda: lp_plot.plot_log_softmax_panels(nt),
                "top-k": lambda: lp_plot.plot_top_k(nt, args.k, highlight=(highlight or [None])[0]),
            }[args.kind]()
        fig = getattr(drawn, "figure", None) or drawn.flat[0].figure
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return _json(figure=str(out)) if args.json else f"wrote {out}"


def check_figure_path(value: str, option: str) -> Path:
    """``value`` as a path whose extension is a figure format matplotlib writes, or a named error."""
    from matplotlib.backend_bases import FigureCanvasBase  # lazy: matplotlib is slow to import

    out = Path(value)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())  # png, svg, pdf, ...
    if out.suffix[1:].lower() not in formats:
        given = repr(out.suffix) if out.suffix else "no extension"
        raise InvalidArgument(f"{option}={short(value, 60)}: {given} is not a figure format (the "
                              f"extension picks it); use one of "
                              f"{', '.join('.' + f for f in formats)} (e.g. {option} figure.png)")
    return out


def run(args: argparse.Namespace) -> str | None:
    from . import distributed  # torch: `logitprobe --help` needs none

    suites = [load_suite(f) for f in args.files]  # validate every file before loading a model
    # Under torchrun each rank checks a share of the cases on its own device; rank 0 reports.
    args.device = distributed.rank_device(args.device)
    timeout = getattr(args, "timeout", None)
    timeout = distributed.DEFAULT_TIMEOUT if timeout is None else timeout
    if distributed.world() is not None:  # meet the other ranks before loading (slow, uneven)
        distributed.init(timeout=timeout, device=args.device)
    lines, records, failed = [], [], 0
    group_records: list[dict] = []
    pages: list[dict] = []  # records for the HTML report (shared with `records` by reference)
    given = args.model
    for path, suite in zip(args.files, suites):
        args.model = given or suite.model or "gpt2"  # each file's own `model:` unless --model
        probe = _load(args)
        active = [c for c in suite.cases if not c.skip]
        checked = distributed.run_suite(probe, Suite(suite.source, tuple(active)), timeout=timeout)
        if checked is None:  # not rank 0
            continue
        outcome = dict(zip([id(c) for c in active], [exc for _, exc in checked]))
        groups: dict[tuple, list] = {}
        for case in suite.cases:
            exc = outcome.get(id(case))
            capability = case.capability or Path(path).name.split(".")[0].removeprefix("test_")
            if case.group is not None and not case.skip:  # judged by its group's pass rate
                groups.setdefault(case.group, []).append((case, exc))
                status = "failed" if exc else "passed"
                records.append({"file": str(path), "case": case.name, "status": status,
                                "message": str(exc) if exc else None, "group": case.group[0],
                                "capability": capability, "type": case.test_type})
                if getattr(args, "html", None):
                    pages.append(_page_record(probe, case, records[-1]))
                continue
            status = case_status(case, exc)
            failed += status in ("failed", "XPASS")
            records.append({"file": str(path), "case": case.name, "status": status,
                            "message": str(exc) if exc else None,
                            "capability": capability, "type": case.test_type})
            if getattr(args, "html", None):
                pages.append(_page_record(probe, case, records[-1]))
            lines.append(f"{status.upper():>8}  {path}::{case.name}")
            if status == "failed":
                lines += ["          " + line for line in str(exc).splitlines()]
        for (name, at_least, confidence), members in groups.items():
            rate = PassRate(tuple(case_outcome(c.name, e, group_severity(probe), c)
                                  for c, e in members), at_least, confidence, name=name)
            xfail = members[0][0].xfail
            status = ("xfailed" if not rate.ok else "XPASS") if xfail else (
                "passed" if rate.ok else "failed")
            failed += status in ("failed", "XPASS")
            for r in records:  # an expected failure counts as such in the matrix too
                if xfail and r.get("group") == name and r["file"] == str(path) \
                        and r["status"] == "failed":
                    r["status"] = "xfailed"
            group_records.append({"file": str(path), "group": name, "status": status,
                                  "passed": rate.passed, "n": rate.n, "rate": rate.rate,
                                  "at_least": at_least, "confidence": confidence,
                                  "lower": rate.lower, "needed": rate.needed})
            lines.append(f"{status.upper():>8}  {path}::{name} (pass rate: {rate.passed} of "
                         f"{rate.n})")
            if status == "failed":
                lines += ["          " + line for line in str(rate).splitlines()]
    if not distributed.is_lead():
        return None
    counts = {s: sum(r["status"] == s for r in records if "group" not in r)
              + sum(r["status"] == s for r in group_records)
              for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("passed", "failed"))
    cells = [{**r, "id": r["case"]} for r in records]
    if getattr(args, "html", None):
        html = Path(args.html).expanduser()
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html([{**r, **p} for r, p in zip(records, pages)]),
                        encoding="utf-8")
    extra = {"groups": group_records} if group_records else {}
    report = (_json(results=records, **extra, summary=counts, matrix=matrix(cells)) if args.json
              else "\n".join([*lines, "", matrix_text(cells), summary]))
    if failed:
        raise CheckFailed(report)
    return report


def _page_record(probe: Any, case: Any, record: dict) -> dict:
    """What the HTML report shows of a case beyond its record: id, prompt, top tokens."""
    page = {"id": case.name, "nodeid": f"{record['file']}::{case.name}", "prompt": case.prompt,
            "base": case.base}
    target = next((e.get("token") for e in case.expectations if e.get("token") is not None),
                  None)
    try:  # cached distributions: no new forward
        nt = probe.next_token(case.prompt, position=case.position,
                              interventions=None if case.interventions is None
                              else list(case.interventions))
        page["top"] = [[c.token, c.prob] for c in nt.top(5)]
        if target is not None:
            c = nt.candidate(target)
            page.update(target=c.token, rank=c.rank, prob=c.prob)
    except Exception:  # noqa: BLE001 - a report never breaks the run
        pass
    return page


COMMANDS = {"top": top, "rank": rank, "score": score, "sample": sample, "generate": generate,
            "lens": lens, "compare": compare, "plot": plot, "run": run}
