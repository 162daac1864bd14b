"""Text helpers shared by every message and table: the one way to shorten a value.

``short(value)`` is for echoing a user's value in an error message (its ``repr``, bounded
in time and memory); ``clip(text)`` cuts text that is already a display string (a table
cell). Both end a cut with ``…``.

>>> short("x" * 100, width=12)
"'xxxxxxxxx…'"
>>> clip("abcdef", 4)
'abc…'
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

PROMPT_WIDTH = 300  # characters of a prompt shown in a full report


def short(text: Any, width: int = PROMPT_WIDTH) -> str:
    """``repr(text)`` cut to ``width`` characters, in time and memory bounded by ``width``.

    Any value may be given: containers are shown through :mod:`reprlib` (a few items
    per level, a few levels), so a value built from YAML aliases that would print as
    gigabytes is never expanded. A cut keeps the closing quote or bracket.
    """
    if isinstance(text, str):
        shown = repr(text if len(text) <= 4 * width else text[: 4 * width])
    else:
        brief = reprlib.Repr()  # at most 6 items per level, 3 levels deep
        brief.maxlevel, brief.maxlist, brief.maxdict = 3, 6, 6
        brief.maxstring = brief.maxother = max(width, 20)
        shown = brief.repr(text)
    return shown if len(shown) <= width else shown[: width - 2] + "…" + shown[-1]


def clip(text: str, width: int) -> str:
    """``text`` itself (no ``repr``) cut to ``width`` characters, ending in ``…`` when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


_SPEC = re.compile(r"^(?P<align>[<>^]?)(?P<sign>[+\- ]?)(?P<width>\d*)(?P<rest>.*)$")


class Table:
    """The one text-table layout of logitprobe's reports: ``  a | b`` columns, rows marked.

    Each column is ``(title, format spec)``; a row is one call of :meth:`row`. Text cells
    are cut to the column's width with :func:`clip` (a table never grows past its header),
    numbers take the spec (``">9.3f"``); the title takes only the alignment and width.

    >>> t = Table(("rank", ">4"), ("token", "<6"), ("p", ">6.3f"))
    >>> print("\\n".join([*t.header(), t.row(1, "' Paris'", 0.5, mark=">")]))
      rank | token  |      p
      ----------------------
    >    1 | ' Par… |  0.500
    """

    def __init__(self, *columns: tuple[str, str]):
        self.columns = columns

    def header(self, rule: bool = True) -> list[str]:
        """The title line (and a rule of dashes under it)."""
        head = "  " + " | ".join(format(title, self._plain(spec)) for title, spec in self.columns)
        return [head, "  " + "-" * (len(head) - 2)] if rule else [head]

    def row(self, *cells: Any, mark: str = " ") -> str:
        """One row; ``mark`` (one character, ``>`` for the row a report is about) leads it."""
        shown = []
        for (_, spec), cell in zip(self.columns, cells):
            if isinstance(cell, str):
                width = _SPEC.match(spec).group("width")  # type: ignore[union-attr]
                shown.append(format(clip(cell, int(width)) if width else cell, self._plain(spec)))
            else:
                shown.append(format(cell, spec))
        return f"{mark} " + " | ".join(shown)

    @staticmethod
    def _plain(spec: str) -> str:
        m = _SPEC.match(spec)
        return f"{m.group('align')}{m.group('width')}" if m else ""  # type: ignore[union-attr]
