"""Errors raised by logitprobe.

Every error names the argument it is about, shows the value it got and says how
to fix it. Argument errors also subclass :class:`ValueError` so generic
``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "DistributedError",
    "EmptyDistributionError",
    "InvalidArgument",
    "LogitProbeError",
    "ModelUnavailableError",
    "NonFiniteLogitsError",
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


class NonFiniteLogitsError(LogitProbeError, ArithmeticError):
    """A forward pass produced logits that are no answer: NaN, +inf, or no finite logit at all.

    ``-inf`` is a legitimate logit (a banned token has probability 0); a row whose
    logits are all ``-inf`` (every token banned) is not. The message names the
    intervention that produced the values (or "the model itself" when none was
    applied), the position and what was found.
    """


class EmptyDistributionError(InvalidArgument):
    """After the warpers, no token has a finite probability to sample or choose from.

    Raised instead of sampling from NaN, e.g. when ``temperature`` is so small that
    ``logits / temperature`` overflows float32.
    """


class DistributedError(LogitProbeError):
    """A suite run over several ranks (torchrun) failed: a rank raised, died or timed out.

    The message names the rank and, when one raised, the case it was checking.
    """
