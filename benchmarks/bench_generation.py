"""Generation speed on a GPT-2-small-shaped random model (a script, not a test).

    python benchmarks/bench_generation.py [--dir /tmp/logitprobe-bench/gpt2-small] [--repeats 3]

Prints ratios (time of the alternative / time of logitprobe, so > 1 means faster):

1. 100 new greedy tokens from an 8-token prompt: logitprobe's KV-cached
   ``generate`` vs the tutorial's loop (re-run the whole sequence through the
   bridge for every token; target >= 3x) and vs Hugging Face ``generate`` with its
   cache on a separately loaded copy of the same weights (target: logitprobe takes
   <= 1.1x HF's time). All three must produce the same 100 tokens.
2. 64 sampled continuations of 20 tokens: one call with ``n=64`` (one prompt pass,
   64 rows per step) vs 64 separate ``generate`` calls (target >= 15x).
3. Where a cached step's time goes: HF's own forward with a cache vs the bridge's
   forward (hook points and reimplemented attention) vs logitprobe's step.

Random weights cost the same compute as trained ones. Timings are the median of
``--repeats`` runs after a warm-up, compared functions taking turns (the two slow
baselines: one run); run it on an otherwise idle machine (on a loaded one,
``--threads 1`` avoids OpenMP stalls).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch


def timed(fn, repeats: int, warmup: bool = True) -> tuple[float, object]:
    result = fn() if warmup else None  # warm-up (allocations, lazy init)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, object]]:
    """Median time of each function, run in turns (so load drift hits all of them alike)."""
    results = {name: fn() for name, fn in fns.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/tmp/logitprobe-bench/gpt2-small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    import logitprobe
    from logitprobe.kvcache import Decoder
    from logitprobe.testing import build_random_gpt2
    from transformers import AutoModelForCausalLM

    path = build_random_gpt2(Path(args.dir), size="small")
    probe = logitprobe.load(str(path), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(path)).eval()  # a separate copy
    hf.generation_config.eos_token_id = None  # always 100 tokens, as the others
    hf.generation_config.pad_token_id = probe.engine.pad_id
    ids = probe.encode("The capital of France is Paris. The capital of Germany")[:8]
    prompt = probe.decode(ids)
    assert probe.encode(prompt) == ids, "the 8-token prompt must round-trip"
    x = torch.tensor([ids])
    print(f"model: GPT-2-small shape, random weights ({path}); torch threads: "
          f"{torch.get_num_threads()}; prompt: {len(ids)} tokens")

    # -- 1. one sequence, 100 tokens ------------------------------------------------------
    def ours():
        return list(probe.generate(prompt, max_new_tokens=100, stop_at_eos=False).token_ids)

    def tutorial():
        tokens = x.clone()
        with torch.no_grad():
            for _ in range(100):
                logits = probe.model(tokens)  # the whole sequence, every step
                tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return tokens[0, len(ids):].tolist()

    def hf_generate():
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=100,
                              do_sample=False)
        return out[0, len(ids):].tolist()

    res = interleaved({"ours": ours, "hf": hf_generate}, args.repeats)
    (t_ours, tok_ours), (t_hf, tok_hf) = res["ours"], res["hf"]
    t_tut, tok_tut = timed(tutorial, 1, warmup=False)  # slow; the model is warm by now
    same = tok_ours == tok_hf == tok_tut
    print("\n1. 100 greedy tokens from an 8-token prompt")
    print(f"   logitprobe generate (KV cache): {t_ours:7.3f} s   "
          f"({1000 * t_ours / 100:.1f} ms/token)")
    print(f"   tutorial re-run loop:           {t_tut:7.3f} s   -> logitprobe is "
          f"{t_tut / t_ours:.2f}x faster (target >= 3x)")
    print(f"   Hugging Face generate (cache):  {t_hf:7.3f} s   -> logitprobe takes "
          f"{t_ours / t_hf:.2f}x HF's time (target <= 1.1x)")
    print(f"   identical tokens from all three: {same}")

    # -- 2. 64 samples of 20 tokens -------------------------------------------------------
    def batched():
        return probe.generate(prompt, max_new_tokens=20, do_sample=True, n=64, seed=0,
                              stop_at_eos=False)

    def separate():
        return [probe.generate(prompt, max_new_tokens=20, do_sample=True, n=1, seed=s,
                               stop_at_eos=False) for s in range(64)]

    def tutorial_samples(k: int):  # the tutorial's loop with torch.multinomial, k times
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _ in range(k):
                tokens = x.clone()
                for _ in range(20):
                    probs = probe.model(tokens)[:, -1].softmax(-1)
                    tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=gen)], 1)

    t_batch, _ = timed(batched, args.repeats)
    t_sep, _ = timed(separate, 1, warmup=False)
    t_tut4, _ = timed(lambda: tutorial_samples(4), 1, warmup=False)
    print("\n2. 64 sampled continuations of 20 tokens")
    print(f"   one call, n=64:        {t_batch:7.3f} s")
    print(f"   64 separate calls:     {t_sep:7.3f} s   -> batching is {t_sep / t_batch:.1f}x "
          "faster (target >= 15x)")
    print(f"   64 tutorial loops:     {16 * t_tut4:7.3f} s   (4 measured, x16) -> "
          f"{16 * t_tut4 / t_batch:.1f}x")

    # -- 3. where a cached step's time goes ----------------------------------------------
    steps = 50

    def hf_steps(rows: int = 1):
        from transformers import DynamicCache

        cache = DynamicCache(config=hf.config)
        with torch.no_grad():
            out = hf(x.expand(rows, -1), cache=cache, use_cache=True)
            tok = out.logits[:, -1:].argmax(-1)
            for _ in range(steps):
                tok = hf(tok, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)

    def bridge_steps():
        from logitprobe.kvcache import cache_kwarg_fix
        from transformers import DynamicCache

        cache = DynamicCache(config=hf.config)
        with torch.no_grad(), cache_kwarg_fix(probe.model):
            logits = probe.model(x, cache=cache, use_cache=True)
            tok = logits[:, -1:].argmax(-1)
            for _ in range(steps):
                tok = probe.model(tok, cache=cache, use_cache=True)[:, -1:].argmax(-1)

    def decoder_steps():
        dec = Decoder(probe.backend, pad_id=probe.engine.pad_id)
        logits = dec.prefill([ids])
        for _ in range(steps):
            logits = dec.step(logits.argmax(-1))

    res = interleaved({"hf": hf_steps, "bridge": bridge_steps, "decoder": decoder_steps},
                      args.repeats)
    t_hf_step, t_bridge_step, t_dec_step = (res[k][0] for k in ("hf", "bridge", "decoder"))
    per = lambda t: 1000 * t / (steps + 1)  # noqa: E731  (ms per forward)
    print(f"\n3. one cached forward (batch 1), averaged over {steps + 1}")
    print(f"   HF model forward:            {per(t_hf_step):6.2f} ms")
    print(f"   bridge forward (hooks, reimplemented attention): {per(t_bridge_step):6.2f} ms "
          f"(+{per(t_bridge_step) - per(t_hf_step):.2f} ms)")
    print(f"   logitprobe Decoder.step:     {per(t_dec_step):6.2f} ms "
          f"(+{per(t_dec_step) - per(t_bridge_step):.2f} ms over the bare bridge)")
    t_hf_64, _ = timed(lambda: hf_steps(64), 1)
    print(f"   HF model forward, 64 rows:   {per(t_hf_64):6.2f} ms -> batching gains at most "
          f"~{64 * t_hf_step / t_hf_64:.1f}x on this hardware (HF's own ceiling for part 2)")


if __name__ == "__main__":
    main()
