"""The benchmark harness runs (smoke mode: toy sizes, no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_harness_runs_in_smoke_mode(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    groups = {r["group"] for r in data["results"]}
    assert {"queries", "suite", "load", "generation (gpt2-tiny)", "sampling (gpt2-tiny)",
            "cached step (gpt2-tiny)"} <= groups
    for r in data["results"]:
        assert r["value"] == r["value"] and r["value"] >= 0, r  # a number, not NaN
        assert r["ok"] is None  # smoke mode judges no target
        if r["timing"]:
            t = r["timing"]
            assert 0 < t["min"] <= t["median"] <= t["max"], r
    ratios = [r for r in data["results"] if r["unit"] == "x"]
    assert len(ratios) >= 12
    table = (tmp_path / "smoke.md").read_text()
    assert table.startswith("# logitprobe benchmarks (smoke)") and "| group | benchmark |" in table
    assert data["meta"]["repeats"] == 1
