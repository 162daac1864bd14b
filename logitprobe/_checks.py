"""Argument checks of the assertion helpers (:mod:`logitprobe.assertions`).

Their report pieces (tables, hints) are in :mod:`logitprobe._evidence`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ._evidence import LogitAssertionError, Target, resolve, short
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .results import NextToken

F = TypeVar("F", bound=Callable[..., Any])


def _check(fn: F) -> F:
    """Raise argument errors and failures from the caller's line (library frames hidden)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        try:
            return fn(*args, **kwargs)
        except (InvalidArgument, LogitAssertionError) as exc:
            raise exc.with_traceback(None) from None

    return wrapper  # type: ignore[return-value]


# -- argument checks ---------------------------------------------------------------------
def _nt(value: Any, name: str = "nt") -> NextToken:
    from .results import NextToken, TopK

    if isinstance(value, NextToken):
        return value
    if isinstance(value, TopK):
        raise InvalidArgument(f"{name}={value!r}: pass the NextToken itself "
                              "(probe.next_token(prompt)), not its .top(k)")
    raise InvalidArgument(f"{name}={short(repr(value), 60)}: expected a NextToken from "
                          f"probe.next_token(prompt), not {type(value).__name__}")


def _number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
            example: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return float(value)
    bounds = {(None, None): "a number", (0.0, None): "a number >= 0",
              (None, 0.0): "a number <= 0 (a log-probability)",
              (0.0, 1.0): "a number between 0 and 1"}.get((low, high), "a number")
    raise InvalidArgument(f"{name}={value!r}: `{name}` must be {bounds} (try {example})")


def _rank(value: Any, name: str, vocab_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= vocab_size:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be an int between 1 and "
                              f"{vocab_size} (try {name}=10)")
    return value


def _target(nt: NextToken, token: Any, name: str = "token") -> Target:
    return resolve(nt.vocab, token, name=name)
