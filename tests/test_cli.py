"""The command line, on the tiny GPT-2 (the embedded model is exercised by `make demo`)."""

import json
import subprocess
import sys

from logitprobe.cli import main


def test_top_prints_a_table(tiny_gpt2_dir, tiny, capsys):
    assert main(["top", "The cat sat", "-k", "3", "--model", str(tiny_gpt2_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    top = tiny.next_token("The cat sat").top(3)
    assert "Top 3 next tokens after 'The cat sat'" in out
    for c in top:
        assert repr(c.token) in out


def test_rank_marks_the_token(tiny_gpt2_dir, tiny, capsys):
    assert main(["rank", "I like oat milk in my", " coffee", "--model", str(tiny_gpt2_dir),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rank = tiny.next_token("I like oat milk in my").rank(" coffee")
    assert f"' coffee' ranks {rank} of 1000" in out
    assert any(line.startswith(">") and "' coffee'" in line for line in out.splitlines())


def test_json_output(tiny_gpt2_dir, tiny, capsys):
    assert main(["top", "The cat", "-k", "2", "--json", "--model", str(tiny_gpt2_dir),
                 "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in data["top"]] == tiny.next_token("The cat").top(2).ids


def test_score_command(tiny_gpt2_dir, capsys):
    assert main(["score", "The cat", " sat on", "--model", str(tiny_gpt2_dir), "--device", "cpu"]) == 0
    assert "Score of ' sat on' after 'The cat'" in capsys.readouterr().out


def test_errors_have_exit_codes(tiny_gpt2_dir, tmp_path, capsys):
    assert main(["rank", "The cat", "coffee", "--model", str(tiny_gpt2_dir), "--device", "cpu"]) == 2
    assert "did you mean ' coffee'" in capsys.readouterr().err
    assert main(["top", "x", "-k", "0", "--model", str(tiny_gpt2_dir), "--device", "cpu"]) == 2
    assert "k=0" in capsys.readouterr().err
    assert main(["top", "x", "--model", str(tmp_path / "missing")]) == 3
    assert "no such file or directory" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "logitprobe.cli", "--version"], capture_output=True,
                         text=True, check=True).stdout
    import logitprobe

    assert out.strip() == logitprobe.__version__


def _tiny(dirpath):
    return ["--model", str(dirpath), "--device", "cpu"]


def test_sample_counts(tiny_gpt2_dir, tiny, capsys):
    assert main(["sample", "The cat", "-n", "200", "--seed", "3", "--json", *_tiny(tiny_gpt2_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = tiny.sample_frequencies("The cat", 200, seed=3).most_common()
    assert [tuple(x) for x in data["counts"]] == [tuple(x) for x in expected]
    assert sum(c for _, c in data["counts"]) == 200


def test_generate_is_greedy_generate(tiny_gpt2_dir, tiny, capsys):
    assert main(["generate", "The cat sat", "--max-new-tokens", "6", *_tiny(tiny_gpt2_dir)]) == 0
    out = capsys.readouterr().out
    expected = tiny.generate("The cat sat", max_new_tokens=6)
    assert out.splitlines()[0] == "The cat sat" + expected.text
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == len(expected.token_ids)


def test_lens_and_plot(tiny_gpt2_dir, tmp_path, capsys):
    assert main(["lens", "The cat sat", " on", *_tiny(tiny_gpt2_dir)]) == 0
    assert "' on'" in capsys.readouterr().out
    out = tmp_path / "fig" / "logits.png"
    assert main(["plot", "The cat sat", "--highlight", " on", "--out", str(out), *_tiny(tiny_gpt2_dir)]) == 0
    assert out.stat().st_size > 5000 and f"wrote {out}" in capsys.readouterr().out


def test_compare_with_a_spec_file(tiny_gpt2_dir, tiny, tmp_path, capsys):
    spec = tmp_path / "boost.yaml"
    spec.write_text("interventions:\n- kind: set_logit\n  token: ' coffee'\n  to: max+10\n")
    assert main(["compare", "I like oat milk in my", " coffee", "--interventions", str(spec),
                 "--json", *_tiny(tiny_gpt2_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["argmax_changed"] is (tiny.next_token("I like oat milk in my").argmax != " coffee")
    assert data["changes"][0]["rank_after"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("- kind: set_logit\n  token: ' coffee'\n  to: max+++\n")
    assert main(["top", "x", "--interventions", str(bad), *_tiny(tiny_gpt2_dir)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: interventions[0]: SetLogit: to='max+++'" in err


def test_run_a_behaviour_file(tiny_gpt2_dir, tiny, tmp_path, capsys):
    best = tiny.next_token("The cat sat").argmax.token
    good = tmp_path / "test_ok.logit.yaml"
    good.write_text(f"- name: best\n  prompt: The cat sat\n  expect:\n    argmax: {best!r}\n")
    assert main(["run", str(good), *_tiny(tiny_gpt2_dir)]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out
    bad = tmp_path / "test_bad.logit.yaml"
    bad.write_text(f"- name: never\n  prompt: The cat sat\n  expect:\n"
                   f"    not_in_top: {{token: {best!r}, k: 1}}\n")
    assert main(["run", str(bad), str(good), *_tiny(tiny_gpt2_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "never" in out and "1 passed, 1 failed" in out
    invalid = tmp_path / "test_invalid.logit.yaml"
    invalid.write_text("- name: x\n  prompt: hi\n  expect:\n    in_topk: ' a'\n")
    assert main(["run", str(invalid), *_tiny(tiny_gpt2_dir)]) == 2
    assert "did you mean 'in_top'" in capsys.readouterr().err
