"""examples/tutorial.ipynb: committed without outputs, and runs top to bottom on the embedded model.

The notebook runs in a fresh IPython kernel (nbclient + ipykernel, the ``test``
extra) with this checkout first on ``PYTHONPATH``; its rich outputs are checked
against the same queries run here.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"

nbformat = pytest.importorskip("nbformat")


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) > 10
    assert [c for c in code if c.outputs or c.execution_count is not None] == []
    assert "widgets" not in nb.metadata
    assert nb.metadata.kernelspec.name == "python3"


def _outputs(cell) -> list:
    return list(cell.get("outputs", []))


def _html(cell) -> list[str]:
    return [o["data"]["text/html"] for o in _outputs(cell) if "text/html" in o.get("data", {})]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(smol, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The kernel is a subprocess: it imports logitprobe from this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in _outputs(c)]
    assert not [o for o in outputs if o.output_type == "error"]
    # the five figures of the tutorial, inline
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 5
    # every result the notebook leaves as a cell value renders as logitprobe's HTML
    fragments = [h for c in code for h in _html(c)]
    assert len(fragments) == 6
    for fragment in fragments:
        assert ET.fromstring(fragment).get("class") == "logitprobe"

    # the top-10 table after the prompt: the tokens this process gets, in the same order
    (top_cell,) = [c for c in code if c.source.rstrip().endswith("nt.top(10)")]
    (fragment,) = _html(top_cell)
    shown = [b.text for b in ET.fromstring(fragment).iter("bdi")][5:]  # after the header
    nt = smol.next_token("I like oat milk in my")
    assert shown == [repr(c.token) for c in nt.top(10)]
    probs = re.findall(r">(0\.\d{4})<span", fragment)
    assert [float(p) for p in probs] == pytest.approx([c.prob for c in nt.top(10)], abs=2e-4)

    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert 'The most likely next token is " coffee"' in text  # after the hook: the boosted token
    assert "F.softmax still matches: True" in text
    boosted = re.search(r"\(logit ([\d.]+) = max ([\d.]+) \+ 10\)", text)
    assert float(boosted.group(1)) == pytest.approx(float(boosted.group(2)) + 10, abs=0.011)
    # the failed check's report: the target row highlighted
    (report,) = [h for c in code if "assert_in_top" in c.source for h in _html(c)]
    assert "lp-marked" in report and "&#x27; tea&#x27;" in report
