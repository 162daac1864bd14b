"""Start-up benchmark (issue 16): a fresh ``logitprobe top`` vs a plain transformers script.

Both load the same cached float32 SmolLM2 weights in a fresh process and print
the top 10 next tokens of one prompt. Measured: CPU time (user + system) of
each child process, in pairs taken in turns; the ratio of medians. Target
<= 1.15x. Smoke mode uses the tiny GPT-2 instead.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from common import Context, Result, Timing, ratio
from subjects import gpt2_dir

PROMPT = "I like oat milk in my"

PLAIN = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(torch.tensor([tok(sys.argv[2]).input_ids])).logits[0, -1]
for p, i in zip(*torch.topk(torch.softmax(logits, -1), 10)):
    print(repr(tok.decode([int(i)])), float(p))
"""

CLI = "import sys; from logitprobe.cli import main; sys.exit(main(sys.argv[1:]))"


def _cpu_seconds(args: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, check=True, capture_output=True, text=True,
                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(ctx: Context) -> None:
    if ctx.smoke:
        model = directory = str(gpt2_dir(True))
    else:
        from logitprobe.loading import dequantized_dir, smollm2_path

        import logitprobe

        logitprobe.load("smollm2")  # makes sure the float32 copy is cached
        model, directory = "smollm2", str(dequantized_dir(smollm2_path()))
    pairs = 1 if ctx.smoke else max(3, ctx.repeats)
    ours, plain = [], []
    for _ in range(pairs):
        ours.append(_cpu_seconds([sys.executable, "-c", CLI, "top", PROMPT, "--model", model]))
        plain.append(_cpu_seconds([sys.executable, "-c", PLAIN, directory, PROMPT]))
    t_ours, t_plain = Timing.of(ours), Timing.of(plain)
    g = "start-up"
    ctx.add(Result(g, f"logitprobe top (fresh process, {model if ctx.smoke else 'smollm2'}), "
                      "CPU time", t_ours.median, "s", t_ours))
    ctx.add(Result(g, "plain transformers script, same weights, CPU time", t_plain.median, "s",
                   t_plain))
    ctx.add(ratio(g, "logitprobe top / plain transformers", t_ours, t_plain, at_most=1.15,
                  note=f"median of {pairs} paired runs"))
