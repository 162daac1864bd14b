"""The suite summary: a capability x test-type matrix of cases, failures and pass rates.

Records are plain dicts (JSON-ready), one per case: ``id``, ``capability``,
``type`` (MFT, INV or DIR), ``status`` (passed, failed, skipped, xfailed,
XPASS), and optionally ``prompt``, ``base``, ``expectation``, ``target``,
``rank``, ``prob``, ``top`` (``[[token, prob], ...]``) and ``message``. The
pytest plugin builds them from each test's report (so they survive xdist), the
``logitprobe run`` command from its outcomes; :func:`matrix_text` and
:func:`matrix` render them, :mod:`logitprobe.report_html` writes the HTML page.

>>> records = [{"id": "a", "capability": "capitals", "type": "MFT", "status": "passed"},
...            {"id": "b", "capability": "capitals", "type": "INV", "status": "failed"}]
>>> print(matrix_text(records))
capability |      MFT      |      INV      |      DIR      |     total
---------- | ------------- | ------------- | ------------- | -------------
capitals   | 1 / 0 fail    | 1 / 1 fail    |       -       | 2 / 1 fail
total      | 1 / 0 fail    | 1 / 1 fail    |       -       | 2 / 1 fail
(cells: cases / failures; pass rate 50.0% over 2 cases)
"""

from __future__ import annotations

from typing import Any, Iterable

from .templates import TEST_TYPES

__all__ = ["FAILED", "matrix", "matrix_text"]

FAILED = ("failed", "XPASS")  # statuses that count as failures
_COUNTED = ("passed", "failed", "xfailed", "XPASS")  # skipped cases are not in the matrix


def matrix(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{"rows": {capability: {type: {"cases", "failures", "rate"}}}, "total": {...}}``.

    ``rate`` is the share of cases that passed (an expected failure counts as
    passing: it did what the suite says); skipped cases are left out.
    """
    rows: dict[str, dict[str, list[int]]] = {}
    for r in records:
        if r.get("status") not in _COUNTED:
            continue
        cap = str(r.get("capability") or "other")
        kind = r.get("type") if r.get("type") in TEST_TYPES else "MFT"
        cell = rows.setdefault(cap, {}).setdefault(kind, [0, 0])
        cell[0] += 1
        cell[1] += r.get("status") in FAILED

    def out(n: int, f: int) -> dict[str, Any]:
        return {"cases": n, "failures": f, "rate": None if n == 0 else (n - f) / n}

    result: dict[str, Any] = {"rows": {}, "columns": list(TEST_TYPES)}
    totals = {k: [0, 0] for k in TEST_TYPES}
    for cap in sorted(rows):
        cells = {}
        for kind in TEST_TYPES:
            n, f = rows[cap].get(kind, [0, 0])
            totals[kind][0] += n
            totals[kind][1] += f
            if n:
                cells[kind] = out(n, f)
        n = sum(c[0] for c in rows[cap].values())
        f = sum(c[1] for c in rows[cap].values())
        cells["total"] = out(n, f)
        result["rows"][cap] = cells
    total = {k: out(*v) for k, v in totals.items() if v[0]}
    total["total"] = out(sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values()))
    result["total"] = total
    return result


def _cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return f"{'-':^13}"
    return f"{cell['cases']} / {cell['failures']} fail".ljust(13)


def matrix_text(records: Iterable[dict[str, Any]]) -> str:
    """The matrix as a text table: one row per capability, one column per test type."""
    m = matrix(records)
    names = list(m["rows"]) + ["total"]
    width = max(10, *(len(n) for n in names))
    cols = [*m["columns"], "total"]
    lines = [f"{'capability':<{width}} | " + " | ".join(f"{c:^13}" for c in cols),
             f"{'-' * width} | " + " | ".join("-" * 13 for _ in cols)]
    for name in names:
        cells = m["total"] if name == "total" and name not in m["rows"] else m["rows"][name]
        lines.append(f"{name:<{width}} | " + " | ".join(_cell(cells.get(c)) for c in cols))
    t = m["total"]["total"]
    rate = "no cases" if t["rate"] is None else f"pass rate {t['rate']:.1%} over {t['cases']} cases"
    lines.append(f"(cells: cases / failures; {rate})")
    return "\n".join(line.rstrip() for line in lines)
