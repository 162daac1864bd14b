"""A self-contained static HTML report of a behavioural suite: one file, no server, no network.

The page holds the capability x test-type matrix, a table of every case, and
for each failing case its evidence (the failure report, ``>`` rows
highlighted) and a small top-k bar chart as inline SVG. Styles are inline;
there is no script, stylesheet, font or image to fetch. Text is escaped with
:mod:`logitprobe.display`'s helpers, and the page is well-formed XML (XHTML).

Written by ``pytest --logitprobe-html=report.html`` from the records of
:mod:`logitprobe.suite_report`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Sequence

from .display import _BLUE, _MARKED, _RED, _e, _table, _title, _wrap, token
from .suite_report import FAILED, matrix

__all__ = ["render", "topk_svg"]

BAR_W, ROW_H, LABEL_W = 220, 16, 130


def topk_svg(top: Sequence[Sequence[Any]], target: str | None = None) -> str:
    """An inline SVG bar chart of ``[[token, prob], ...]``; the ``target`` token's bar is red."""
    rows = [(str(t), float(p)) for t, p in top]
    height = ROW_H * len(rows) + 4
    width = LABEL_W + BAR_W + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lp-topk" width="{width}" '
             f'height="{height}" role="img" font-family="monospace" font-size="11">',
             f"<title>top {len(rows)} next tokens</title>"]
    for i, (tok, p) in enumerate(rows):
        y = 2 + i * ROW_H
        color = _RED if target is not None and tok == target else _BLUE
        label = repr(tok) if len(repr(tok)) <= 18 else repr(tok)[:17] + "…"
        parts.append(f'<text x="{LABEL_W - 4}" y="{y + 11}" text-anchor="end">{_e(label)}</text>')
        parts.append(f'<rect x="{LABEL_W}" y="{y + 2}" width="{max(0.5, p * BAR_W):.1f}" '
                     f'height="{ROW_H - 4}" fill="{color}"/>')
        parts.append(f'<text x="{LABEL_W + max(0.5, p * BAR_W) + 4:.1f}" y="{y + 11}">'
                     f"{p:.3f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _matrix_table(records: list[dict[str, Any]]) -> str:
    m = matrix(records)
    cols = [*m["columns"], "total"]

    def cell(c: dict[str, Any] | None) -> str:
        if not c or not c["cases"]:
            return "-"
        style = f' style="color:{_RED};font-weight:bold"' if c["failures"] else ""
        return (f"<span{style}>{c['cases']} / {c['failures']}</span> "
                f"({c['rate']:.0%})")

    rows = []
    for name, cells in [*m["rows"].items(), ("total", m["total"])]:
        tds = "".join(f'<td style="padding:1px 8px;text-align:right">{cell(cells.get(c))}</td>'
                      for c in cols)
        rows.append(f'<tr><td style="padding:1px 8px"><b>{_e(name)}</b></td>{tds}</tr>')
    return _table(["capability", *(f"{c} (cases / failures)" for c in cols)], rows,
                  ["left"] + ["right"] * len(cols))


def _evidence(message: str) -> str:
    lines = []
    for line in message.split("\n"):
        lines.append(f'<span class="lp-marked" style="{_MARKED}">{_e(line)}</span>'
                     if line.lstrip().startswith(">") else _e(line))
    return '<pre style="margin:2px 0;font-size:12px;white-space:pre-wrap">' + "\n".join(lines) \
        + "</pre>"


def render(records: Iterable[dict[str, Any]], *, title: str = "logitprobe suite report") -> str:
    """The whole page as a string (XHTML, UTF-8, self-contained)."""
    records = list(records)
    failing = [r for r in records if r.get("status") in FAILED]
    head = ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head>'
            '<meta charset="utf-8"/>'
            f"<title>{_e(title)}</title></head><body>")
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = len([r for r in records if r.get("status") != "skipped"])
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p>{total} cases, {len(failing)} failing; written {_e(when)}.</p>",
             "<h2>Capability x test type</h2>", _wrap(_matrix_table(records)),
             "<h2>Cases</h2>"]
    align = ["left", "left", "left", "left", "right", "right", "left"]
    rows = []
    for r in records:
        status = str(r.get("status", "?"))
        style = f' style="color:{_RED};font-weight:bold"' if status in FAILED else ""
        anchor = f'<a href="#case-{_anchor(r)}">{_e(r.get("id"))}</a>' if status in FAILED \
            else _e(r.get("id"))
        rank = r.get("rank")
        prob = r.get("prob")
        rows.append("<tr>" + "".join(
            f'<td style="padding:1px 8px;text-align:{a}">{v}</td>' for a, v in zip(align, [
                f'<span class="lp-case">{anchor}</span>', _e(r.get("capability") or "other"),
                _e(r.get("type") or "MFT"), f"<span{style}>{_e(status)}</span>",
                "" if rank is None else _e(rank), "" if prob is None else _e(f"{prob:.4f}"),
                token(r["prompt"]) if isinstance(r.get("prompt"), str) else ""])) + "</tr>")
    parts.append(_wrap(_table(["case", "capability", "type", "status", "rank", "prob",
                               "prompt"], rows, align)))
    if failing:
        parts.append("<h2>Failing cases</h2>")
    for r in failing:
        section = [f'<h3 id="case-{_anchor(r)}">{_e(r.get("id"))}</h3>']
        if r.get("base"):
            section.append(f"<p>perturbed from {_e(r['base'])}</p>")
        if r.get("top"):
            section.append(_title(f"top {len(r['top'])} after {token(r.get('prompt', ''))}"))
            section.append(topk_svg(r["top"], r.get("target")))
        section.append(_evidence(str(r.get("message") or "")))
        parts.append(f'<div class="lp-failure">{_wrap(*section)}</div>')
    return head + "".join(parts) + "</body></html>\n"


def _anchor(record: dict[str, Any]) -> str:
    text = str(record.get("nodeid") or record.get("id"))
    return "".join(ch if ch.isalnum() else "-" for ch in text)[:120]
