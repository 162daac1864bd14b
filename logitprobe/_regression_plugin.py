"""pytest side of regression testing: the ``logit_snapshot`` fixture, YAML ``snapshot:`` cases,
and verdict flips against a baseline model.

Registered by :mod:`logitprobe.pytest_plugin` (its ``pytest_addoption``), so it
shares the plugin's options group and loaded models. Importing it imports
neither torch nor TransformerLens.

- ``--logitprobe-snapshot-update``: write missing snapshots, rewrite failing
  ones (passing ones are kept, so files do not churn) and remove unused ones.
- ``--logitprobe-snapshot-any-model`` / ``--logitprobe-snapshot-any-device``:
  compare snapshots taken with other weights / on another device type.
- ``--logitprobe-baseline MODEL`` (and ``--logitprobe-baseline-dtype``): run each
  behavioural YAML case under that model too; the terminal summary shows the
  verdict flips with an exact McNemar test.

Snapshot files are written at the end of the session; under pytest-xdist each
worker writes its own entries (merged into the file), and the terminal summary
(unused snapshots, flips) is shown only without xdist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import behaviour
from ._plugin_state import STATE, _check_dtype
from .errors import InvalidArgument, LogitProbeError

__all__ = ["logit_snapshot"]

MAX_LISTED = 20  # unused snapshots listed in the summary


@dataclass
class RegressionState:
    """Per-session state (in ``config.stash``)."""

    update: bool
    any_model: bool
    any_device: bool
    baseline: str | None
    baseline_dtype: str | None
    files: dict[Path, Any] = field(default_factory=dict)  # module path -> SnapshotFile
    used: dict[Path, set[str]] = field(default_factory=dict)
    collected: dict[Path, set[str]] = field(default_factory=dict)
    passed: dict[Path, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("passed", "failed", "written", "rewritten", "removed"), 0))
    unused: dict[Path, list[str]] = field(default_factory=dict)
    outcomes: list[tuple[str, bool, bool, str | None]] = field(default_factory=list)

    def file_for(self, module: Path) -> Any:
        from .snapshots import SnapshotFile

        module = Path(module)
        if module not in self.files:
            self.files[module] = SnapshotFile(snapshot_path(module))
        return self.files[module]


REGRESSION = pytest.StashKey[RegressionState]()


def snapshot_path(module: Path) -> Path:
    """``tests/test_geo.py`` -> ``tests/__snapshots__/test_geo.snap.yaml``."""
    return module.parent / "__snapshots__" / f"{module.stem}.snap.yaml"


def _base(nodeid: str) -> str:
    """The test's name inside its file: ``test_x[a]``, ``TestA::test_x``, a YAML case name."""
    return nodeid.split("::", 1)[1] if "::" in nodeid else nodeid


# -- hooks -------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("logitprobe")
    flags = [
        ("snapshot-update", "write missing logit snapshots, rewrite failing ones, remove "
                            "unused ones"),
        ("snapshot-any-model", "compare logit snapshots taken with other weights (another "
                               "fingerprint) instead of failing"),
        ("snapshot-any-device", "compare logit snapshots taken on another device type instead "
                                "of failing"),
    ]
    for name, text in flags:
        dest = "logitprobe_" + name.replace("-", "_")
        group.addoption(f"--logitprobe-{name}", dest=dest, action="store_true", default=False,
                        help=text)
    group.addoption("--logitprobe-baseline", dest="logitprobe_baseline", default=None,
                    help="also run behavioural YAML cases under this baseline model and show "
                         "verdict flips (exact McNemar test) in the summary")
    group.addoption("--logitprobe-baseline-dtype", dest="logitprobe_baseline_dtype", default=None,
                    help="dtype of the baseline model (default: --logitprobe-dtype)")
    parser.addini("logitprobe_baseline", "baseline model for verdict flips")


def pytest_configure(config: pytest.Config) -> None:
    baseline = config.getoption("logitprobe_baseline") or config.getini("logitprobe_baseline")
    dtype = config.getoption("logitprobe_baseline_dtype")
    if dtype is not None:
        _check_dtype(dtype, "--logitprobe-baseline-dtype")
    config.stash[REGRESSION] = RegressionState(
        update=config.getoption("logitprobe_snapshot_update"),
        any_model=config.getoption("logitprobe_snapshot_any_model"),
        any_device=config.getoption("logitprobe_snapshot_any_device"),
        baseline=baseline or None, baseline_dtype=dtype)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Before -k/-m deselection: a snapshot of a deselected test is not "unused".
    state = config.stash[REGRESSION]
    for item in items:
        state.collected.setdefault(Path(item.path), set()).add(_base(item.nodeid))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    state = item.config.stash.get(REGRESSION, None)
    if state is not None and report.when == "call" and report.passed:
        # a test that passed and did not check a snapshot key no longer uses it
        state.passed.setdefault(Path(item.path), set()).add(_base(item.nodeid))


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(REGRESSION, None)
    if state is None:
        return
    rootpath = session.config.rootpath
    for module, names in state.collected.items():
        path = snapshot_path(module)
        if not path.exists():
            continue
        file = state.file_for(module)
        try:
            keys = list(file.entries)
        except Exception:  # noqa: BLE001 - an unreadable file fails the tests that use it
            continue
        used = state.used.get(module, set())
        passed = state.passed.get(module, set())
        unused = [k for k in keys if k.split("#")[0] not in names
                  or (k.split("#")[0] in passed and k not in used)]
        if not unused:
            continue
        if state.update:
            for key in unused:
                file.remove(key)
            state.counts["removed"] += len(unused)
        else:
            state.unused[_relative(path, rootpath)] = unused
    if state.update:
        for file in state.files.values():
            file.save()


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(REGRESSION, None)
    if state is None:
        return
    counts = {k: v for k, v in state.counts.items() if v}
    n_unused = sum(len(v) for v in state.unused.values())
    if counts or n_unused:
        parts = [f"{v} {k}" for k, v in counts.items()] + ([f"{n_unused} unused"] if n_unused
                                                             else [])
        terminalreporter.write_sep("-", "logitprobe snapshots")
        terminalreporter.write_line(", ".join(parts))
        listed = 0
        for path, keys in state.unused.items():
            for key in keys:
                if listed < MAX_LISTED:
                    terminalreporter.write_line(f"  unused: {path} :: {key}")
                listed += 1
        if n_unused:
            more = f" ({n_unused - MAX_LISTED} more not listed)" if n_unused > MAX_LISTED else ""
            terminalreporter.write_line(f"  unused snapshots{more}: their tests are gone or no "
                                        "longer check them; --logitprobe-snapshot-update "
                                        "removes them")
    if state.baseline and state.outcomes:
        from .model_diff import CaseOutcome, Flips

        settings = config.stash[_plugin_state_key()].settings
        cases = [CaseOutcome(n, b, c, m) for n, b, c, m in state.outcomes]
        flips = Flips(cases, baseline=f"{state.baseline} ({state.baseline_dtype or settings.dtype})",
                      candidate=f"{settings.model} ({settings.dtype})")
        terminalreporter.write_sep("-", "logitprobe verdict flips against the baseline")
        for line in str(flips).splitlines():
            terminalreporter.write_line(line)


def _plugin_state_key() -> Any:
    return STATE


# -- the fixture -------------------------------------------------------------------------
class SnapshotFixture:
    """``logit_snapshot(probe, prompts)``: check the prompts' predictions against the snapshot."""

    def __init__(self, request: pytest.FixtureRequest):
        self._node = request.node
        self._config = request.config
        self._calls = 0

    def __call__(self, probe: Any, prompts: Any, *, name: str | None = None, k: int = 20,
                 atol: float | None = None, rtol: float | None = None,
                 strict_ranks: bool = False, allow_other_model: bool | None = None,
                 allow_other_device: bool | None = None, interventions: Any = None,
                 position: int = -1) -> Any:
        """Compare (or with ``--logitprobe-snapshot-update``, record) ``prompts``' top ``k``.

        One batched forward. Several checks in one test get keys ``test#2``,
        ``test#3``, ... unless named (``name="greetings"`` -> ``test#greetings``).
        Returns the :class:`~logitprobe.snapshots.SnapshotResult` (None when written).
        """
        __tracebackhide__ = True
        self._calls += 1
        if name is not None and (not isinstance(name, str) or not name or "#" in name):
            raise InvalidArgument(f"name={name!r}: `name` must be a non-empty str without '#'")
        suffix = f"#{name}" if name else ("" if self._calls == 1 else f"#{self._calls}")
        key = _base(self._node.nodeid) + suffix
        return check(self._config, Path(self._node.path), key, probe, prompts, k=k, atol=atol,
                     rtol=rtol, strict_ranks=strict_ranks, allow_other_model=allow_other_model,
                     allow_other_device=allow_other_device, interventions=interventions,
                     position=position)


def check(config: pytest.Config, module: Path, key: str, probe: Any, prompts: Any, *,
          allow_other_model: bool | None = None, allow_other_device: bool | None = None,
          **options: Any) -> Any:
    """One snapshot check inside pytest: counts, ``used`` bookkeeping, update mode."""
    __tracebackhide__ = True
    from .snapshots import check_snapshot

    state = config.stash[REGRESSION]
    state.used.setdefault(module, set()).add(key)
    try:
        status, result = check_snapshot(
            state.file_for(module), key, probe, prompts, update=state.update,
            allow_other_model=state.any_model if allow_other_model is None else allow_other_model,
            allow_other_device=(state.any_device if allow_other_device is None
                                else allow_other_device), **options)
    except AssertionError:
        state.counts["failed"] += 1
        raise
    state.counts[status] += 1
    return result


@pytest.fixture
def logit_snapshot(request: pytest.FixtureRequest) -> SnapshotFixture:
    """Golden snapshots of next-token predictions: ``logit_snapshot(probe, ["The capital of"])``.

    Stored in ``__snapshots__/<test file>.snap.yaml`` beside the test; a missing
    snapshot fails (write it with ``--logitprobe-snapshot-update``). See
    docs/regression.md.
    """
    return SnapshotFixture(request)


# -- behavioural YAML cases ----------------------------------------------------------------
def run_case(item: Any, probe: Any, results: Any) -> None:
    """Check a YAML case: its expectations, its ``snapshot:``, and the baseline's verdict."""
    __tracebackhide__ = True
    state = item.config.stash.get(REGRESSION, None)
    case = item.case
    base_passed = _baseline_verdict(item, state) if state is not None and state.baseline else None
    snap = getattr(case, "snapshot", None)
    module, key = Path(item.path), _base(item.nodeid)
    try:
        subject = behaviour.check_case(probe, case, results)
    except BaseException as exc:
        if state is not None:
            if snap is not None:
                state.used.setdefault(module, set()).add(key)  # not "unused": the case failed
            if base_passed is not None:
                from .model_diff import failure_text

                state.outcomes.append((item.nodeid, base_passed, False, failure_text(case, exc)))
        raise
    if base_passed is not None:
        state.outcomes.append((item.nodeid, base_passed, True, None))
    if snap is not None:
        iv = None if case.interventions is None else list(case.interventions)
        check(item.config, module, key, probe, case.prompt, position=case.position,
              interventions=iv, results=None if subject is None else [subject], **dict(snap))


def _baseline_verdict(item: Any, state: RegressionState) -> bool:
    plugin = item.config.stash[STATE]
    _, device, dtype = item.probe_key()
    probe = plugin.get((state.baseline, device, state.baseline_dtype or dtype))
    try:
        behaviour.check_case(probe, item.case, item.parent.results_for(item, probe))
    except AssertionError:
        return False
    except Exception as exc:  # noqa: BLE001 - an InvalidArgument on the baseline: a failure
        if isinstance(exc, LogitProbeError):
            return False
        raise
    return True
