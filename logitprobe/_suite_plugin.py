"""The pytest side of behaviour suites: readable ids, one batched pass, matrix, JUnit, HTML.

Loaded with :mod:`logitprobe.pytest_plugin` (its ``pytest_plugins``). Imports
neither torch nor TransformerLens.

- ``@pytest.mark.parametrize("case", expand(...))``: each test is named by its
  :class:`~logitprobe.templates.TemplateCase` id.
- One batched pass: before the first such test runs with the ``probe``
  fixture, the prompts of the next ``CHUNK`` selected tests on the same model
  (and their base cases' prompts; fewer tests when their logits would fill
  more than half the probe's forward cache) are computed in one
  ``probe.next_token`` call; each test's own ``probe.next_token(case.prompt)``
  then reads the engine's cache.
- Every suite case (YAML cases, pass-rate groups, Python tests over template
  cases) gets JUnit XML properties ``logitprobe.*`` (case, capability, type,
  prompt, expectation, target, rank, prob, top), and the terminal summary shows
  the capability x test-type matrix. The records travel in each test report's
  ``user_properties``, so they reach the controller under xdist too.
- ``--logitprobe-html=PATH`` writes the self-contained HTML report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ._plugin_state import STATE
from ._yaml_items import LogitCase, LogitGroup
from .report_html import render
from .suite_report import matrix_text
from .templates import TemplateCase

__all__: list[str] = []

CHUNK = 512  # template-case tests whose prompts are computed together
TOP = 5  # tokens in the top-k property and the HTML bar chart
PREFIX = "logitprobe."
RECORDS = pytest.StashKey[list]()
PENDING = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("logitprobe")
    text = ("write a self-contained HTML report of the behavioural suite (matrix, every case, "
            "failing cases' evidence and top-k charts) to this file")
    group.addoption("--logitprobe-html", dest="logitprobe_html", default=None, metavar="PATH",
                    help=text)
    parser.addini("logitprobe_html", text)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RECORDS] = []
    config.stash[PENDING] = {}
    config.pluginmanager.register(_Records(config), "logitprobe-suite-records")


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    return val.id if isinstance(val, TemplateCase) else None


# -- which items are suite cases --------------------------------------------------------
def _template_case(item: Any) -> Any:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for value in callspec.params.values():
        if isinstance(value, TemplateCase):
            return value
    return None


def _probe_key(item: Any) -> Any:
    try:
        return item.config.stash[STATE].key_for(item.get_closest_marker("logitprobe"))
    except (Exception, pytest.fail.Exception):  # a bad marker: the test reports it
        return None


# -- one batched pass for Python tests over template cases --------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    case = _template_case(item)
    probe = getattr(item, "funcargs", {}).get("probe")
    if case is None or probe is None or not hasattr(probe, "next_token"):
        return
    pending = item.config.stash[PENDING].setdefault(id(probe), None)
    if pending is None:
        key = _probe_key(item)
        pending = {i.nodeid for i in item.session.items if _template_case(i) is not None
                   and "probe" in getattr(i, "fixturenames", ()) and _probe_key(i) == key}
        item.config.stash[PENDING][id(probe)] = pending
    if item.nodeid not in pending:
        return
    key = _probe_key(item)
    # At most half the forward cache: float32 rows of the vocabulary, two prompts a case.
    limit = CHUNK
    cache_bytes = getattr(getattr(probe, "engine", None), "cache_bytes", None)
    vocab = getattr(probe, "vocab_size", None)
    if isinstance(cache_bytes, int) and isinstance(vocab, int) and vocab > 0:
        limit = max(1, min(CHUNK, cache_bytes // (2 * 8 * vocab)))
    chunk, prompts = [], []
    for other in item.session.items:
        if len(chunk) >= limit:
            break
        if other.nodeid in pending and (other is item or _probe_key(other) == key):
            chunk.append(other.nodeid)
            prompts.extend(_template_case(other).prompts)
    pending.difference_update(chunk)
    try:
        probe.next_token(list(dict.fromkeys(prompts)))  # fills the engine's cache
    except Exception:  # noqa: BLE001 - a bad prompt: its own test reports it
        pass


# -- per-case properties (JUnit XML) and records ------------------------------------------
def _measure(props: list, probe: Any, prompt: str, target: Any, position: int = -1,
             interventions: Any = None) -> None:
    """Rank/prob of the target and the top tokens, from the (cached) distribution."""
    if probe is None:
        return
    try:
        nt = probe.next_token(prompt, position=position, interventions=interventions)
        props.append((PREFIX + "top", json.dumps([[c.token, round(c.prob, 6)]
                                                   for c in nt.top(TOP)])))
        if isinstance(target, (str, int)) and not isinstance(target, bool):
            c = nt.candidate(target)
            props += [(PREFIX + "rank", c.rank), (PREFIX + "prob", round(c.prob, 6))]
    except Exception:  # noqa: BLE001 - a report never breaks the run
        return


def _target(case: Any) -> Any:
    """The token a YAML case is about: its first expectation's ``token``."""
    return next((e.get("token") for e in case.expectations if e.get("token") is not None), None)


def _yaml_props(item: Any) -> list | None:
    if not isinstance(item, (LogitCase, LogitGroup)):
        return None
    stem = item.path.name.split(".")[0].removeprefix("test_")
    state = item.config.stash[STATE]
    suite = item.parent.suite
    try:
        key = state.key_for(item.get_closest_marker("logitprobe"),
                            model=suite.model if suite is not None else None)
    except (Exception, pytest.fail.Exception):
        key = None
    probe = state.probes.get(key)
    if isinstance(item, LogitGroup):
        first = item.cases[0] if item.cases else None
        members = []
        for c, e in item.outcomes:
            top: list = []
            target = _target(c)
            if e is not None:  # a failing member's top tokens, for the HTML chart
                _measure(top, probe, c.prompt, target, c.position,
                         None if c.interventions is None else list(c.interventions))
            found = dict(top)
            members.append([c.name, c.test_type, e is None, c.base,
                            None if e is None else str(e)[:2000], c.prompt, target,
                            json.loads(found.get(PREFIX + "top", "null"))])
        return [(PREFIX + "case", item.name),
                (PREFIX + "capability", (first and first.capability) or stem),
                (PREFIX + "type", "group"), (PREFIX + "members", json.dumps(members))]
    case = item.case
    target = _target(case)
    props = [(PREFIX + "case", case.name), (PREFIX + "capability", case.capability or stem),
             (PREFIX + "type", case.test_type), (PREFIX + "prompt", case.prompt),
             (PREFIX + "expectation", ", ".join(e.name for e in case.expectations))]
    if case.base:
        props.append((PREFIX + "base", case.base))
    if target is not None:
        props.append((PREFIX + "target", target))
    _measure(props, probe, case.prompt, target, case.position,
             None if case.interventions is None else list(case.interventions))
    return props


def _python_props(item: Any) -> list | None:
    case = _template_case(item)
    if case is None:
        return None
    props = [(PREFIX + "case", case.id),
             (PREFIX + "capability", case.capability or getattr(item, "originalname", "")
              or item.name),
             (PREFIX + "type", case.test_type), (PREFIX + "prompt", case.prompt),
             (PREFIX + "expectation", getattr(item, "originalname", item.name))]
    if case.base is not None:
        props.append((PREFIX + "base", case.base.id))
    if case.target is not None:
        props.append((PREFIX + "target", case.target))
    _measure(props, getattr(item, "funcargs", {}).get("probe"), case.prompt, case.target)
    return props


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not (call.when == "call" or (call.when == "setup" and report.outcome != "passed")):
        return
    try:
        props = _yaml_props(item) if _template_case(item) is None else _python_props(item)
    except Exception:  # noqa: BLE001 - a report never breaks the run
        props = None
    if props:
        item.user_properties.extend(props)  # JUnit XML reads them from the teardown report
        report.user_properties.extend(props)  # the records: this report, also under xdist


class _Records:
    """Collects the suite records from test reports (on the controller, under xdist too)."""

    def __init__(self, config: pytest.Config):
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        _collect(self.config.stash[RECORDS], report)


def _collect(records: list, report: pytest.TestReport) -> None:
    props = {k[len(PREFIX):]: v for k, v in report.user_properties
             if isinstance(k, str) and k.startswith(PREFIX)}
    if not props or report.when == "teardown":
        return
    if report.when == "setup" and report.outcome == "passed":
        return
    status = report.outcome
    if hasattr(report, "wasxfail"):
        status = "xfailed" if report.outcome == "skipped" else "XPASS"
    if props.get("type") == "group":
        for name, kind, ok, base, message, prompt, target, top in json.loads(
                props.get("members", "[]")):
            records.append({"id": name, "nodeid": f"{report.nodeid}::{name}", "prompt": prompt,
                            "target": target, "top": top,
                            "capability": props.get("capability"), "type": kind,
                            "status": "passed" if ok else
                            "xfailed" if status == "xfailed" else "failed", "base": base,
                            "message": message, "group": props.get("case")})
        if not json.loads(props.get("members", "[]")):
            records.append({"id": props.get("case"), "nodeid": report.nodeid,
                            "capability": props.get("capability"), "type": "MFT",
                            "status": status, "message": report.longreprtext or None})
        return
    record = {"id": props.get("case"), "nodeid": report.nodeid,
              "capability": props.get("capability"), "type": props.get("type"),
              "status": status, "prompt": props.get("prompt"), "base": props.get("base"),
              "expectation": props.get("expectation"), "target": props.get("target"),
              "rank": props.get("rank"), "prob": props.get("prob"),
              "top": json.loads(props["top"]) if "top" in props else None,
              "message": report.longreprtext if status in ("failed", "XPASS") else None}
    records.append(record)


def _html_path(config: pytest.Config) -> str | None:
    value = config.getoption("logitprobe_html") or config.getini("logitprobe_html")
    return str(value) if value else None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    records = config.stash[RECORDS]
    if records:
        terminalreporter.write_sep("=", "logitprobe suite: capability x test type")
        for line in matrix_text(records).splitlines():
            terminalreporter.write_line(line)
    path = _html_path(config)
    if path is not None and not hasattr(config, "workerinput"):
        target = Path(path).expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(records), encoding="utf-8")
            terminalreporter.write_line(f"logitprobe: HTML report written to {target}")
        except OSError as exc:
            terminalreporter.write_line(f"logitprobe: cannot write the HTML report to {target}: "
                                        f"{exc.strerror or exc}", red=True)
