"""The examples run offline on the embedded model and say what the tutorial says."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduce_tutorial(smol, smol_hf, tmp_path, capsys):
    example = load_example("reproduce_tutorial")
    assert example.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    model, tok = smol_hf
    ids = tok(example.PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(ids).logits[0, -1]
    argmax = tok.decode(int(ref.argmax()))
    assert f'The most likely next token is "{argmax}"' in out
    assert f"There are {len(example.TEXT)} characters and {len(tok(example.TEXT).input_ids)} tokens" in out
    assert "direct softmax gives" in out and "F.softmax still matches: True" in out
    boosted = re.search(r'\(logit ([\d.]+) = max ([\d.]+) \+ 10\)', out)
    assert float(boosted.group(1)) == pytest.approx(float(boosted.group(2)) + 10, abs=0.011)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(["logits_5th_token.png", "softmax_panels.png", "log_softmax_panels.png",
                           "logits_final.png", "logits_hooked.png"])
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)
