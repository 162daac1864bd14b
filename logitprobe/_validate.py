"""Argument checks shared by the query modules (probe, generation, lens).

They live below those modules so each can import them at its top: a check that lived in
``probe.py`` made ``generation`` and ``lens`` import ``probe`` back from inside functions.
"""

from __future__ import annotations

import operator
from typing import Any

from .errors import InvalidArgument, PromptError

__all__ = ["position", "positive_int", "prompt_list"]


def prompt_list(prompts: Any) -> list[str]:
    """``prompts`` as a list of str; a :class:`PromptError` naming the bad item otherwise."""
    if isinstance(prompts, (list, tuple)) and prompts:
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise PromptError(f"prompt[{i}]={p!r}: every prompt must be a str")
        return list(prompts)
    got = "an empty list" if isinstance(prompts, (list, tuple)) else type(prompts).__name__
    raise PromptError(f"prompt={prompts!r}: `prompt` must be a str or a non-empty list of str, "
                      f"not {got}")


def position(position: int, n: int, prompt: str) -> int:
    """``position`` (negative counts from the end) as an index into ``n`` prompt tokens."""
    pos = position + n if position < 0 else position
    if not 0 <= pos < n:
        raise InvalidArgument(f"position={position!r}: the prompt {prompt!r} has {n} tokens, "
                              f"so `position` must be in [{-n}, {n - 1}]")
    return pos


def positive_int(value: Any, name: str, example: str) -> int:
    """``value`` as an int >= 1 (any integer type); ``example`` ends the message."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a positive int ({example})")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a positive int "
                              f"({example})") from None
    if value < 1:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a positive int ({example})")
    return value
