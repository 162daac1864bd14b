"""Start-up benchmark (issue 16): fresh processes, logitprobe vs a plain transformers script.

Each pair loads the same cached float32 SmolLM2 weights in a fresh process and
answers the same question:

- ``logitprobe top`` / ``rank`` / ``score`` against a plain script that loads the
  model and tokenizer, runs one forward and prints the same numbers;
- a pytest session running one 20-case behavioural YAML file against a plain
  script that runs the same 20 prompts (one forward each) and prints each top 10.

Measured: CPU time (user + system) of each child process (``os.wait4``), pairs
taken in turns after one untimed round; the ratio of medians. Target <= 1.15x each. Also reported: whether TransformerLens
was imported (it should not be: unhooked queries never boot the bridge) and the
child's peak RSS. Smoke mode uses the tiny GPT-2 and one pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Context, Result, Timing, ratio
from subjects import gpt2_dir

PROMPT = "I like oat milk in my"
CONTINUATION = " coffee"
COUNTRIES = ["France", "Germany", "Japan", "Italy", "Spain", "Russia", "China", "Egypt", "Canada",
             "Greece", "Poland", "Portugal", "Sweden", "Norway", "Austria", "Ireland", "Peru",
             "Chile", "Kenya", "India"]

PLAIN = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
mode, prompts = sys.argv[2], sys.argv[3:]
with torch.no_grad():
    if mode == "score":
        ctx, cont = tok(prompts[0]).input_ids, tok(prompts[1]).input_ids
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1:-1], -1)
        print(float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()))
    else:
        for prompt in prompts[:1] if mode in ("top", "rank") else prompts:
            logits = model(torch.tensor([tok(prompt).input_ids])).logits[0, -1]
            if mode == "rank":
                print(int((logits > logits[tok(sys.argv[4]).input_ids[0]]).sum()) + 1)
            else:
                for p, i in zip(*torch.topk(torch.softmax(logits, -1), 10)):
                    print(repr(tok.decode([int(i)])), float(p))
print("TL", any(m.startswith("transformer_lens") for m in sys.modules), file=sys.stderr)
"""

CLI = ("import sys; from logitprobe.cli import main; code = main(sys.argv[1:]); "
       "print('TL', any(m.startswith('transformer_lens') for m in sys.modules), file=sys.stderr); "
       "sys.exit(code)")

CONFTEST = """
import sys
def pytest_sessionfinish(session):
    print("TL", any(m.startswith("transformer_lens") for m in sys.modules), file=sys.stderr)
"""


# Both sides as a user runs them: compiled modules cached (this project's CI sets
# PYTHONDONTWRITEBYTECODE), and pytest with logitprobe's plugin only (no other
# installed plugin: hypothesis's alone imports hypothesis, ~1 s, at the summary).
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "TOKENIZERS_PARALLELISM": "false", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def _suite(directory: Path) -> Path:
    """A 20-case behavioural file (a pytest session runs it) and its conftest."""
    cases = "".join(f'- name: capital_{c.lower()}\n  prompt: "The capital of {c} is"\n'
                    "  expect:\n    in_top: {token: \" the\", k: 50}\n" for c in COUNTRIES)
    path = directory / "test_startup.logit.yaml"
    path.write_text(cases)
    (directory / "conftest.py").write_text(CONFTEST)
    return path


def _run(args: list[str], cwd: str | None = None, ok: tuple[int, ...] = (0,)
         ) -> tuple[float, bool, float]:
    """CPU seconds, whether TransformerLens was imported, and peak RSS (MB) of one child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(args, stdout=out, stderr=err, cwd=cwd, text=True, env=ENV)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode not in ok:
        raise RuntimeError(f"{args[:4]} failed ({child.returncode}): {stdout[-800:]}"
                           f"{stderr[-800:]}")
    return usage.ru_utime + usage.ru_stime, "TL True" in stderr, usage.ru_maxrss / 1024


def run(ctx: Context) -> None:
    if ctx.smoke:
        model = directory = str(gpt2_dir(True))
    else:
        from logitprobe.loading import dequantized_dir, smollm2_path

        import logitprobe

        logitprobe.load("smollm2")  # makes sure the float32 copy is cached (and verified)
        model, directory = "smollm2", str(dequantized_dir(smollm2_path()))
    pairs = 1 if ctx.smoke else max(5, ctx.repeats)
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    suite = _suite(work)
    py = sys.executable
    prompts = [f"The capital of {c} is" for c in COUNTRIES]
    jobs = {
        "top": ([py, "-c", CLI, "top", PROMPT, "--model", model],
                [py, "-c", PLAIN, directory, "top", PROMPT]),
        "rank": ([py, "-c", CLI, "rank", PROMPT, CONTINUATION, "--model", model],
                 [py, "-c", PLAIN, directory, "rank", PROMPT, CONTINUATION]),
        "score": ([py, "-c", CLI, "score", PROMPT, CONTINUATION, "--model", model],
                  [py, "-c", PLAIN, directory, "score", PROMPT, CONTINUATION]),
        "pytest, 20-case YAML file": (
            [py, "-m", "pytest", str(suite), "-q", "-p", "logitprobe.pytest_plugin",
             "--logitprobe-model", model, "-W", "ignore"],
            [py, "-c", PLAIN, directory, "suite", *prompts]),
    }
    g = "start-up"
    for ours_cmd, plain_cmd in jobs.values():  # untimed: write the compiled-module caches
        _run(ours_cmd, cwd=str(work), ok=(0, 1))
        _run(plain_cmd)
    for name, (ours_cmd, plain_cmd) in jobs.items():
        ours, plain, tl, rss, plain_rss = [], [], False, 0.0, 0.0
        for _ in range(pairs):
            # pytest exits 1 when a case fails (the tiny random model): still a full run
            seconds, imported, peak = _run(ours_cmd, cwd=str(work), ok=(0, 1))
            ours.append(seconds)
            tl, rss = tl or imported, max(rss, peak)
            seconds, _, peak = _run(plain_cmd)
            plain.append(seconds)
            plain_rss = max(plain_rss, peak)
        t_ours, t_plain = Timing.of(ours), Timing.of(plain)
        ctx.add(Result(g, f"logitprobe {name} (fresh process), CPU time", t_ours.median, "s",
                       t_ours, note=f"TransformerLens imported: {tl}; peak RSS {rss:.0f} MB"))
        ctx.add(Result(g, f"plain transformers script ({name}), CPU time", t_plain.median, "s",
                       t_plain, note=f"peak RSS {plain_rss:.0f} MB"))
        ctx.add(ratio(g, f"{name}: logitprobe / plain transformers", t_ours, t_plain,
                      at_most=1.15, note=f"median of {pairs} paired runs"))
