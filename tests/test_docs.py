"""Every Python block in the README and docs runs (on the embedded model), and the site builds.

Blocks run in order, one namespace per file. A block preceded by a line
``<!-- skip: reason -->`` is not run (for blocks that need the network).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?P<skip><!-- skip:[^>]*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group("code"))
            for m in BLOCK.finditer(text) if not m.group("skip")]


@pytest.mark.parametrize("path", [f for f in FILES if python_blocks(f)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path, smol, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    import matplotlib

    matplotlib.use("Agg")
    import logitprobe

    # Pages may continue from the quickstart's `probe = logitprobe.load("smollm2")`.
    namespace: dict = {"__name__": "__docs__", "logitprobe": logitprobe, "probe": smol,
                       "pytest": pytest}
    for line, code in python_blocks(path):
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)  # our own docs, not user text
        except Exception as exc:
            raise AssertionError(f"{path.name}, block at line {line} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc


def test_site_builds_without_warnings(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                             "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
