"""The logitprobe pytest plugin: a ``probe`` fixture, evidence on failure, YAML test files.

Registered under the ``pytest11`` entry point, so installing logitprobe
enables it. It stays out of the way of test runs that do not use it: importing
it imports neither torch nor TransformerLens, and a model is loaded only when
a test asks for ``probe`` or a ``test_*.logit.yaml`` case runs.

- Options (with ini equivalents): ``--logitprobe-model`` (default ``gpt2``),
  ``--logitprobe-device``, ``--logitprobe-dtype``, ``--logitprobe-skip-unavailable``.
- Fixture ``probe``: the model under test, loaded once per session (per xdist
  worker) and per distinct ``@pytest.mark.logitprobe(model=..., device=..., dtype=...)``.
  With device auto on a GPU machine, xdist worker ``gwN`` loads on ``cuda:{N % GPUs}``.
- ``assert " Paris" in nt.top(5)`` failures show the top 5 and the token's rank.
- ``test_*.logit.yaml`` files are collected: one test per case, batched forwards.
- Golden snapshots (fixture ``logit_snapshot``, ``--logitprobe-snapshot-update``) and verdict
  flips against ``--logitprobe-baseline``: :mod:`logitprobe._regression_plugin`.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from . import _regression_plugin  # snapshots and baseline flips: their own hooks and options
from ._plugin_state import (DEVICE, DTYPES, MARKER_ARGS, STATE, Settings, State, _check_device,
                            _check_dtype, _Failure)  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .probe import Probe

__all__ = ["probe"]
# Template-case ids, one batched pass, the suite matrix, JUnit properties, --logitprobe-html.
pytest_plugins = ["logitprobe._suite_plugin"]

# -- hooks -------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if not pluginmanager.is_registered(_regression_plugin):
        pluginmanager.register(_regression_plugin, "logitprobe-regression")
    group = parser.getgroup("logitprobe", "logitprobe: behavioural tests of language models")
    options = [
        ("model", "model the `probe` fixture loads: a name, a path or 'smollm2' (default: gpt2)"),
        ("device", "device to load models on: auto, cpu, cuda, cuda:N, mps (default: auto)"),
        ("dtype", f"model dtype: {', '.join(DTYPES)} (default: float32)"),
    ]
    for name, text in options:
        group.addoption(f"--logitprobe-{name}", dest=f"logitprobe_{name}", default=None, help=text)
        parser.addini(f"logitprobe_{name}", text)
    group.addoption("--logitprobe-skip-unavailable", dest="logitprobe_skip_unavailable",
                    action="store_true", default=None,
                    help="skip tests whose model cannot be loaded (offline, missing), "
                         "instead of failing them")
    parser.addini("logitprobe_skip_unavailable", "skip tests whose model cannot be loaded",
                  type="bool", default=False)


def _setting(config: pytest.Config, name: str, default: Any) -> Any:
    value = config.getoption(f"logitprobe_{name}")
    if value is None:
        value = config.getini(f"logitprobe_{name}")
    return default if value in (None, "") else value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "logitprobe(model=None, device=None, dtype=None): run the `probe` fixture of "
                   "this test (module, class) on another model")
    dtype = str(_setting(config, "dtype", "float32"))
    device = str(_setting(config, "device", "auto"))
    _check_dtype(dtype, "--logitprobe-dtype")
    _check_device(device, "--logitprobe-device")
    settings = Settings(model=str(_setting(config, "model", "gpt2")),
                        device=None if device == "auto" else device, dtype=dtype,
                        skip_unavailable=bool(_setting(config, "skip_unavailable", False)))
    config.stash[STATE] = State(settings)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    s = config.stash[STATE].settings
    versions = []
    for dist in ("logitprobe", "torch", "transformers", "transformer-lens"):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    return [f"logitprobe: model={s.model}, device={s.device or 'auto'}, dtype={s.dtype}; "
            + ", ".join(versions)]


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any):
    """``token in nt.top(k)`` / ``not in`` and ``nt.argmax == token`` / ``!=``: the top 5,
    the token's rank, p and logit, a hint."""
    results = sys.modules.get("logitprobe.results")  # not imported: no TopK, no Candidate
    if results is None or op not in ("in", "not in", "==", "!="):
        return None
    from ._evidence import compact_contains, compact_equals

    try:
        if op in ("in", "not in"):
            return compact_contains(op, left, right) if isinstance(right, results.TopK) else None
        if isinstance(left, results.Candidate) or isinstance(right, results.Candidate):
            return compact_equals(op, left, right)
    except Exception:  # noqa: BLE001 - never break pytest's own report
        return None
    return None


def pytest_collect_file(file_path: Any, parent: pytest.Collector):
    name = file_path.name
    if name.startswith("test_") and name.endswith((".logit.yaml", ".logit.yml")):
        from ._yaml_items import LogitFile

        return LogitFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)  # after conftest hooks that add markers (they pick the model)
def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Check YAML cases with their model's tokenizer alone (prompt lengths, positions)."""
    if any(type(item).__name__ == "LogitCase" for item in items):
        from ._yaml_items import check_items

        check_items(items)


# -- the fixture -------------------------------------------------------------------------
def _hook_count(model: Any) -> int:
    points = getattr(model, "hook_dict", None)
    if not isinstance(points, dict):
        return 0
    unique = {id(hp): hp for hp in points.values()}  # aliases name one hook point twice
    return sum(len(getattr(hp, "fwd_hooks", ())) + len(getattr(hp, "bwd_hooks", ()))
               for hp in unique.values())


@pytest.fixture
def probe(request: pytest.FixtureRequest):
    """The :class:`logitprobe.Probe` under test.

    The model comes from ``@pytest.mark.logitprobe(model=...)`` on the test,
    class or module, else ``--logitprobe-model`` / ini ``logitprobe_model``
    (default ``gpt2``). Each distinct model is loaded once per session (per
    xdist worker). Nothing a test does to the shared model leaks into the next
    test: hooks it leaves (on hook points, raw torch hooks on any submodule,
    global module hooks) are removed, an ``intervene`` block left open is
    closed, and a weight edit torch can see (in place, a replaced parameter,
    ``load_state_dict``) makes the next test load the model afresh; each with a
    warning. Writes through ``.data`` are invisible: do not make them here.
    """
    from ._guard import Snapshot
    from .interventions.use import close_scope, open_scope

    state = request.config.stash[STATE]
    key = state.key_for(request.node.get_closest_marker("logitprobe"))
    loaded = state.get(key)
    before = _hook_count(loaded.backend.module)  # a deferred bridge stays unbooted
    snapshot = Snapshot(loaded)
    yield loaded
    name = request.node.name
    left = _hook_count(loaded.backend.module) - before
    if left > 0:
        loaded.model.reset_hooks(including_permanent=False)
        loaded.clear_cache()
        _warn(f"{name} left {left} hook(s) on probe.model; they were removed and the forward "
              "cache cleared. Pass interventions= to the query instead (or use "
              "probe.model.hooks(...) as a context manager)")
    raw = snapshot.remove_new_hooks()
    if raw > 0:
        loaded.clear_cache()
        _warn(f"{name} left {raw} torch hook(s) (register_forward_hook, "
              "register_forward_pre_hook or a global module hook) on probe.model; they were "
              "removed. Remove them in the test (handle.remove() in a finally block), or pass "
              "interventions= to the query instead")
    if open_scope(loaded) is not None:  # a `probe.intervene(...)` never exited
        close_scope(loaded)
        _warn(f"{name} left a probe.intervene(...) block open; it was closed. Use it as "
              "`with probe.intervene(...):`")
    if snapshot.weights_changed():
        _forget(state, loaded)
        _warn(f"{name} changed the weights of probe.model (an in-place edit, a replaced "
              "parameter, load_state_dict or compatibility mode); the model is reloaded for "
              "the next test. Edit a private copy instead (logitprobe.load(...) in the test) "
              "or use interventions=, which leave the weights alone")


def _forget(state: State, probe: Probe) -> None:
    """Drop ``probe`` so that the next test needing its model loads it afresh from disk."""
    from . import loading

    for cache in (state.probes, loading._LOADED):  # load() returns one probe per arguments
        for k in [k for k, v in cache.items() if v is probe]:
            del cache[k]


def _warn(message: str) -> None:
    warnings.warn(pytest.PytestWarning(f"logitprobe: {message}"), stacklevel=2)
