"""Behavioural-suite benchmark (issue 3): a 200-case YAML suite vs one forward per case.

Three figures, measured in the same run:

- naive: every case evaluated with its own Hugging Face forward pass;
- the suite: the YAML file run by logitprobe, both as a library call
  (``behaviour.run_suite``) and as a real ``pytest`` run through the plugin
  (in-process, the model already loaded, the forward cache cleared first);
- bare: the batched forwards the suite needs (``probe.engine.logits``), nothing else.

The last three are timed round-robin so they see the same load on a shared machine.

Targets: naive / suite >= 5x, suite / bare <= 1.3x.
"""

from __future__ import annotations

import contextlib
import io
import random
import tempfile
from pathlib import Path

import torch

import logitprobe
from common import Context, Result, Timing, interleaved, measure, ratio, run_pytest
from subjects import gpt2_dir, prompts

TOKENS = [" the", " a", " and", " is", " coffee", " Paris"]


def _suite_text(ps: list[str], vocab_size: int) -> str:
    rng = random.Random(5)
    lines = []
    for i, p in enumerate(ps):
        a, b = rng.sample(TOKENS, 2)
        lines.append(f"- name: case{i}\n  prompt: {p!r}\n  expect:\n"
                     f"    rank_at_most: [{a!r}, {vocab_size}]\n"
                     f"    prob_at_least: [{b!r}, 0.0]\n"
                     f"    entropy_at_most: 20.0\n")
    return "".join(lines)


def run(ctx: Context) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from logitprobe import behaviour

    n = 20 if ctx.smoke else 200
    directory = gpt2_dir(ctx.smoke)
    probe = logitprobe.load(str(directory), device=ctx.device)
    if "gpt2" in ctx.subjects:
        _, hf, tok = ctx.subjects["gpt2"]
    else:
        hf = AutoModelForCausalLM.from_pretrained(str(directory)).to(ctx.device).eval()
        tok = AutoTokenizer.from_pretrained(str(directory))
    ps = prompts(n, seed=4)
    work = Path(tempfile.mkdtemp(prefix="logitprobe-bench-suite-"))
    path = work / "test_suite.logit.yaml"
    path.write_text(_suite_text(ps, probe.vocab_size))
    suite = behaviour.load_suite(path)
    ids = [tok(p).input_ids for p in ps]
    tid = {t: tok(t).input_ids[0] for t in TOKENS}

    # The naive loop is slow and linear in the cases: timed on a fifth of them and scaled.
    sample = list(zip(suite.cases, ids))[: max(10, n // 5)]

    def naive():
        # One forward per case, then the same three checks in plain torch.
        out = []
        for case, seq in sample:
            with torch.no_grad():
                logits = hf(torch.tensor([seq], device=ctx.device)).logits[0, -1].float()
            lp = logits.log_softmax(-1)
            by_rank, by_prob = case.expectations[:2]
            a, b = tid[by_rank.get("token")], tid[by_prob.get("token")]
            rank_ok = int((logits > logits[a]).sum()) + 1 <= by_rank.get("rank")
            prob_ok = float(lp[b].exp()) >= by_prob.get("p")
            ent_ok = float(-(lp.exp() * lp).nan_to_num().sum()) <= 20.0
            out.append(rank_ok and prob_ok and ent_ok)
        assert all(out)

    def library():
        outcome = behaviour.run_suite(probe, suite)
        assert all(err is None for _, err in outcome), [e for _, e in outcome if e][:1]

    def bare():
        probe.engine.logits(ids, 1)

    def under_pytest():
        run_pytest(path, directory, ctx.device, work)

    part = measure(naive, repeats=max(1, ctx.repeats // 2))
    scale = n / len(sample)
    t_naive = Timing(part.median * scale, part.min * scale, part.max * scale, part.runs)
    probe.clear_cache()
    mark = probe.stats.snapshot()
    library()
    forwards = (probe.stats - mark).forwards
    with contextlib.redirect_stdout(io.StringIO()):  # pytest's own report
        res = interleaved({"bare": bare, "library": library, "pytest": under_pytest},
                          ctx.repeats, setup=probe.clear_cache)
    t_bare, t_lib, t_py = (res[k][0] for k in ("bare", "library", "pytest"))

    g = "suite"
    ctx.add(Result(g, f"{n} YAML cases, one HF forward each (scaled from {len(sample)})",
                   t_naive.median, "s", t_naive))
    ctx.add(Result(g, f"{n} YAML cases, behaviour.run_suite", t_lib.median, "s", t_lib,
                   note=f"{forwards} batched forwards"))
    ctx.add(Result(g, f"{n} YAML cases, pytest + plugin", t_py.median, "s", t_py))
    ctx.add(Result(g, f"bare batched forwards for {n} prompts", t_bare.median, "s", t_bare))
    ctx.add(ratio(g, "naive / run_suite", t_naive, t_lib, at_least=5))
    ctx.add(ratio(g, "naive / pytest run", t_naive, t_py, at_least=5))
    ctx.add(ratio(g, "run_suite / bare forwards", t_lib, t_bare, at_most=1.3))
    ctx.add(ratio(g, "pytest run / bare forwards", t_py, t_bare, at_most=1.3))
