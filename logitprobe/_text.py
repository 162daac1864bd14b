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
