"""Errors raised by logitprobe.

Every error names the argument it is about, shows the value it got and says how
to fix it. Argument errors also subclass :class:`ValueError` so generic
``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "DistributedError",
    "InvalidArgument",
    "LogitProbeError",
    "ModelUnavailableError",
    "PromptError",
    "TokenError",
]


class LogitProbeError(Exception):
    """Base class of every error logitprobe raises on purpose."""


class InvalidArgument(LogitProbeError, ValueError):
    """An argument has a wrong value or type (``k=0``, ``temperature=-1``, ...)."""


class TokenError(InvalidArgument):
    """A token could not be resolved to exactly one vocabulary entry.

    Raised for unknown tokens, strings that are several tokens, ids out of range,
    empty strings and values that are neither ``str`` nor ``int``.
    """


class PromptError(InvalidArgument):
    """A prompt cannot be run: empty, not a string, or longer than the context."""


class ModelUnavailableError(LogitProbeError, OSError):
    """A model could not be loaded (offline, missing path, corrupt file, ...).

    The message says what was tried, why it failed and which offline
    alternatives exist.
    """


class DistributedError(LogitProbeError):
    """A suite run over several ranks (torchrun) failed: a rank raised, died or timed out.

    The message names the rank and, when one raised, the case it was checking.
    """
