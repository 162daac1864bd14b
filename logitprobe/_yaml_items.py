"""pytest collection of ``test_*.logit.yaml`` files: one item per case, batched forwards.

Batching: when a file's first case runs, the forwards of that case and of the
next ``CHUNK - 1`` selected cases of the file (after ``-k`` / ``-m``
deselection) are computed together by :func:`logitprobe.behaviour.prefetch`;
each case then takes its results and releases them. Memory stays bounded by
the chunk; the number of forward passes is what the engine's batching makes
of the chunk (a few for hundreds of short prompts).

Checks at collection: the file's schema, expectations and interventions when
it is read (:func:`logitprobe.behaviour.load_suite`); then, once every item
knows its model (after ``conftest.py`` markers), :func:`check_items` counts
each case's prompts with the model's ``tokenizer.json`` alone (the
``tokenizers`` library: no weights, no torch) and marks cases whose prompt is
empty or longer than the context, or whose ``position`` is out of range. Such
a case fails with that message without loading the model. A model whose
tokenizer cannot be found without loading it (a .gguf file, a Hub model not
in the local cache, smollm2 before its first load) is checked when it runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import behaviour, loading
from ._regression_plugin import run_case
from ._plugin_state import STATE
from ._yaml_templates import group_severity
from .errors import LogitAssertionError
from .passrate import PassRate, outcome

if TYPE_CHECKING:
    from .probe import Probe

__all__ = ["LogitCase", "LogitFile", "LogitGroup", "TokenCounter", "check_items"]

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
        groups: dict[str, list[behaviour.Case]] = {}
        for case in self.suite.cases:
            if case.group is not None:  # a pass-rate group: one item checks them together
                if case.group[0] not in groups:
                    groups[case.group[0]] = []
                    group = LogitGroup.from_parent(self, name=case.group[0],
                                                   cases=groups[case.group[0]])
                    if case.skip:
                        group.add_marker(pytest.mark.skip(reason=case.skip))
                    if case.xfail:
                        group.add_marker(pytest.mark.xfail(reason=case.xfail, strict=True))
                    yield group
                groups[case.group[0]].append(case)
                continue
            item = LogitCase.from_parent(self, name=case.name, case=case)
            # The marks give pytest's outcomes the rule of behaviour.case_status (strict xfail).
            if case.skip:
                item.add_marker(pytest.mark.skip(reason=case.skip))
            if case.xfail:
                item.add_marker(pytest.mark.xfail(reason=case.xfail, strict=True))
            yield item

    def results_for(self, item: LogitCase, probe: Probe) -> behaviour.Prefetched:
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
                        and other.problem is None and other.name in pending
                        and other.probe_key() == item.probe_key()):
                    chunk.append(other)
            pending.difference_update(i.name for i in chunk)
            behaviour.prefetch(probe, [i.case for i in chunk], into=results)
        return results


class LogitCase(pytest.Item):
    """One case of a behavioural test file."""

    def __init__(self, *, case: behaviour.Case, **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case
        self.problem: str | None = None  # set by check_items: fails before the model loads

    def probe_key(self) -> tuple:
        state = self.config.stash[STATE]
        suite = self.parent.suite
        return state.key_for(self.get_closest_marker("logitprobe"),
                             model=suite.model if suite is not None else None)

    def runtest(self) -> None:
        __tracebackhide__ = True
        if self.problem is not None:
            raise behaviour.BehaviourFileError(self.problem)
        probe = self.config.stash[STATE].get(self.probe_key())
        results = self.parent.results_for(self, probe)
        run_case(self, probe, results)  # expectations, then `snapshot:`, baseline verdicts

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        # By class name: a re-imported module (pytester runs) makes a second class object.
        names = {cls.__name__ for cls in type(excinfo.value).__mro__}
        if "LogitProbeError" in names:  # a named error: its message is the report
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, (self.case.line or 1) - 1, self.name


class LogitGroup(pytest.Item):
    """A pass-rate group of a behavioural test file: its cases checked as one rate."""

    def __init__(self, *, cases: list[behaviour.Case], **kwargs: Any):
        super().__init__(**kwargs)
        self.cases = cases  # filled while the file is collected
        self.outcomes: list[tuple[behaviour.Case, BaseException | None]] = []

    def runtest(self) -> None:
        __tracebackhide__ = True

        suite = self.parent.suite
        key = self.config.stash[STATE].key_for(self.get_closest_marker("logitprobe"),
                                               model=suite.model if suite is not None else None)
        probe = self.config.stash[STATE].get(key)
        results = behaviour.prefetch(probe, self.cases)
        self.outcomes = []
        for case in self.cases:
            try:
                behaviour.check_case(probe, case, results)
                self.outcomes.append((case, None))
            except AssertionError as exc:
                self.outcomes.append((case, exc))
        _, at_least, confidence = self.cases[0].group
        rate = PassRate(tuple(outcome(c.name, e, group_severity(probe), c)
                              for c, e in self.outcomes), at_least, confidence,
                        name=f"{self.parent.name}::{self.name}")
        if not rate.ok:
            raise _group_failure(rate)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        names = {cls.__name__ for cls in type(excinfo.value).__mro__}
        if "LogitProbeError" in names:
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, (self.cases[0].line or 1) - 1 if self.cases else 0, self.name


def _group_failure(rate: Any) -> BaseException:

    text = str(rate).split("\n", 1)
    return LogitAssertionError(text[0], text[1] if len(text) > 1 else "")


# -- checks with the tokenizer alone ------------------------------------------------------
class TokenCounter:
    """Token counts of prompts from a model's ``tokenizer.json`` and ``config.json``.

    What :func:`logitprobe.behaviour.token_problem` needs, without weights or torch.
    """

    def __init__(self, directory: Path):
        import tokenizers  # a dependency of transformers; imports no torch

        self.tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_truncation()  # count every token, as logitprobe's encode does
        self.tokenizer.no_padding()
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        n_ctx = next((config[k] for k in ("n_positions", "max_position_embeddings", "n_ctx")
                      if isinstance(config.get(k), int)), None)
        self.n_ctx: int | None = n_ctx

    @classmethod
    def for_model(cls, model: str) -> TokenCounter | None:
        """The counter for a model name or path, or None when its files are not at hand."""
        directory = _tokenizer_dir(model)
        if directory is None:
            return None
        try:
            return cls(directory)
        except Exception:  # noqa: BLE001 - unreadable here: checked when the case runs
            return None

    def count(self, text: str) -> tuple[int, int]:
        return (len(self.tokenizer.encode(text, add_special_tokens=False).ids),
                len(self.tokenizer.encode(text).ids))

    def pieces(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def _tokenizer_dir(model: str) -> Path | None:
    """A directory with the ``tokenizer.json`` and ``config.json`` of ``model``, if on disk."""
    def usable(d: Path) -> bool:
        return (d / "tokenizer.json").is_file() and (d / "config.json").is_file()

    if model.lower() == "smollm2":  # the dequantized copy the first load() made
        try:
            stem = loading.smollm2_path().stem
        except loading.ModelUnavailableError:
            return None
        copies = sorted((d for d in (loading.cache_dir() / "gguf").glob(f"{stem}-*")
                         if usable(d)), key=lambda d: d.stat().st_mtime)
        return copies[-1] if copies else None
    path = Path(model).expanduser()
    if path.is_dir():
        return path if usable(path) else None
    if path.exists() or os.sep in model and model.startswith((".", "/", "~")):
        return None  # a .gguf file (its tokenizer needs reading the file) or a missing path
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: only for Hub names; no torch

        files = [try_to_load_from_cache(model, name) for name in ("tokenizer.json", "config.json")]
    except Exception:  # noqa: BLE001 - not a Hub name: checked when the case runs
        return None
    if all(isinstance(f, str) for f in files):
        directory = Path(files[0]).parent
        return directory if Path(files[1]).parent == directory else None
    return None


def check_items(items: list) -> None:
    """Mark the YAML cases among ``items`` that their model's tokenizer shows are invalid."""
    counters: dict[str, TokenCounter | None] = {}
    for item in items:
        if not isinstance(item, LogitCase):
            continue
        try:
            model = item.probe_key()[0]
        except (Exception, pytest.fail.Exception):  # a bad marker: reported when it runs
            continue
        if model not in counters:
            counters[model] = TokenCounter.for_model(model)
        counter = counters[model]
        if counter is not None:
            item.problem = behaviour.token_problem(item.case, counter)
        if item.problem is not None:  # a broken case is an error, not an expected failure
            item.own_markers[:] = [m for m in item.own_markers if m.name != "xfail"]
