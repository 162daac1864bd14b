"""Errors raised by logitprobe: every public one is defined here.

Every error names the argument it is about, shows the value it got and says how
to fix it. Argument errors also subclass :class:`ValueError` so generic
``except ValueError`` handlers keep working. The tree::

    LogitProbeError (Exception)
    ├── InvalidArgument (ValueError)          a wrong argument value or type
    │   ├── TokenError                        a token is not exactly one vocabulary entry
    │   ├── PromptError                       an empty, non-str or too long prompt
    │   ├── EmptyDistributionError            no token left to sample after the warpers
    │   └── BehaviourFileError                a malformed ``test_*.logit.yaml`` file
    ├── LogitAssertionError (AssertionError)  a behavioural check failed: the report
    │   └── SnapshotError                     a golden snapshot is missing or incomparable
    ├── ModelUnavailableError (OSError)       a model could not be loaded
    ├── NonFiniteLogitsError (ArithmeticError) NaN or +inf logits
    ├── InterventionNotFired                  a spec changed no forward
    ├── DistributedError                      a torchrun rank raised, died or timed out
    └── OptionalDependencyError (ImportError) pandas missing for ``to_pandas()``

One warning, not an error: ``DamagedCacheWarning`` (a ``UserWarning``, in
:mod:`logitprobe.loading`) when a cached copy of the weights failed its checksum.
The older homes re-export them (``logitprobe.assertions.LogitAssertionError``,
``logitprobe.behaviour.BehaviourFileError``, ``logitprobe.records.OptionalDependencyError``,
``logitprobe.interventions.compile.InterventionNotFired``, ``logitprobe.snapshots.SnapshotError``).
"""

from __future__ import annotations

__all__ = [
    "BehaviourFileError",
    "DistributedError",
    "EmptyDistributionError",
    "InterventionNotFired",
    "InvalidArgument",
    "LogitAssertionError",
    "LogitProbeError",
    "ModelUnavailableError",
    "NonFiniteLogitsError",
    "OptionalDependencyError",
    "PromptError",
    "SnapshotError",
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


class BehaviourFileError(InvalidArgument):
    """A behavioural test file is malformed; the message names file, case and field."""


class LogitAssertionError(LogitProbeError, AssertionError):
    """A behavioural check failed; ``str(err)`` is the whole report.

    ``verdict`` is the one-line summary, ``evidence`` the tables, ``hint`` a
    suggestion or None. An ``AssertionError``, so pytest and plain scripts treat
    it as a failed ``assert``.
    """

    __module__ = "logitprobe"  # where users import it from (and how tracebacks name it)

    def __init__(self, verdict: str, evidence: str = "", hint: str | None = None):
        self.verdict = verdict
        self.evidence = evidence
        self.hint = hint
        parts = [verdict] + ([evidence] if evidence else []) + ([f"hint: {hint}"] if hint else [])
        super().__init__("\n".join(parts))

    def _repr_html_(self) -> str:
        """The report in a notebook: verdict, evidence (``>`` rows highlighted), hint."""
        from . import display  # lazy: errors.py is the bottom of the import graph

        return display.evidence(self)


class SnapshotError(LogitAssertionError):
    """A snapshot cannot be compared: missing, unreadable, or taken with other weights/device.

    A subclass of :class:`~logitprobe.LogitAssertionError` (so of ``AssertionError``): the
    test fails with the message, which says how to write or rewrite the snapshot.
    """

    __module__ = "logitprobe.snapshots"


class InterventionNotFired(LogitProbeError):
    """A spec selected no position in any forward it was attached to."""


class OptionalDependencyError(LogitProbeError, ImportError):
    """An optional package a call needs (pandas for ``to_pandas()``) is not installed."""


class DistributedError(LogitProbeError):
    """A suite run over several ranks (torchrun) failed: a rank raised, died or timed out.

    The message names the rank and, when one raised, the case it was checking.
    """
