"""The import graph of logitprobe/: no cycles, every internal import at module top.

Built from the sources with :mod:`ast` (nothing is imported). Only imports that run
when a module is imported count for cycles; ``if TYPE_CHECKING:`` blocks never run.
An internal import inside a function is allowed only when it is listed below with
its reason: each keeps a start-up path free of torch (or matplotlib).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "logitprobe"

TORCH_FREE_PLUGIN = "importing the pytest plugin imports no torch (it is loaded in every pytest run)"
TORCH_FREE_YAML = ("collecting a YAML file (behaviour -> assertions -> _checks/_evidence) and "
                   "the plugin's report hook import no torch")
LAZY = {  # (importer, imported): why it is imported inside a function
    ("logitprobe._plugin_state", "logitprobe"): TORCH_FREE_PLUGIN,
    ("logitprobe.pytest_plugin", "logitprobe._evidence"): TORCH_FREE_PLUGIN,
    ("logitprobe.pytest_plugin", "logitprobe._yaml_items"): TORCH_FREE_PLUGIN,
    ("logitprobe.pytest_plugin", "logitprobe._guard"): TORCH_FREE_PLUGIN,
    ("logitprobe.pytest_plugin", "logitprobe.interventions.use"): TORCH_FREE_PLUGIN,
    ("logitprobe.pytest_plugin", "logitprobe.loading"): TORCH_FREE_PLUGIN,
    ("logitprobe._evidence", "logitprobe.results"): TORCH_FREE_YAML,
    ("logitprobe._checks", "logitprobe.results"): TORCH_FREE_YAML,
    ("logitprobe.assertions", "logitprobe._reports"): TORCH_FREE_YAML,
    ("logitprobe.loading", "logitprobe.probe"): ("`import logitprobe.loading` (YAML collection, "
                                                 "the CLI) imports no torch until load() runs"),
    ("logitprobe.cli_commands", "logitprobe.results"): "`logitprobe --help` imports no torch",
    ("logitprobe.cli_commands", "logitprobe.plot"): "the CLI imports matplotlib only to plot",
    ("logitprobe.cli_commands", "logitprobe.distributed"): "`logitprobe --help` imports no torch",
    ("logitprobe.cli_diff", "logitprobe.model_diff"): "`logitprobe --help` imports no torch",
    ("logitprobe.cli_diff", "logitprobe.plot.diff"): "the CLI imports matplotlib only to plot",
    ("logitprobe._plugin_state", "logitprobe.distributed"): TORCH_FREE_PLUGIN,
    ("logitprobe._regression_plugin", "logitprobe.snapshots"): TORCH_FREE_PLUGIN,
    ("logitprobe._regression_plugin", "logitprobe.model_diff"): TORCH_FREE_PLUGIN,
    ("logitprobe.errors", "logitprobe.display"): ("errors.py is the bottom of the graph "
                                                  "(display imports it); only a notebook needs it"),
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The logitprobe modules ``node`` imports (``from . import x`` names module ``x``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[:len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                 for a in node.names]
    return [n for n in names if n in MODULES]


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(module: str) -> tuple[set[str], set[str]]:
    """``(imported at import time, imported inside a function)`` for ``module``."""
    path = MODULES[module]
    top: set[str] = set()
    local: set[str] = set()

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found = _targets(module, child, path.name == "__init__.py")
                (local if in_function else top).update(t for t in found if t != module)
            else:
                walk(child, in_function or isinstance(child, (ast.FunctionDef,
                                                               ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text(encoding="utf-8")), False)
    return top, local


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    assert len(MODULES) > 30
    top, _ = GRAPH["logitprobe.probe"]
    assert {"logitprobe.engine", "logitprobe.generation", "logitprobe._validate"} <= top


def test_no_import_cycle():
    assert _cycles({m: top for m, (top, _) in GRAPH.items()}) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_internal_imports_sit_at_module_top():
    unlisted = sorted((m, t) for m, (_, local) in GRAPH.items() for t in local
                      if (m, t) not in LAZY)
    assert unlisted == [], "import these at module top (or list them in LAZY with a reason)"


def test_every_listed_lazy_import_still_exists():
    stale = sorted(pair for pair in LAZY if pair[1] not in GRAPH[pair[0]][1])
    assert stale == []
