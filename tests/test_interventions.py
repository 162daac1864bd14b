"""Interventions on the tiny random GPT-2, each checked against an independent computation:
a hook on a separately loaded Hugging Face model, or TransformerLens ``run_with_hooks``
with a hand-written hook on the bridge."""

from __future__ import annotations

import pytest
import torch

from logitprobe.interventions import (AddLogit, BanTokens, Match, MeanAblate, Patch, Scale,
                                      SetLogit, Steer, ZeroAblate)

PROMPT = "The quick brown fox jumps over the lazy dog"
SHORT = "I like oat milk in my"


def manual(probe, prompt, hooks):
    """Logits at every position from the bridge with hand-written TransformerLens hooks."""
    ids = torch.tensor([probe.encode(prompt)])
    with torch.no_grad():
        return probe.model.run_with_hooks(ids, fwd_hooks=hooks)[0]


def cached(probe, prompt, hook):
    ids = torch.tensor([probe.encode(prompt)])
    with torch.no_grad():
        _, cache = probe.model.run_with_cache(ids, names_filter=hook)
    return cache[hook][0]


# -- the tutorial's coffee hook, declaratively -----------------------------------------
@pytest.mark.parametrize("positions", ["last", "all"])
def test_coffee_hook_matches_hf_forward_hook(tiny, tiny_hf, positions):
    hf, tok = tiny_hf
    clean = tiny.next_token(SHORT)
    coffee = tiny.token_id(" coffee")
    assert clean.argmax.id != coffee
    nt = tiny.next_token(SHORT, interventions=[SetLogit(" coffee", to="max+10",
                                                        positions=positions)])
    assert nt.argmax == " coffee"
    assert torch.equal(nt.logits[coffee], clean.logits.max() + 10)  # exactly max + 10

    def hook(module, inputs, out):  # the tutorial's hook on the HF unembedding
        out = out.clone()
        out[0, -1, coffee] = out[0, -1].max() + 10
        return out

    handle = hf.lm_head.register_forward_hook(hook)
    try:
        with torch.no_grad():
            ref = hf(tok(SHORT, return_tensors="pt").input_ids).logits[0, -1]
    finally:
        handle.remove()
    assert int(ref.argmax()) == coffee
    torch.testing.assert_close(nt.logits, ref, atol=1e-5, rtol=1e-5)


def test_logit_edits_apply_at_every_scored_position(tiny):
    cont = " sat on the mat"
    ids = tiny.encode(PROMPT)
    cids = tiny.vocab.pieces(cont)
    tid = tiny.token_id(" the")

    def add(x, hook):
        x = x.clone()
        x[..., tid] += 3.0
        return x

    logits = manual(tiny, PROMPT + cont, [("unembed.hook_out", add)])
    rows = logits[len(ids) - 1: len(ids) - 1 + len(cids)].log_softmax(-1)
    want = [float(rows[j, c]) for j, c in enumerate(cids)]
    got = tiny.score(PROMPT, cont, interventions=AddLogit(" the", 3.0))
    assert [t.logprob for t in got.tokens] == pytest.approx(want, abs=1e-4)
    banned = tiny.score(PROMPT, cont, interventions=[BanTokens([" the"])])
    assert banned.tokens[2].token == " the" and banned.tokens[2].logprob == float("-inf")
    plain = manual(tiny, PROMPT + cont, [])[len(ids) - 1]
    assert banned.tokens[0].logprob == pytest.approx(
        float(plain.index_fill(0, torch.tensor([tid]), float("-inf")).log_softmax(-1)[cids[0]]),
        abs=1e-4)


# -- activation edits against run_with_hooks --------------------------------------------
def _case(name, tiny):
    """(spec, hand-written TransformerLens hooks) pairs computing the same edit."""
    g = torch.Generator().manual_seed(1)
    if name == "zero_head":
        def h(z, hook):
            z = z.clone(); z[:, :, 1] = 0; return z  # noqa: E702
        return ZeroAblate("blocks.0.attn.hook_z", heads=[1]), [("blocks.0.attn.hook_z", h)]
    if name == "scale_neurons":
        def h(a, hook):
            a = a.clone(); a[..., [3, 7]] *= 0.5; return a  # noqa: E702
        return Scale("blocks.1.mlp.hook_post", 0.5, neurons=[3, 7]), [("blocks.1.mlp.hook_post", h)]
    if name == "mean_ablate":
        refs = ["The cat sat on the mat.", "Paris is a city in France."]
        mean = torch.cat([cached(tiny, r, "blocks.1.hook_resid_pre") for r in refs]).mean(0)

        def h(a, hook):
            a = a.clone(); a[:, 1] = mean; return a  # noqa: E702
        return (MeanAblate("blocks.1.hook_resid_pre", reference=refs, positions=[1]),
                [("blocks.1.hook_resid_pre", h)])
    if name == "steer_prompts":
        vec = (cached(tiny, "I love it", "blocks.1.hook_resid_pre")[-1]
               - cached(tiny, "I hate it", "blocks.1.hook_resid_pre")[-1])

        def h(a, hook):
            return a + 3.0 * vec
        return (Steer("blocks.1.hook_resid_pre", coefficient=3, positive="I love it",
                      negative="I hate it"), [("blocks.1.hook_resid_pre", h)])
    if name == "steer_vector":
        vec = torch.randn(64, generator=g)

        def h(a, hook):
            a = a.clone(); a[:, -1] += -2.0 * vec; return a  # noqa: E702
        return (Steer("blocks.0.hook_resid_post", coefficient=-2.0, vector=vec.tolist(),
                      positions="last"), [("blocks.0.hook_resid_post", h)])
    if name == "patch_last":
        src = cached(tiny, "The capital of Italy is", "blocks.0.hook_resid_post")

        def h(a, hook):
            a = a.clone(); a[:, -1] = src[-1]; return a  # noqa: E702
        return (Patch("blocks.0.hook_resid_post", source="The capital of Italy is",
                      positions="last"), [("blocks.0.hook_resid_post", h)])
    if name == "zero_pattern_head":
        def h(p, hook):
            p = p.clone(); p[:, 2] = 0; return p  # noqa: E702
        return ZeroAblate("blocks.1.attn.hook_pattern", heads=[2]), [("blocks.1.attn.hook_pattern", h)]
    raise KeyError(name)


CASES = ["zero_head", "scale_neurons", "mean_ablate", "steer_prompts", "steer_vector",
         "patch_last", "zero_pattern_head"]


@pytest.mark.parametrize("name", CASES)
def test_activation_edit_matches_run_with_hooks(tiny, name):
    spec, hooks = _case(name, tiny)
    want = manual(tiny, PROMPT, hooks)
    got = tiny.logits(PROMPT, interventions=spec)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - tiny.logits(PROMPT)).abs().max() > 1e-3, "the edit must change something"
    # the same edit in a left-padded batch: each row as if it ran alone
    prompts = [SHORT, "a cat"]
    for nt, prompt in zip(tiny.next_token(prompts, interventions=spec), prompts):
        torch.testing.assert_close(nt.logits, manual(tiny, prompt, hooks)[-1], atol=1e-4,
                                   rtol=1e-4)


@pytest.mark.parametrize("positions, picked", [
    ("last", lambda toks: [len(toks) - 1]),
    ([0, 2], lambda toks: [i for i in (0, 2) if i < len(toks)]),
    ([-2], lambda toks: [len(toks) - 2]),
    ([40], lambda toks: []),
    (Match(" the"), lambda toks: [i for i, t in enumerate(toks) if t == " the"]),
])
def test_positions_per_row_in_a_batch(tiny, positions, picked):
    spec = ZeroAblate("blocks.0.hook_resid_post", positions=positions)
    prompts = [PROMPT, "the cat sat on the mat", "a cat"]
    got = tiny.next_token(prompts, interventions=spec)
    for nt, prompt in zip(got, prompts):
        where = picked(tiny.tokenize(prompt))

        def h(a, hook, where=where):
            a = a.clone(); a[:, where] = 0; return a  # noqa: E702
        torch.testing.assert_close(nt.logits, manual(tiny, prompt,
                                                     [("blocks.0.hook_resid_post", h)])[-1],
                                   atol=1e-4, rtol=1e-4)


def test_patch_positions_align_from_the_start_or_the_end(tiny):
    source = "The capital of Italy is"
    src = cached(tiny, source, "blocks.0.hook_resid_post")
    n_src = src.shape[0]

    def patch(pairs):
        def h(a, hook):
            a = a.clone()
            for dst, s in pairs:
                a[:, dst] = src[s]
            return a
        return [("blocks.0.hook_resid_post", h)]

    n = len(tiny.encode(PROMPT))
    spec = Patch("blocks.0.hook_resid_post", source=source, positions=[1, -2, 30])
    want = manual(tiny, PROMPT, patch([(1, 1), (n - 2, n_src - 2)]))  # 30: not in the source
    torch.testing.assert_close(tiny.logits(PROMPT, interventions=spec), want, atol=1e-5, rtol=1e-5)


# -- generation with a KV cache ---------------------------------------------------------
GEN_SPECS = [
    [AddLogit(" the", 2.0, positions="last")],
    [Steer("blocks.1.hook_resid_pre", coefficient=4, positive="I love it", negative="I hate it")],
    [ZeroAblate("blocks.0.attn.hook_z", heads=[0, 3], positions=[1, 2, 9])],
    [ZeroAblate("blocks.0.hook_resid_post", positions=Match(" the"))],
    [Patch("blocks.0.hook_resid_post", source="The capital of Italy is", positions=[0, 1, 2])],
    # 'last' activation edits are not cache-safe: they decode with full forwards
    [Steer("blocks.0.hook_resid_post", coefficient=6, positive="I love it", negative="I hate it",
           positions="last"), BanTokens([" the"])],
]


@pytest.mark.parametrize("specs", GEN_SPECS, ids=lambda s: "+".join(x.kind for x in s))
def test_cached_generation_equals_naive_loop(tiny, specs):
    compiled = tiny._compile_interventions(specs)
    assert compiled.cache_safe == all(
        s.is_logit_edit or s.positions != "last" for s in specs)
    prompts = [PROMPT, SHORT]
    gens = tiny.generate(prompts, max_new_tokens=4, stop_at_eos=False, interventions=specs)
    for prompt, gen in zip(prompts, gens):
        ids = tiny.encode(prompt)
        for _ in range(4):  # one full forward of the grown sequence per step
            ids.append(int(tiny.engine.logits([ids], 1, compiled)[0][-1].argmax()))
        assert list(gen.token_ids) == ids[len(tiny.encode(prompt)):]


def test_a_kv_cache_would_keep_last_position_edits(tiny):
    """Why 'last' activation edits decode without a KV cache (``cache_safe`` is False)."""
    from logitprobe.kvcache import Decoder

    spec = Steer("blocks.0.hook_resid_post", coefficient=6, positive="I love it",
                 negative="I hate it", positions="last")
    compiled = tiny._compile_interventions([spec])
    assert not compiled.cache_safe
    ids = tiny.encode(SHORT)
    nxt = tiny.token_id(" coffee")
    full = tiny.engine.logits([ids + [nxt]], 1, compiled)[0][-1]
    for cached, same in ((True, False), (None, True)):  # forced cache / logitprobe's choice
        decoder = Decoder(tiny.backend, pad_id=tiny.engine.pad_id, intervention=compiled,
                          cached=cached)
        decoder.prefill([ids])
        step = decoder.step(torch.tensor([nxt]))[0]
        assert torch.allclose(step, full, atol=1e-4) is same
