"""Shared-prefix benchmarks (issue 16): structure the reference ignores, computed once.

Each ratio is measured side by side in one run (``interleaved``), with the peak
memory of each side:

- few-shot: a ~150-token few-shot header + 5 templates x 100 fills (500 prompts),
  ``probe.next_token`` vs Hugging Face's own batched forward over the same prompts
  (the engine's length groups, left-padded, logits at the last position): >= 3x;
- multiple choice: 200 questions x 4 options as lm-evaluation-harness
  ``loglikelihood`` pairs, ``probe.score`` vs ``HFLM.loglikelihood`` on the same
  pairs and weights, with equal numbers: >= 2x (skipped when lm_eval is not
  installed: it is never a runtime dependency);
- nothing shared: distinct prompts, prefix sharing on vs off (today's path): <= 1.05x.

``--scale`` shrinks the sizes (fills per template, questions) for a loaded machine.
"""

from __future__ import annotations

import random

import torch

import logitprobe
from common import Context, Result, hf_batches, interleaved, peak_memory, ratio
from subjects import gpt2_dir, prompts

FEW_SHOT = [("What is the capital of France?", "Paris"), ("What is two plus two?", "Four"),
            ("Which animal says meow?", "A cat"),
            ("What colour is the sky on a clear day?", "Blue"),
            ("Who wrote Hamlet?", "Shakespeare"), ("What is the opposite of hot?", "Cold"),
            ("How many days are in a week?", "Seven"), ("What do bees make?", "Honey"),
            ("Where is the Eiffel Tower?", "In Paris"), ("What is frozen water called?", "Ice"),
            ("Which planet is the largest?", "Jupiter"), ("What do cows drink?", "Water"),
            ("What is the first letter of the alphabet?", "A"),
            ("How many legs has a spider?", "8")]
TEMPLATES = ["Q: What is the best thing about {}?\nA:", "Q: Where would you find {}?\nA:",
             "Q: Is {} bigger than a house?\nA:", "Q: Who first described {}?\nA:",
             "Q: Name one word that rhymes with {}.\nA:"]
FILLS = ["coffee", "the moon", "a purple turmeric", "oat milk", "the lazy dog", "Paris", "tea",
         "a city of light", "the softmax", "my friend", "the next token", "a quick brown fox",
         "the mat", "every morning", "our teacher", "the river", "a violin", "snow", "a lantern",
         "the market", "bread", "a cathedral", "the ocean", "a spreadsheet", "a mountain"]


def _header(tok, n_tokens: int) -> str:
    text, i = "", 0
    while len(tok(text).input_ids) < n_tokens:
        q, a = FEW_SHOT[i % len(FEW_SHOT)]
        text += f"Q: {q}\nA: {a}\n"
        i += 1
    return text


def _fills(n: int) -> list[str]:
    rng = random.Random(7)
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.sample(FILLS, rng.randint(1, 3))))
    return sorted(out)


def run(ctx: Context) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = gpt2_dir(ctx.smoke)
    if "gpt2" in ctx.subjects:
        probe, hf, tok = ctx.subjects["gpt2"]
    else:
        probe = logitprobe.load(str(directory), device=ctx.device)
        hf = AutoModelForCausalLM.from_pretrained(str(directory)).to(ctx.device).eval()
        tok = AutoTokenizer.from_pretrained(str(directory))
    few_shot(ctx, probe, hf, tok)
    nothing_shared(ctx, probe)
    multiple_choice(ctx, probe, directory)


def _size(ctx: Context, full: int, smoke: int) -> int:
    return smoke if ctx.smoke else max(2, round(full * ctx.scale))


def _hf_run(hf, batches) -> None:
    with torch.no_grad():
        for tokens, mask in batches:
            hf(tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
               logits_to_keep=1)


def few_shot(ctx: Context, probe, hf, tok) -> None:
    g = "prefix: few-shot"
    fills = _fills(_size(ctx, 100, 4))
    header = _header(tok, 150 if not ctx.smoke else 30)
    texts = [header + t.format(f) for t in TEMPLATES for f in fills]
    seqs = [tok(t).input_ids for t in texts]
    batches = hf_batches(probe, seqs, ctx.device)

    def ours():
        probe.clear_cache()
        return probe.next_token(texts)

    timed = interleaved({"logitprobe": ours, "hf": lambda: _hf_run(hf, batches)}, ctx.repeats)
    t_lp, t_hf = timed["logitprobe"][0], timed["hf"][0]
    n_tok = len(tok(header).input_ids)
    ctx.add(Result(g, f"{len(texts)} prompts ({n_tok}-token header + {len(TEMPLATES)} templates "
                      f"x {len(fills)} fills), logitprobe", t_lp.median, "s", t_lp))
    ctx.add(Result(g, f"HF batched forward, the same prompts ({len(batches)} batches)",
                   t_hf.median, "s", t_hf))
    ctx.add(ratio(g, "HF batched / logitprobe", t_hf, t_lp, at_least=3, note=_mins(t_hf, t_lp)))
    _memory(ctx, g, ours, lambda: _hf_run(hf, batches), "HF batched")


def _mins(slow, fast) -> str:
    # On a loaded machine the fastest run of each is the least disturbed estimate.
    return f"ratio of the minimums: {slow.min / fast.min:.3g}x"


def _memory(ctx: Context, g: str, ours, theirs, label: str) -> None:
    mem_lp, mem_ref = peak_memory(ours, ctx.device), peak_memory(theirs, ctx.device)
    ctx.add(Result(g, "peak memory, logitprobe", mem_lp, "MB"))
    ctx.add(Result(g, f"peak memory, {label}", mem_ref, "MB"))
    ctx.add(Result(g, f"peak memory, logitprobe / {label}", mem_lp / max(mem_ref, 1e-9), "",
                   target="<= 1.1", ok=mem_lp <= 1.1 * mem_ref,
                   note="RSS high-water mark above the start (CPU), allocator peak (CUDA)"))


def nothing_shared(ctx: Context, probe) -> None:
    g = "prefix: nothing shared"
    ps = prompts(_size(ctx, 200, 20), seed=11)

    def run_with(share: bool):
        def fn():
            probe.clear_cache()
            probe.engine.share_prefixes = share
            try:
                return probe.next_token(ps)
            finally:
                probe.engine.share_prefixes = True
        return fn

    timed = interleaved({"on": run_with(True), "off": run_with(False)}, ctx.repeats * 2)
    t_on, t_off = timed["on"][0], timed["off"][0]
    ctx.add(Result(g, f"{len(ps)} distinct prompts, prefix sharing on", t_on.median, "s", t_on))
    ctx.add(Result(g, f"{len(ps)} distinct prompts, sharing off (the batched path)", t_off.median,
                   "s", t_off))
    ctx.add(ratio(g, "sharing on / off", t_on, t_off, at_most=1.05, note=_mins(t_on, t_off)))


def _questions(n: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(13)
    out = []
    for i in range(n):
        q, _ = FEW_SHOT[i % len(FEW_SHOT)]
        story = " ".join(rng.sample(FILLS, 8))
        context = (f"Read the passage and answer.\nPassage: {story}, and {rng.choice(FILLS)} "
                   f"near {rng.choice(FILLS)}.\nQuestion {i}: {q}\nAnswer:")
        options = [" " + " ".join(rng.sample(FILLS, rng.randint(1, 2))) for _ in range(4)]
        out.append((context, options))
    return out


def multiple_choice(ctx: Context, probe, directory) -> None:
    g = "prefix: multiple choice"
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        ctx.add(Result(g, "skipped: lm_eval is not installed (pip install 'lm-eval[hf]')", 0.0,
                       "", note="benchmark-only dependency"))
        return
    questions = _questions(_size(ctx, 200, 5))
    pairs = [(c, o) for c, options in questions for o in options]
    lm = HFLM(pretrained=str(directory), device=ctx.device, batch_size=32,
              dtype="float32")
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
                for i, pair in enumerate(pairs)]

    def ours():
        probe.clear_cache()
        return probe.score([c for c, _ in pairs], [o for _, o in pairs])

    def theirs():
        return lm.loglikelihood(requests, disable_tqdm=True)

    timed = interleaved({"logitprobe": ours, "lm_eval": theirs}, ctx.repeats)
    (t_lp, scores), (t_ev, answers) = timed["logitprobe"], timed["lm_eval"]
    diff = max(abs(s.logprob - a[0]) for s, a in zip(scores, answers))
    greedy_same = all(s.is_greedy == bool(a[1]) for s, a in zip(scores, answers))
    ctx.add(Result(g, f"{len(questions)} questions x 4 options, logitprobe score", t_lp.median,
                   "s", t_lp))
    ctx.add(Result(g, "lm-evaluation-harness HFLM.loglikelihood (batch 32)", t_ev.median, "s",
                   t_ev))
    ctx.add(ratio(g, "lm-eval / logitprobe", t_ev, t_lp, at_least=2, note=_mins(t_ev, t_lp)))
    ctx.add(Result(g, "largest |logprob difference| vs lm-eval", diff, "", target="<= 1e-3",
                   ok=diff <= 1e-3 and greedy_same,
                   note=f"is_greedy equal: {greedy_same}"))
    _memory(ctx, g, ours, theirs, "lm-eval")
