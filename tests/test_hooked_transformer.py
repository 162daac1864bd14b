"""The TransformerLens 3.x ``HookedTransformer`` backend, checked against the model's own forward.

Runs in a second virtual environment with TransformerLens 3.9 (``make test-tl3``; CI runs it
after ``make test``). TransformerLens 4 has no ``HookedTransformer``, so under the main
environment this module is skipped; ``LOGITPROBE_REQUIRE_TL3=1`` (set by ``make test-tl3``)
turns that skip into a failure so the TL3 run can never pass by skipping everything.

The models are built offline from a small ``HookedTransformerConfig`` (random, seeded weights)
and the locally trained test tokenizer: one GPT-2-like (learned positions, LayerNorm) and one
Llama-like (rotary positions, RMSNorm, gated MLP, grouped-query attention), because left
padding moves positions and the two kinds of position encoding take different code paths.
Every expected number comes from the model called directly on one unpadded prompt.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:
    if os.environ.get("LOGITPROBE_REQUIRE_TL3"):
        raise
    pytest.skip("TransformerLens 3.x only (HookedTransformer was removed in 4.0; installed: "
                f"transformer-lens {importlib.metadata.version('transformer-lens')}); "
                "run `make test-tl3`", allow_module_level=True)

import logitprobe  # noqa: E402
from logitprobe.errors import InvalidArgument, LogitProbeError, PromptError  # noqa: E402
from logitprobe.interventions import Scale, SetLogit, Steer, ZeroAblate  # noqa: E402

# TransformerLens 3.9 warns on every HookedTransformer construction that 4.0 removes it.
pytestmark = pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning")

N_CTX = 64
ARCHITECTURES = {
    "gpt2-like": dict(n_layers=2, d_model=64, n_ctx=N_CTX, d_head=16, n_heads=4, d_vocab=1000,
                      act_fn="gelu_new", normalization_type="LN"),
    "llama-like": dict(n_layers=2, d_model=64, n_ctx=N_CTX, d_head=16, n_heads=4, d_vocab=1000,
                       n_key_value_heads=2, d_mlp=128, act_fn="silu", normalization_type="RMS",
                       final_rms=True, positional_embedding_type="rotary", rotary_dim=16,
                       gated_mlp=True),
}
PROMPTS = ["Hi", "I like oat milk in my", "The capital of France is", "a",
           "The quick brown fox jumps over the lazy dog"]
WORDS = ["the", "cat", "sat", "on", "mat", "coffee", "Paris", "milk", "I", "like", "tea", "a"]


def build(tokenizer_dir, *, seed: int = 0, **cfg_overrides) -> HookedTransformer:
    """A HookedTransformer with random weights (seeded) and the test tokenizer; no download."""
    from transformers import AutoTokenizer

    arch = cfg_overrides.pop("arch", "gpt2-like")
    padding_side = cfg_overrides.pop("default_padding_side", None)
    cfg = HookedTransformerConfig(**{**ARCHITECTURES[arch], **cfg_overrides}, seed=seed,
                                  device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    with torch.random.fork_rng(devices=[]):  # the seed must not leak into other tests
        model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side=padding_side)
    return model.eval()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def ht(request, tiny_gpt2_dir) -> HookedTransformer:
    return build(tiny_gpt2_dir, arch=request.param)


@pytest.fixture
def probe(ht) -> logitprobe.Probe:
    return logitprobe.Probe(ht)  # fresh per test: an empty cache, so every query runs a forward


@torch.no_grad()
def ref_logits(model: HookedTransformer, ids: list[int], **kwargs) -> torch.Tensor:
    """``Float[Tensor, "pos vocab"]``: the model called on one unpadded prompt."""
    return model(torch.tensor([ids]), **kwargs)[0].float()


def hook_count(model: HookedTransformer) -> int:
    """PyTorch forward hooks registered on the hook points (each TL hook is one of them)."""
    return sum(len(p._forward_hooks) for p in model.hook_dict.values())


# -- the model as logitprobe sees it -----------------------------------------------------
def test_probe_reports_the_model(probe, ht):
    assert probe.backend.kind == "hooked_transformer"
    assert (probe.vocab_size, probe.n_layers, probe.n_ctx) == (ht.cfg.d_vocab_out, 2, N_CTX)
    assert probe.device == torch.device("cpu")
    assert "layers=2" in repr(probe)


def test_a_model_without_tokenizer_needs_one(ht):
    with torch.random.fork_rng(devices=[]):
        bare = HookedTransformer(HookedTransformerConfig(**ARCHITECTURES["gpt2-like"], seed=0,
                                                         device="cpu"))
    with pytest.raises(InvalidArgument, match="tokenizer=None"):
        logitprobe.Probe(bare)
    probe = logitprobe.Probe(bare, tokenizer=ht.tokenizer)
    assert probe.encode("a") == ht.to_tokens("a")[0].tolist()


def test_bos_follows_the_models_default_prepend_bos(ht, tiny_gpt2_dir):
    """prepend_bos=None: the tokens ``model.to_tokens`` gives, so ``model(prompt)`` agrees."""
    prompt = "I like oat milk in my"
    plain = list(ht.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    bos = ht.tokenizer.bos_token_id
    probe = logitprobe.Probe(ht)
    assert ht.cfg.default_prepend_bos
    assert probe.encode(prompt) == ht.to_tokens(prompt)[0].tolist() == [bos, *plain]
    with torch.no_grad():
        expected = ht(prompt)[0, -1]  # the model's own string call prepends BOS
    torch.testing.assert_close(probe.next_token(prompt).logits, expected, rtol=0, atol=1e-5)
    # an explicit policy wins
    assert logitprobe.Probe(ht, prepend_bos=False).encode(prompt) == plain
    # a model built not to prepend BOS
    no_bos = build(tiny_gpt2_dir, default_prepend_bos=False)
    assert logitprobe.Probe(no_bos).encode(prompt) == no_bos.to_tokens(prompt)[0].tolist() == plain


@pytest.mark.parametrize("prompt", PROMPTS)
def test_next_token_top_rank_match_the_models_forward(probe, ht, prompt):
    ids = probe.encode(prompt)
    expected = ref_logits(ht, ids)[-1]
    nt = probe.next_token(prompt)
    torch.testing.assert_close(nt.logits, expected, rtol=0, atol=1e-5)
    assert nt.top(5).ids == torch.topk(expected, 5).indices.tolist()
    assert nt.argmax.id == int(expected.argmax())
    token = " coffee"
    tid = probe.token_id(token)
    assert nt.rank(token) == 1 + int((expected > expected[tid]).sum())
    assert nt.logprob(token) == pytest.approx(
        float(expected[tid] - torch.logsumexp(expected, -1)), abs=1e-5)


def test_every_position_and_position_argument(probe, ht):
    prompt = PROMPTS[-1]
    expected = ref_logits(ht, probe.encode(prompt))
    torch.testing.assert_close(probe.logits(prompt), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(probe.next_token(prompt, position=2).logits, expected[2],
                               rtol=0, atol=1e-5)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),
                min_size=2, max_size=6))
def test_left_padded_batches_match_one_prompt_at_a_time(probe, ht, prompts):
    probe.clear_cache()
    before = probe.stats.snapshot()
    results = probe.next_token(prompts)
    assert (probe.stats - before).forwards <= 2  # batched, not one forward per prompt
    for prompt, result in zip(prompts, results):
        expected = ref_logits(ht, probe.encode(prompt))[-1]
        torch.testing.assert_close(result.logits, expected, rtol=0, atol=1e-5)


def test_batched_score_matches_teacher_forcing(probe, ht):
    prompts, continuation = PROMPTS[:3], " coffee every morning"
    scores = probe.score(prompts, continuation)
    cont = list(ht.tokenizer(continuation, add_special_tokens=False)["input_ids"])
    for prompt, score in zip(prompts, scores):
        ids = probe.encode(prompt)
        logits = ref_logits(ht, ids + cont)[len(ids) - 1:-1]  # row j predicts cont[j]
        logprobs = logits - torch.logsumexp(logits, -1, keepdim=True)
        expected = [float(logprobs[j, t]) for j, t in enumerate(cont)]
        assert [t.id for t in score.tokens] == cont
        assert score.logprobs == pytest.approx(expected, abs=1e-5)
        assert score.ranks == [1 + int((logits[j] > logits[j, t]).sum()) for j, t in enumerate(cont)]


def test_context_length_is_enforced(probe):
    with pytest.raises(PromptError, match="context of 64"):
        probe.next_token("cat " * (N_CTX + 5))


def test_leading_pad_tokens_are_attended_with_a_left_padding_tokenizer(tiny_gpt2_dir):
    """Without an explicit mask TransformerLens 3 would mask a prompt's leading pad-id tokens."""
    model = build(tiny_gpt2_dir, default_padding_side="left")
    probe = logitprobe.Probe(model, prepend_bos=False)
    prompt = "<|endoftext|><|endoftext|>I like"
    ids = probe.encode(prompt)
    assert ids[:2] == [model.tokenizer.pad_token_id] * 2
    got = probe.next_token(prompt).logits
    model.tokenizer.padding_side = "right"  # the reference: no mask guessed from the tokens
    expected = ref_logits(model, ids)[-1]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# -- interventions and hooks -------------------------------------------------------------
def test_hook_interventions_match_run_with_hooks(probe, ht):
    prompts = PROMPTS[:3]

    def zero_head_1(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, 1] = 0
        return z

    def halve(x, hook):
        return x * 0.5

    specs = [ZeroAblate("blocks.0.attn.hook_z", heads=[1]), Scale("blocks.1.hook_resid_pre", 0.5)]
    results = probe.next_token(prompts, interventions=specs)
    for prompt, result in zip(prompts, results):
        with torch.no_grad():
            expected = ht.run_with_hooks(torch.tensor([probe.encode(prompt)]), fwd_hooks=[
                ("blocks.0.attn.hook_z", zero_head_1), ("blocks.1.hook_resid_pre", halve)])[0, -1]
        torch.testing.assert_close(result.logits, expected, rtol=0, atol=1e-5)
        assert not torch.allclose(result.logits, ref_logits(ht, probe.encode(prompt))[-1])


def test_steer_from_prompts_and_logit_edits(probe, ht):
    hook = "blocks.1.hook_resid_pre"
    with torch.no_grad():
        _, pos = ht.run_with_cache(torch.tensor([probe.encode("coffee")]), names_filter=hook)
        _, neg = ht.run_with_cache(torch.tensor([probe.encode("tea")]), names_filter=hook)
    vector = pos[hook][0, -1] - neg[hook][0, -1]
    prompt = PROMPTS[1]
    got = probe.next_token(prompt, interventions=[
        Steer(hook, coefficient=3.0, positive="coffee", negative="tea"),
        SetLogit(" coffee", to="max+10")])
    with torch.no_grad():
        expected = ht.run_with_hooks(torch.tensor([probe.encode(prompt)]), fwd_hooks=[
            (hook, lambda x, hook: x + 3.0 * vector)])[0, -1]
    coffee = probe.token_id(" coffee")
    expected[coffee] = expected.max() + 10
    torch.testing.assert_close(got.logits, expected, rtol=0, atol=1e-4)
    assert got.argmax.token == " coffee"


def test_no_hook_of_ours_remains_and_user_hooks_survive(probe, ht):
    """TransformerLens #1636: only logitprobe's own hooks are removed (TL3: by context level)."""
    specs = [ZeroAblate("blocks.0.attn.hook_z", heads=[1]), SetLogit(" coffee", to="max+10")]
    calls: list[tuple[int, ...]] = []
    point = ht.hook_dict["blocks.0.hook_resid_post"]
    before = hook_count(ht)
    ht.add_hook("blocks.0.hook_resid_post", lambda x, hook: calls.append(tuple(x.shape)))
    try:
        probe.next_token(PROMPTS[:2], interventions=specs)
        with probe.intervene(Scale("blocks.1.hook_resid_pre", 0.5)):
            probe.score(PROMPTS[2], " coffee")
        probe.generate(PROMPTS[3], max_new_tokens=2, interventions=specs)
        assert hook_count(ht) == before + 1, "only the user's hook may remain"
        assert len(point.fwd_hooks) == 1
        n = len(calls)
        probe.next_token("a fresh prompt")
        assert len(calls) == n + 1, "the user's hook must still fire"
    finally:
        ht.reset_hooks()
    assert hook_count(ht) == before

    # an exception in the middle of a forward, while our hooks are attached
    def explode(x, hook):
        raise RuntimeError("user hook failed")

    ht.add_hook("blocks.1.hook_resid_pre", explode)
    try:
        with pytest.raises(RuntimeError, match="user hook failed"):
            probe.next_token("another fresh prompt", interventions=specs)
        assert hook_count(ht) == before + 1
    finally:
        ht.reset_hooks()
    assert not point.fwd_hooks


def test_queries_inside_the_users_hooks_block(probe, ht):
    """A user's ``with model.hooks(...)`` stays in force around and after our own block."""
    prompt = "the cat sat on the mat"
    ids = probe.encode(prompt)

    def double(x, hook):
        return x * 2

    with torch.no_grad():
        expected = ht.run_with_hooks(torch.tensor([ids]), fwd_hooks=[
            ("blocks.0.hook_resid_post", double), ("blocks.0.attn.hook_z", lambda z, hook: z * 0)])
    with ht.hooks(fwd_hooks=[("blocks.0.hook_resid_post", double)]):
        got = probe.next_token(prompt, interventions=[ZeroAblate("blocks.0.attn.hook_z")])
        assert len(ht.hook_dict["blocks.0.hook_resid_post"].fwd_hooks) == 1
        assert not ht.hook_dict["blocks.0.attn.hook_z"].fwd_hooks
    assert hook_count(ht) == 0
    torch.testing.assert_close(got.logits, expected[0, -1], rtol=0, atol=1e-5)


# -- generation and what needs a bridge ----------------------------------------------------
def test_greedy_generation_matches_a_manual_argmax_loop(probe, ht):
    prompts = [PROMPTS[0], PROMPTS[1]]  # different lengths: a left-padded batch
    gens = probe.generate(prompts, max_new_tokens=6, stop_at_eos=False)
    for prompt, gen in zip(prompts, gens):
        ids = probe.encode(prompt)
        for _ in range(6):
            ids.append(int(ref_logits(ht, ids)[-1].argmax()))
        assert list(gen.token_ids) == ids[-6:]
        assert gen.stop_reason == "length"


def test_sampling_is_seeded(probe):
    a = probe.generate(PROMPTS[1], max_new_tokens=4, do_sample=True, seed=7)
    b = probe.generate(PROMPTS[1], max_new_tokens=4, do_sample=True, seed=7)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 4


def test_logit_lens_needs_a_bridge(probe):
    with pytest.raises(LogitProbeError, match="TransformerBridge"):
        probe.lens(PROMPTS[1])


def test_patch_sweep_cell_matches_a_manual_patch(probe, ht):
    clean, corrupted = "The capital of France is", "The capital of Italy is"
    sweep = probe.patch_sweep(clean, corrupted, [" Paris", " Rome"])
    layer, pos = 1, len(probe.encode(clean)) - 2
    hook = f"blocks.{layer}.hook_resid_pre"
    with torch.no_grad():
        _, cache = ht.run_with_cache(torch.tensor([probe.encode(clean)]), names_filter=hook)

        def patch(x, hook):
            x = x.clone()
            x[:, pos] = cache[hook.name][:, pos]
            return x

        logits = ht.run_with_hooks(torch.tensor([probe.encode(corrupted)]),
                                   fwd_hooks=[(hook, patch)])[0, -1]
    paris, rome = probe.token_id(" Paris"), probe.token_id(" Rome")
    assert sweep.axes == ("layer", "pos")
    assert float(sweep.values[layer, pos]) == pytest.approx(float(logits[paris] - logits[rome]),
                                                            abs=1e-4)
