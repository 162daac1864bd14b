"""The command line, on the tiny GPT-2; the examples of docs/cli.md run on the embedded SmolLM2."""

import io
import json
import math
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitprobe import cli, cli_commands
from logitprobe.cli import main
from logitprobe.results import format_table


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


# --- Exit codes, JSON errors, strict JSON (issue 12) -------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _strict(text):
    """json.loads that rejects Infinity/NaN, as standard (non-Python) parsers do."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def _subcommands():
    action = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return list(action.choices)


def test_help_documents_every_exit_code(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert sorted(cli.EXIT_CODES) == [0, 1, 2, 3, 4]
    for code in cli.EXIT_CODES:
        assert re.search(rf"^  {code}  \S", out, re.M), code
    assert "--traceback" in out and "LOGITPROBE_TRACEBACK" in out
    assert cli.main(["top", "--help"]) == 0  # every subcommand's help has them too
    assert "exit codes:" in capsys.readouterr().out


def test_usage_errors_exit_2(tiny_gpt2_dir, capsys):
    assert cli.main(["top"]) == 2  # argparse: missing prompt
    err = capsys.readouterr().err
    assert err.startswith("usage: logitprobe top") and "required: prompt" in err
    assert cli.main(["top", "x", "-k", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err
    assert cli.main(["rank", "x", "coffee", *_tiny(tiny_gpt2_dir)]) == 2  # TokenError
    assert capsys.readouterr().err.startswith("logitprobe: error: token='coffee'")


def test_unexpected_errors_exit_4_with_one_line(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("disk on fire\nsecond line " + "x" * 1000)

    monkeypatch.setitem(cli_commands.COMMANDS, "top", broken)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    assert cli.main(["top", "x"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("logitprobe: error: unexpected RuntimeError: disk on fire (rerun with "
                          "--traceback or LOGITPROBE_TRACEBACK=1")
    assert cli.main(["top", "x", "--traceback"]) == 4
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    assert cli.main(["top", "x"]) == 4
    assert "RuntimeError: disk on fire" in capsys.readouterr().err


def test_exit_code_mapping():
    from logitprobe.errors import (InvalidArgument, LogitProbeError, ModelUnavailableError,
                                   TokenError)

    assert cli.exit_code(ModelUnavailableError("m")) == 3
    for exc in (InvalidArgument("a"), TokenError("t"), LogitProbeError("l"),
                FileNotFoundError("f")):
        assert cli.exit_code(exc) == 2, exc
    for exc in (ValueError("v"), TypeError("t"), MemoryError()):
        assert cli.exit_code(exc) == 4, exc


@pytest.mark.parametrize("argv, code, kind", [
    (["top"], 2, "UsageError"),
    (["top", "x", "-k", "0"], 2, "InvalidArgument"),
    (["rank", "x", "coffee"], 2, "TokenError"),
    (["top", "x", "--model", "MISSING"], 3, "ModelUnavailableError"),
])
def test_json_errors_are_objects_on_stdout(argv, code, kind, tiny_gpt2_dir, tmp_path, capsys):
    if "MISSING" in argv:
        argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    elif argv != ["top"]:
        argv = [*argv, *_tiny(tiny_gpt2_dir)]
    assert cli.main([*argv, "--json"]) == code
    captured = capsys.readouterr()
    data = _strict(captured.out)
    assert list(data) == ["error"] and set(data["error"]) == {"type", "message", "exit_code"}
    assert data["error"]["type"] == kind and data["error"]["exit_code"] == code
    assert data["error"]["message"] and captured.err == ""


def test_json_error_for_an_unexpected_error(monkeypatch, capsys):
    monkeypatch.setitem(cli_commands.COMMANDS, "score", lambda args: 1 / 0)
    assert cli.main(["score", "a", "b", "--json"]) == 4
    error = _strict(capsys.readouterr().out)["error"]
    assert error["type"] == "ZeroDivisionError" and error["exit_code"] == 4
    assert error["message"] == ("unexpected ZeroDivisionError: division by zero (rerun with "
                                "--traceback or LOGITPROBE_TRACEBACK=1 for the full traceback)")
    def out_of_memory(args):
        raise MemoryError

    monkeypatch.setitem(cli_commands.COMMANDS, "score", out_of_memory)
    assert cli.main(["score", "a", "b"]) == 4
    assert capsys.readouterr().err.startswith("logitprobe: error: unexpected MemoryError (rerun")


def test_check_failed_exits_1_with_the_json_report(tiny_gpt2_dir, tiny, tmp_path, capsys):
    best = tiny.next_token("The cat sat").argmax.token
    bad = tmp_path / "test_never.logit.yaml"
    bad.write_text(f"- name: never\n  prompt: The cat sat\n  expect:\n"
                   f"    not_in_top: {{token: {best!r}, k: 1}}\n")
    assert cli.main(["run", str(bad), "--json", *_tiny(tiny_gpt2_dir)]) == 1
    data = _strict(capsys.readouterr().out)
    assert data["summary"]["failed"] == 1 and data["results"][0]["status"] == "failed"


def test_json_is_strict_and_writes_infinities_as_strings(tiny_gpt2_dir, tiny, tmp_path, capsys):
    from logitprobe.interventions import BanTokens

    prompt = "I like oat milk in my"
    best = tiny.next_token(prompt).argmax.token
    spec = tmp_path / "ban.yaml"
    spec.write_text(f"interventions:\n- kind: ban_tokens\n  tokens: [{best!r}]\n")
    assert cli.main(["compare", prompt, best, "--interventions", str(spec), "--json",
                     *_tiny(tiny_gpt2_dir)]) == 0
    out = capsys.readouterr().out
    assert "Infinity" not in out and "NaN" not in out
    data = _strict(out)
    expected = tiny.compare(prompt, [BanTokens([best])], tokens=[best])
    assert expected.kl == math.inf and data["kl"] == "inf"
    change = data["changes"][0]
    assert change["logit_after"] == "-inf" and float(change["logit_after"]) == -math.inf
    assert change["prob_after"] == 0.0 and change["logit_before"] == expected.changes[0].logit_before
    assert cli.main(["score", prompt, best, "--interventions", str(spec), "--json",
                     *_tiny(tiny_gpt2_dir)]) == 0
    data = _strict(capsys.readouterr().out)
    assert data["logprob"] == "-inf" and data["tokens"][0]["logprob"] == "-inf"


_floats = st.floats(allow_nan=True, allow_infinity=True)
_values = st.recursive(st.none() | st.booleans() | st.integers() | _floats | st.text(),
                       lambda kids: st.lists(kids, max_size=4)
                       | st.dictionaries(st.text(max_size=5), kids, max_size=4), max_leaves=20)


@given(_values)
def test_json_converter_round_trips_any_value_strictly(value):
    back = _strict(cli_commands._json(value=value))["value"]

    def same(a, b):
        if isinstance(a, float) and not math.isfinite(a):
            return isinstance(b, str) and (math.isnan(float(b)) if math.isnan(a) else float(b) == a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, dict):
            return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        return a == b and type(a) is type(b)

    assert same(value, back)


# Any text, with lone surrogates (undecodable argv bytes), spaces and control characters often.
# (st.text never draws surrogates, so the characters are joined by hand.)
_text = st.lists(st.characters() | st.sampled_from(["\udcff", "\ud800", " ", "\x16", "-"]),
                 max_size=12).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["top", "rank", "score", "lens", "sample", "generate"]),
       prompt=_text, tokens=st.lists(_text, min_size=1, max_size=2), number=st.integers(-3, 2000))
def test_any_text_arguments_exit_0_or_2(tiny, command, prompt, tokens, number):
    """Whatever the user types, the CLI answers or names the problem (never a crash, exit 4)."""
    argv = {"top": ["top", prompt, "-k", str(number)], "rank": ["rank", prompt, *tokens],
            "score": ["score", prompt, tokens[0]], "lens": ["lens", prompt, *tokens, "-k", str(number)],
            "sample": ["sample", prompt, "-n", str(number)],
            "generate": ["generate", prompt, "--max-new-tokens", str(number % 5)]}[command]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        mp.setattr(cli_commands, "_load", lambda args: tiny)
        code = cli.main([*argv, "--model", "tiny"])
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        assert err.getvalue().count("logitprobe") and "unexpected" not in err.getvalue()


# --- plot, text arguments, generate's table ------------------------------------------------------

def test_plot_top_k_takes_a_highlight_token(tiny_gpt2_dir, tiny, tmp_path, monkeypatch, capsys):
    from logitprobe import plot as lp_plot

    seen = []
    original = lp_plot.plot_top_k

    def spy(nt, k, *, highlight=None, **kw):
        seen.append(highlight)
        return original(nt, k, highlight=highlight, **kw)

    monkeypatch.setattr(lp_plot, "plot_top_k", spy)
    out = tmp_path / "top.png"
    assert cli.main(["plot", "I like oat milk in my", "--kind", "top-k", "--highlight", " coffee",
                     "--out", str(out), *_tiny(tiny_gpt2_dir)]) == 0
    assert seen == [" coffee"] and out.stat().st_size > 5000
    assert cli.main(["plot", "I like oat milk in my", "--kind", "top-k", "--out", str(out),
                     *_tiny(tiny_gpt2_dir)]) == 0
    assert seen[-1] is None
    capsys.readouterr()
    assert cli.main(["plot", "x", "--kind", "top-k", "--highlight", " coffee", " tea",
                     "--out", str(out), *_tiny(tiny_gpt2_dir)]) == 2
    assert "--highlight=[' coffee', ' tea']: the top-k plot marks one token" in capsys.readouterr().err


def test_plot_rejects_an_unknown_format_before_loading(tmp_path, capsys):
    out = tmp_path / "x.xyz"
    # A missing model would exit 3: the format is checked first, without loading anything.
    assert cli.main(["plot", "x", "--out", str(out), "--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("logitprobe: error: --out='") and "'.xyz' is not a figure format" in err
    assert all(f".{ext}," in err or f".{ext} " in err for ext in ("png", "svg", "pdf"))
    assert not out.exists()
    assert cli.main(["plot", "x", "--out", "noext", "--json"]) == 2
    error = _strict(capsys.readouterr().out)["error"]
    assert error["type"] == "InvalidArgument"
    assert error["message"].startswith("--out='noext': no extension is not a figure format")


@pytest.mark.parametrize("argv, name", [
    (["top", "a\udcff"], "prompt='a\\udcff'"),
    (["rank", "x", " ok", "b\ud800"], "tokens[1]='b\\ud800'"),
    (["score", "x", "\udcc3"], "continuation='\\udcc3'"),
    (["plot", "x", "--highlight", "\udcff"], "--highlight[0]='\\udcff'"),
])
def test_text_that_is_not_utf8_is_a_named_error(argv, name, tmp_path, capsys):
    # Checked before the model loads (a missing model would exit 3).
    assert cli.main([*argv, "--model", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"logitprobe: error: {name}: not valid UTF-8 text") and err.count("\n") == 1


def test_undecodable_argv_bytes_from_a_shell(tmp_path):
    # What `logitprobe top $'a\xff'` passes: bytes Python decodes to a lone surrogate.
    result = subprocess.run([sys.executable, "-m", "logitprobe.cli", "top", b"a\xff",
                             "--model", str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "prompt='a\\udcff': not valid UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_generate_table_is_the_results_table(tiny_gpt2_dir, tiny, capsys):
    assert cli.main(["generate", "The cat sat", "--max-new-tokens", "5", *_tiny(tiny_gpt2_dir)]) == 0
    out = capsys.readouterr().out
    chosen = [c for _, c in tiny.steps("The cat sat", max_new_tokens=5)]
    assert out.rstrip("\n").endswith(format_table(chosen))


def test_generate_table_shortens_long_tokens(tiny_gpt2_dir, tiny, monkeypatch, capsys):
    from logitprobe.results import Candidate

    long = Candidate(token=" " + "x" * 60, id=7, logit=1.0, prob=0.5, logprob=math.log(0.5), rank=1)
    monkeypatch.setattr(type(tiny), "steps", lambda self, prompt, **kw: iter([(None, long)]))
    assert cli.main(["generate", "The cat sat", "--max-new-tokens", "1", *_tiny(tiny_gpt2_dir)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "x" * 60 not in row and "…" in row
    header = format_table([long]).splitlines()[0]
    assert len(row) == len(header)  # the columns stay aligned


# --- docs/cli.md stays true ------------------------------------------------------------------------

_SECTION = re.compile(r"^## `logitprobe (\w+)`$", re.M)
_EXAMPLE = re.compile(r"```bash\n(logitprobe [^\n]*?--json)(?:\s+# exits (\d))?\n```\s*\n"
                      r"```json\n(.*?)```", re.S)
_FILE = re.compile(r"^`([\w.]+\.ya?ml)`:\n\n```yaml\n(.*?)```", re.S | re.M)


def test_docs_cover_every_subcommand():
    text = DOCS.read_text()
    documented = _SECTION.findall(text)
    assert sorted(documented) == sorted(_subcommands())
    for name, section in zip(documented, _SECTION.split(text)[2::2]):
        example = _EXAMPLE.search(section)
        assert example and example.group(1).startswith(f"logitprobe {name} "), name
    for code in cli.EXIT_CODES:
        assert re.search(rf"^\| {code} \| ", text, re.M), code
    assert "cli.md" in (DOCS.parents[1] / "mkdocs.yml").read_text()


def _starts_like(shown, real, where="$"):
    """The documented output is the real one, shortened: lists cut, floats rounded, strings cut at …"""
    if isinstance(shown, dict):
        assert list(shown) == list(real), f"{where}: keys {list(shown)} != {list(real)}"
        for k in shown:
            _starts_like(shown[k], real[k], f"{where}.{k}")
    elif isinstance(shown, list):
        assert isinstance(real, list) and 0 < len(shown) <= len(real), where
        for i, (a, b) in enumerate(zip(shown, real)):
            _starts_like(a, b, f"{where}[{i}]")
    elif isinstance(shown, float):
        assert isinstance(real, (int, float)) and real == pytest.approx(shown, rel=1e-3, abs=1e-6), where
    elif isinstance(shown, str) and shown.endswith("…"):
        assert isinstance(real, str) and real.startswith(shown[:-1]), f"{where}: {real!r}"
    else:
        assert shown == real and type(shown) is type(real), f"{where}: {shown!r} != {real!r}"


@pytest.mark.slow
def test_docs_examples_are_real_output(smol, tmp_path, monkeypatch, capsys):
    text = DOCS.read_text()
    monkeypatch.chdir(tmp_path)
    # Every example runs on --model smollm2: reuse the session's copy instead of loading it 9 times.
    load = cli_commands._load
    monkeypatch.setattr(cli_commands, "_load",
                        lambda args: smol if (args.model, args.prepend_bos) == ("smollm2", "auto")
                        else load(args))
    for name, body in _FILE.findall(text):
        Path(name).write_text(body)
    examples = _EXAMPLE.findall(text)
    assert len(examples) >= len(_subcommands()) + 1  # every subcommand and the JSON error
    for command, code, shown in examples:
        assert cli.main(shlex.split(command)[1:]) == int(code or 0), command
        _starts_like(_strict(shown), _strict(capsys.readouterr().out), command)
