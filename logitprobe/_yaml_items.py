"""pytest collection of ``test_*.logit.yaml`` files: one item per case, batched forwards.

Batching: when a file's first case runs, the forwards of that case and of the
next ``CHUNK - 1`` selected cases of the file (after ``-k`` / ``-m``
deselection) are computed together by :func:`logitprobe.behaviour.prefetch`;
each case then takes its results and releases them. Memory stays bounded by
the chunk; the number of forward passes is what the engine's batching makes
of the chunk (a few for hundreds of short prompts).
"""

from __future__ import annotations

from typing import Any

import pytest

from . import behaviour
from ._regression_plugin import run_case

__all__ = ["LogitCase", "LogitFile"]

CHUNK = 512  # cases prefetched together


class LogitFile(pytest.File):
    """A behavioural test file; its cases are :class:`LogitCase` items."""

    suite: behaviour.Suite | None = None

    def collect(self):
        try:
            self.suite = behaviour.load_suite(self.path)
        except behaviour.BehaviourFileError as exc:
            raise self.CollectError(str(exc)) from None
        self._pending: dict[int, set[str]] = {}  # id(probe) -> names not yet prefetched
        self._results: dict[int, behaviour.Prefetched] = {}
        for case in self.suite.cases:
            item = LogitCase.from_parent(self, name=case.name, case=case)
            if case.skip:
                item.add_marker(pytest.mark.skip(reason=case.skip))
            if case.xfail:
                item.add_marker(pytest.mark.xfail(reason=case.xfail, strict=True))
            yield item

    def results_for(self, item: LogitCase, probe: Any) -> behaviour.Prefetched:
        """Prefetched results with ``item``'s queries in them (computing the next chunk if not)."""
        key = id(probe)
        results = self._results.setdefault(key, behaviour.Prefetched())
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = {i.name for i in self.session.items
                                            if isinstance(i, LogitCase) and i.parent is self}
        if item.name in pending:
            chunk = [item]
            for other in self.session.items:
                if len(chunk) >= CHUNK:
                    break
                if (isinstance(other, LogitCase) and other.parent is self and other is not item
                        and other.name in pending and other.probe_key() == item.probe_key()):
                    chunk.append(other)
            pending.difference_update(i.name for i in chunk)
            behaviour.prefetch(probe, [i.case for i in chunk], into=results)
        return results


class LogitCase(pytest.Item):
    """One case of a behavioural test file."""

    def __init__(self, *, case: behaviour.Case, **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case

    def probe_key(self) -> tuple:
        from .pytest_plugin import STATE

        state = self.config.stash[STATE]
        suite = self.parent.suite
        return state.key_for(self.get_closest_marker("logitprobe"),
                             model=suite.model if suite is not None else None)

    def runtest(self) -> None:
        __tracebackhide__ = True
        from .pytest_plugin import STATE

        probe = self.config.stash[STATE].get(self.probe_key())
        results = self.parent.results_for(self, probe)
        run_case(self, probe, results)  # expectations, then `snapshot:`, baseline verdicts

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        # By class name: a re-imported module (pytester runs) makes a second class object.
        names = {cls.__name__ for cls in type(excinfo.value).__mro__}
        if names & {"LogitAssertionError", "InvalidArgument"}:
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, (self.case.line or 1) - 1, self.name
