"""Generation benchmarks (issues 4 and 8).

1. Greedy generation of 100 tokens from an 8-token prompt: ``probe.generate``
   (KV cache) vs Hugging Face ``generate`` with its cache, on a separately loaded
   copy of the same weights (target: <= 1.1x HF's time), and vs the tutorial's
   loop that re-runs the whole sequence through the bridge for every token
   (target: >= 3x faster). All must produce the same tokens. GPT-2-small shape
   and the embedded SmolLM2.
2. 64 sampled continuations of 20 tokens: one call with ``n=64`` (one prompt pass,
   64 rows per step) vs 64 separate calls, against the ceiling this hardware allows,
   measured in the same run: 64 x (one cached 1-row HF forward) / (one cached 64-row
   HF forward). Target: at least 90% of that ceiling (issue 16; a fixed ">= 15x"
   failed on 2-core machines where batching itself gains only 10-14x).
3. Where a cached step's time goes: HF's forward, the bridge's forward (hook
   points, reimplemented attention), and logitprobe's ``Decoder.step``.
"""

from __future__ import annotations

import torch

import logitprobe
from common import Context, Result, Timing, interleaved, measure, ratio
from subjects import gpt2_dir

PROMPT = "The capital of France is Paris. The capital of Germany"


def _subjects(ctx: Context) -> dict[str, tuple]:
    from transformers import AutoModelForCausalLM

    if "gpt2" in ctx.subjects:
        probe, hf, _ = ctx.subjects["gpt2"]
    else:
        directory = gpt2_dir(ctx.smoke)
        probe = logitprobe.load(str(directory), device=ctx.device)
        hf = AutoModelForCausalLM.from_pretrained(str(directory)).to(ctx.device).eval()
    out = {"gpt2-small" if not ctx.smoke else "gpt2-tiny": (probe, hf)}
    if not ctx.smoke:
        from logitprobe.loading import _dequantized_copy, smollm2_path

        smol = logitprobe.load("smollm2", device=ctx.device)
        copy = _dequantized_copy(smollm2_path(), "smollm2")
        out["smollm2"] = (smol, AutoModelForCausalLM.from_pretrained(str(copy)).to(ctx.device).eval())
    return out


def run(ctx: Context) -> None:
    subjects = _subjects(ctx)
    for label, (probe, hf) in subjects.items():
        greedy(ctx, label, probe, hf)
    label, (probe, hf) = next(iter(subjects.items()))
    samples(ctx, label, probe, hf)
    steps(ctx, label, probe, hf)


def _prompt_ids(probe, n: int = 8) -> tuple[str, torch.Tensor]:
    ids = probe.encode(PROMPT)[:n]
    prompt = probe.decode(ids)
    assert probe.encode(prompt) == ids, "the 8-token prompt must round-trip"
    return prompt, torch.tensor([ids], device=probe.backend.device)


def greedy(ctx: Context, label: str, probe, hf) -> None:
    new = 10 if ctx.smoke else 100
    prompt, x = _prompt_ids(probe)
    hf.generation_config.eos_token_id = None  # always `new` tokens, as the others
    hf.generation_config.pad_token_id = probe.engine.pad_id

    def ours():
        return list(probe.generate(prompt, max_new_tokens=new, stop_at_eos=False).token_ids)

    def hf_generate():
        with torch.no_grad():
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                              do_sample=False)
        return out[0, x.shape[1]:].tolist()

    def tutorial():
        tokens = x.clone()
        with torch.no_grad():
            for _ in range(new):
                logits = probe.model(tokens)  # the whole sequence, every step
                tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return tokens[0, x.shape[1]:].tolist()

    res = interleaved({"ours": ours, "hf": hf_generate}, ctx.repeats)
    (t_ours, tok_ours), (t_hf, tok_hf) = res["ours"], res["hf"]
    tut: list = []
    t_tut = measure(lambda: tut.append(tutorial()), repeats=1, warmup=0)  # slow; model warm
    same = tok_ours == tok_hf == tut[-1]
    g = f"generation ({label})"
    ctx.add(Result(g, f"{new} greedy tokens, probe.generate (KV cache)", t_ours.median, "s",
                   t_ours, note=f"{1000 * t_ours.median / new:.1f} ms/token"))
    ctx.add(Result(g, f"{new} greedy tokens, HF generate (cache)", t_hf.median, "s", t_hf,
                   note=f"same tokens: {same}"))
    ctx.add(Result(g, f"{new} greedy tokens, tutorial re-run loop", t_tut.median, "s", t_tut))
    ctx.add(ratio(g, "probe.generate / HF generate", t_ours, t_hf, at_most=1.1))
    ctx.add(ratio(g, "tutorial loop / probe.generate", t_tut, t_ours, at_least=3))
    if not same:
        raise AssertionError(f"{label}: probe.generate and HF generate disagree")


def samples(ctx: Context, label: str, probe, hf) -> None:
    n, new = (8, 5) if ctx.smoke else (64, 20)
    prompt, x = _prompt_ids(probe)

    def batched():
        return probe.generate(prompt, max_new_tokens=new, do_sample=True, n=n, seed=0,
                              stop_at_eos=False)

    # The separate calls are linear in their number: a quarter of them are timed, scaled x4.
    part = max(2, n // 4)

    def separate():
        return [probe.generate(prompt, max_new_tokens=new, do_sample=True, n=1, seed=s,
                               stop_at_eos=False) for s in range(part)]

    res = interleaved({"batched": batched, "separate": separate}, max(2, ctx.repeats // 2))
    t_batch = res["batched"][0]
    t_part = res["separate"][0]
    scale = n / part
    t_sep = Timing(t_part.median * scale, t_part.min * scale, t_part.max * scale, t_part.runs)
    one, many = _hf_cached_step(hf, x, 1, ctx.repeats), _hf_cached_step(hf, x, n, ctx.repeats)
    g = f"sampling ({label})"
    ctx.add(Result(g, f"{n} samples x {new} tokens, one call (n={n})", t_batch.median, "s",
                   t_batch))
    ctx.add(Result(g, f"{n} samples x {new} tokens, {n} separate calls (scaled from {part})",
                   t_sep.median, "s", t_sep))
    gain = ctx.add(ratio(g, f"{n} separate calls / one call", t_sep, t_batch))
    ceiling = n * one.median / many.median
    ctx.add(Result(g, f"hardware ceiling: {n} x HF 1-row step / HF {n}-row step", ceiling, "x",
                   note="what batching can gain at most on this machine"))
    share = gain.value / ceiling
    ctx.add(Result(g, "share of the ceiling reached", share, "", target=">= 0.9",
                   ok=share >= 0.9))


def _cache_kw(hf, cache) -> dict:
    """The cache under the keyword this transformers version takes (``cache=`` since 5.2x)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    return {name: cache}


def _hf_cached_step(hf, x: torch.Tensor, rows: int, repeats: int) -> Timing:
    """One cached decoding step of HF's model for ``rows`` rows (after an 8-token prefill)."""
    from transformers import DynamicCache

    state: dict = {}

    def setup():
        cache = DynamicCache(config=hf.config)
        with torch.no_grad():
            out = hf(x.expand(rows, -1), use_cache=True, **_cache_kw(hf, cache))
        state.update(kw=_cache_kw(hf, cache), tok=out.logits[:, -1:].argmax(-1))

    def step():
        with torch.no_grad():
            hf(state["tok"], use_cache=True, **state["kw"])

    return measure(step, setup=setup, repeats=max(3, repeats))


def steps(ctx: Context, label: str, probe, hf) -> None:
    from logitprobe.kvcache import Decoder, cache_kwarg_fix
    from transformers import DynamicCache

    n = 5 if ctx.smoke else 30
    _, x = _prompt_ids(probe)

    def hf_steps():
        cache = DynamicCache(config=hf.config)
        with torch.no_grad():
            kw = _cache_kw(hf, cache)
            tok = hf(x, use_cache=True, **kw).logits[:, -1:].argmax(-1)
            for _ in range(n):
                tok = hf(tok, use_cache=True, **kw).logits[:, -1:].argmax(-1)

    def bridge_steps():
        cache = DynamicCache(config=hf.config)
        with torch.no_grad(), cache_kwarg_fix(probe.model):
            tok = probe.model(x, cache=cache, use_cache=True)[:, -1:].argmax(-1)
            for _ in range(n):
                tok = probe.model(tok, cache=cache, use_cache=True)[:, -1:].argmax(-1)

    def decoder_steps():
        dec = Decoder(probe.backend, pad_id=probe.engine.pad_id)
        logits = dec.prefill([x[0].tolist()])
        for _ in range(n):
            logits = dec.step(logits.argmax(-1))

    res = interleaved({"hf": hf_steps, "bridge": bridge_steps, "decoder": decoder_steps},
                       ctx.repeats)
    g = f"cached step ({label})"
    per = lambda t: Timing(*(v / (n + 1) for v in (t.median, t.min, t.max)), t.runs)  # noqa: E731
    t_hf, t_bridge, t_dec = (per(res[k][0]) for k in ("hf", "bridge", "decoder"))
    ctx.add(Result(g, "HF forward, 1 row", t_hf.median, "s", t_hf))
    ctx.add(Result(g, "bridge forward, 1 row (hook points)", t_bridge.median, "s", t_bridge))
    ctx.add(Result(g, "logitprobe Decoder.step, 1 row (plain twin)", t_dec.median, "s", t_dec))
    ctx.add(ratio(g, "bridge / HF forward", t_bridge, t_hf))
    ctx.add(ratio(g, "Decoder.step / HF forward", t_dec, t_hf))
