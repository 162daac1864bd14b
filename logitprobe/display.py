"""Rich display in Jupyter: ``_repr_html_`` for every result, as one static HTML fragment.

The HTML shows the text table's columns, numbers formatted as in the text
table, the target row highlighted and probabilities as inline CSS bars. It is
self-contained (inline styles: no JavaScript, no stylesheet, no network) and
well-formed XML, so it survives notebook sanitizers and renders the same
everywhere. Token text is shown as the text tables show it, ``repr(token)``
(control characters, bidi marks and other invisible characters as escapes),
HTML-escaped and wrapped in ``<bdi>`` so right-to-left text cannot reorder the
row. The text tables (``str(result)``) are unchanged.

>>> html = probe.next_token("I like oat milk in my")._repr_html_()   # doctest: +SKIP
>>> html.startswith('<div class="logitprobe"')                        # doctest: +SKIP
True
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable, Sequence

from ._text import short
from .sampling_stats import binomial_interval

__all__ = ["attribution", "comparison", "evidence", "frequencies", "generation", "lens",
           "next_token", "patch_sweep", "score", "top_k"]

PROMPT_WIDTH = 120  # characters of a prompt shown in a title (repr, shortened)
BAR_PX = 80  # width of a full (p = 1) probability bar

_ROOT = ('<div class="logitprobe" style="font-family:ui-monospace,SFMono-Regular,Menlo,'
         'Consolas,monospace;font-size:12px;line-height:1.35">')
_TABLE = '<table style="border-collapse:collapse;margin:2px 0 6px 0">'
_CELL = "padding:1px 8px;border-bottom:1px solid rgba(128,128,128,0.25)"
_MARKED = "background:rgba(255,196,0,0.30);font-weight:bold"
_BLUE, _RED = "#4c78a8", "#e45756"


# -- pieces ----------------------------------------------------------------------------
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _e(text: Any) -> str:
    """HTML-escaped, with any raw control character or lone surrogate as a ``\\x..`` escape."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
    return html.escape(text, quote=True)


def token(text: str) -> str:
    """A token cell: ``repr(text)`` escaped, isolated from the surrounding direction."""
    return f"<bdi>{_e(repr(text))}</bdi>"


def _title(text: str) -> str:
    return f'<div style="font-weight:bold;margin:2px 0">{text}</div>'


def _note(text: str) -> str:
    return f'<div style="margin:2px 0;opacity:0.8">{text}</div>'


def _bar(value: float, width: float, color: str = _BLUE) -> str:
    px = width if math.isfinite(width) else 0.0
    return (f'<span style="display:inline-block;vertical-align:middle;height:0.8em;'
            f'width:{max(0.0, px):.1f}px;background:{color};margin-left:4px"></span>')


def prob_cell(p: float, fmt: str = ".4f") -> str:
    """The probability as in the text table, then a bar of ``p * BAR_PX`` pixels."""
    return f"{_e(format(p, fmt))}{_bar(p, p * BAR_PX)}"


def _row(cells: Sequence[str], *, marked: bool = False, align: Sequence[str] = ()) -> str:
    tds = []
    for i, cell in enumerate(cells):
        side = align[i] if i < len(align) else "right"
        tds.append(f'<td style="{_CELL};text-align:{side}">{cell}</td>')
    if marked:
        return f'<tr class="lp-marked" style="{_MARKED}">{"".join(tds)}</tr>'
    return f"<tr>{''.join(tds)}</tr>"


def _table(header: Sequence[str], rows: Iterable[str], align: Sequence[str] = ()) -> str:
    ths = "".join(f'<th style="{_CELL};text-align:{align[i] if i < len(align) else "right"}">'
                  f"<bdi>{_e(h)}</bdi></th>" for i, h in enumerate(header))
    return f"{_TABLE}<thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _wrap(*parts: str) -> str:
    return _ROOT + "".join(parts) + "</div>"


def _prompt(prompt: str | None) -> str:
    return _e(short(prompt, PROMPT_WIDTH)) if prompt is not None else "?"


def _fmt(x: float, spec: str = ".3f") -> str:
    return str(x) if math.isinf(x) or math.isnan(x) else format(x, spec)


# -- results ---------------------------------------------------------------------------
_CAND = ("rank", "token", "id", "logit", "prob")
_CAND_ALIGN = ("right", "left", "right", "right", "left")


def _candidate_rows(cands: Iterable[Any], marked: Iterable[int] = ()) -> list[str]:
    marked = set(marked)
    return [_row([str(c.rank), token(c.token), str(c.id), _e(f"{c.logit:.3f}"),
                  prob_cell(c.prob)], marked=c.id in marked, align=_CAND_ALIGN) for c in cands]


def top_k(top: Any, marked: Iterable[int] = ()) -> str:
    """A TopK: ``rank | token | id | logit | prob``."""
    head = _title(f"Top {top.k} after {_prompt(top.prompt)}") if top.prompt is not None else ""
    return _wrap(head, _table(_CAND, _candidate_rows(top, marked), _CAND_ALIGN))


def next_token(nt: Any, k: int = 10, marked: Iterable[int] = ()) -> str:
    """A NextToken: its top ``k`` (10, as ``str``), ``marked`` ids highlighted."""
    return _wrap(_title(f"Next token after {_prompt(nt.prompt)}"),
                 _table(_CAND, _candidate_rows(nt.top(k), marked), _CAND_ALIGN))


def score(sc: Any) -> str:
    """A Score: ``token | logprob | prob | rank``; tokens greedy decoding would not pick marked."""
    title = _title(f"Score of {_e(repr(sc.continuation))} after {_prompt(sc.prompt)}: "
                   f"logprob={sc.logprob:.4f} (greedy={sc.is_greedy})")
    align = ("left", "right", "left", "right")
    rows = [_row([token(t.token), _e(f"{t.logprob:.4f}"), prob_cell(t.prob), str(t.rank)],
                 marked=not t.greedy, align=align) for t in sc.tokens]
    return _wrap(title, _table(("token", "logprob", "prob", "rank"), rows, align))


def generation(gen: Any) -> str:
    """A Generation: ``step | token | id | prob | rank | warped p``."""
    why = gen.stop_reason + (f" {gen.stop_string!r}" if gen.stop_string else "")
    title = _title(f"{_prompt(gen.prompt)} → {_e(short(gen.text, PROMPT_WIDTH))} "
                   f"({len(gen.steps)} tokens, stopped by {_e(why)})")
    align = ("right", "left", "right", "left", "right", "left")
    rows = [_row([str(i), token(s.token), str(s.id), prob_cell(s.prob), str(s.rank),
                  prob_cell(s.warped_prob)], align=align) for i, s in enumerate(gen.steps)]
    return _wrap(title, _table(("step", "token", "id", "prob", "rank", "warped p"), rows, align))


def frequencies(freq: Any, rows: int = 10) -> str:
    """SampleFrequencies: ``token | count | freq | p | 99% interval`` for the ``rows`` most common."""
    title = _title(f"{freq.n} samples after {_prompt(freq.prompt)} (seed={freq.seed})")
    align = ("left", "right", "left", "right", "right")
    body = []
    for tid, c in freq._sorted()[:rows]:
        lo, hi = binomial_interval(c, freq.n, confidence=0.99)
        body.append(_row([token(freq.vocab.decode_one(tid)), str(c),
                          prob_cell(c / freq.n), _e(f"{float(freq._probs[tid]):.4f}"),
                          _e(f"[{lo:.4f}, {hi:.4f}]")], align=align))
    more = len(freq._counts) - rows
    note = _note(f"... {more} more tokens") if more > 0 else ""
    return _wrap(title, _table(("token", "count", "freq", "p", "99% interval"), body, align), note)


def comparison(cmp: Any) -> str:
    """A Comparison: top-k before / after side by side, named tokens highlighted, their changes."""
    named = set(cmp.token_ids)
    title = _title(f"prompt {_prompt(cmp.prompt)}: {len(cmp.specs)} intervention(s); "
                   f"KL(before || after) = {_e(_fmt(cmp.kl))} nats")
    align = ("right", "left", "left", "left", "left")
    rows = []
    for i, (b, a) in enumerate(zip(cmp.top_before, cmp.top_after), start=1):
        cells = [str(i), token(b.token), prob_cell(b.prob), token(a.token), prob_cell(a.prob)]
        rows.append(_row(cells, marked=b.id in named or a.id in named, align=align))
    parts = [title, _table(("#", "before", "prob", "after", "prob"), rows, align)]
    if cmp.changes:
        calign = ("left", "right", "right", "right")
        crow = [_row([token(c.token), _e(f"{c.rank_before} → {c.rank_after}"),
                      _e(f"{c.prob_before:.4f} → {c.prob_after:.4f}"),
                      _e(f"{_fmt(c.logit_before)} → {_fmt(c.logit_after)}")], marked=True,
                     align=calign) for c in cmp.changes]
        parts.append(_table(("token", "rank", "prob", "logit"), crow, calign))
    if cmp.logit_diff is not None:
        b, a = cmp.logit_diff
        names = " - ".join(repr(c.token) for c in cmp.changes)
        parts.append(_note(f"logit diff {_e(names)}: {_e(_fmt(b))} → {_e(_fmt(a))}"))
    return _wrap(*parts)


def lens(result: Any) -> str:
    """A LensResult: ``layer | top-k | p(top1) | tracked tokens``; tracked tokens highlighted."""
    tracked, ids = result.tracked, list(result.tracked_ids)
    title = _title(f"Logit lens after {_prompt(result.prompt)} (position {result.position})")
    ranks = result.ranks.tolist() if ids else [[] for _ in range(len(result))]
    probs = result._logprobs[:, ids].exp().tolist() if ids else ranks
    align = ["left", "left", "left"] + ["right"] * len(ids)
    rows = []
    for i, (label, top) in enumerate(zip(result.labels, result.top())):
        words = " ".join(f'<span style="{_MARKED}">{token(c.token)}</span>' if c.id in ids
                         else token(c.token) for c in top)
        cells = [_e(label), words, prob_cell(top[0].prob)]
        cells += [_e(f"#{r} p={p:.3f}") for r, p in zip(ranks[i], probs[i])]
        rows.append(_row(cells, align=align))
    header = ["layer", f"top-{result.k}", "p(top1)"] + [repr(t) for t in tracked]
    return _wrap(title, _table(header, rows, align))


def attribution(attr: Any) -> str:
    """An Attribution: ``part | attribution`` with a bar left (negative) or right (positive)."""
    title = _title(f"Direct logit attribution of {_e(attr.quantity)} after "
                   f"{_prompt(attr.prompt)} (position {attr.position})")
    values = [*zip(attr.labels, attr._values.tolist()), ("bias", attr.bias)]
    scale = max([abs(v) for _, v in values if math.isfinite(v)] + [1e-12])
    half = BAR_PX / 2
    align = ("left", "right", "left")
    rows = []
    for label, value in values:
        px = half * abs(value) / scale if math.isfinite(value) else 0.0
        neg = (f'<span style="display:inline-block;width:{half:.1f}px;text-align:right">'
               f'{_bar(value, px, _RED) if value < 0 else ""}</span>')
        pos = (f'<span style="display:inline-block;width:{half:.1f}px;'
               f'border-left:1px solid gray">{_bar(value, px, _BLUE) if value > 0 else ""}</span>')
        rows.append(_row([_e(label), _e(f"{value:+.4f}"), neg + pos], align=align))
    rows.append(_row(["sum", _e(f"{attr.total:+.4f}"), ""], align=align))
    rows.append(_row(["model", _e(f"{attr.logit:+.4f}"), _e(f"(error {attr.error:+.2g})")],
                     align=align))
    return _wrap(title, _table(("part", "attribution", ""), rows, align))


def patch_sweep(sw: Any) -> str:
    """A PatchSweep: the heatmap as a table (blue above 0, red below, by the largest |value|)."""
    matrix, row_labels, cols = sw.heatmap()
    title = _title(f"patching {_e(sw.activation)} from {_prompt(sw.clean)} into "
                   f"{_prompt(sw.corrupted)}; {_e(sw.metric)}: clean {sw.clean_value:.3f}, "
                   f"corrupted {sw.corrupted_value:.3f}")
    values = matrix.tolist()
    finite = [abs(v) for row in values for v in row if math.isfinite(v)]
    scale = max(finite + [1e-12])
    rows = []
    for label, row in zip(row_labels, values):
        tds = [f'<td style="{_CELL};text-align:right">{_e(label)}</td>']
        for v in row:
            alpha = min(1.0, abs(v) / scale) * 0.6 if math.isfinite(v) else 0.0
            rgb = "76,120,168" if v >= 0 else "228,87,86"
            tds.append(f'<td style="{_CELL};text-align:right;background:rgba({rgb},{alpha:.2f})">'
                       f"{_e(format(v, '.3f'))}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return _wrap(title, _table(["layer", *cols], rows))


def evidence(err: Any) -> str:
    """A failed check (LogitAssertionError): the verdict, the evidence with its ``>`` rows
    highlighted, the hint."""
    parts = [_title(_e(err.verdict))]
    if err.evidence:
        lines = []
        for line in err.evidence.split("\n"):
            lines.append(f'<span class="lp-marked" style="{_MARKED}">{_e(line)}</span>'
                         if line.startswith(">") else _e(line))
        parts.append('<pre style="margin:2px 0;font-size:12px">' + "\n".join(lines) + "</pre>")
    if err.hint:
        parts.append(_note(f"hint: {_e(err.hint)}"))
    return _wrap(*parts)
