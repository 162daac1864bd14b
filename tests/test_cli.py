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
