"""The plain-HF fast path for unhooked generation (logitprobe.twin)."""

from __future__ import annotations

import pytest
import torch

import logitprobe
from logitprobe import interventions as iv
from logitprobe.kvcache import Decoder
from logitprobe.twin import NoTwin, hooks_attached, plain_twin

PROMPTS = ["The cat sat on", "I like oat milk in my coffee and", "Paris"]


@pytest.fixture
def private_tiny(tiny_gpt2_dir):
    """A probe of its own (tests here edit weights and switch modes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir)).eval()
    probe = logitprobe.Probe(hf, AutoTokenizer.from_pretrained(str(tiny_gpt2_dir)))
    probe.model  # boot the bridge: the twin is the plain model inside it
    return probe


def decoder_for(probe, **kwargs) -> Decoder:
    dec = Decoder(probe.backend, pad_id=probe.engine.pad_id, **kwargs)
    dec.prefill([probe.encode(p) for p in PROMPTS])
    return dec


@pytest.mark.parametrize("name", ["tiny", "smol"])
def test_twin_shares_the_weights_and_computes_the_hf_logits(name, request):
    probe = request.getfixturevalue(name)
    reference, _ = request.getfixturevalue(f"{name}_hf")
    probe.model  # boot the bridge (deferred by load()): the twin is rebuilt from it
    twin = probe.backend.twin()
    assert twin is not None and type(twin) is type(probe.model.original_model)
    bridge_storage = {p.data_ptr() for p in probe.model.parameters()}
    assert all(p.data_ptr() in bridge_storage for p in twin.parameters())  # no copy
    ids = torch.tensor([probe.encode("I like oat milk in my")])
    with torch.no_grad():
        got = twin(ids).logits
        torch.testing.assert_close(got, reference(ids).logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got, probe.model(ids), atol=1e-4, rtol=1e-4)
    assert not any(type(m).__name__ == "HookPoint" for m in twin.modules())


def test_generation_uses_the_twin_only_when_nothing_is_hooked(tiny):
    assert decoder_for(tiny)._twin is not None
    boost = iv.SetLogit(" the", to="max+10")
    assert decoder_for(tiny, intervention=tiny._compile_interventions([boost]))._twin is None
    with tiny.model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        assert hooks_attached(tiny.model)
        assert decoder_for(tiny)._twin is None
    assert not hooks_attached(tiny.model)
    tiny.backend.use_twin = False
    try:
        assert decoder_for(tiny)._twin is None
    finally:
        tiny.backend.use_twin = True


def test_a_user_hook_on_the_bridge_is_honoured_in_generation(tiny):
    target = tiny.token_id(" the")

    def force(logits, hook):
        logits[..., target] = logits.max() + 10
        return logits

    plain = tiny.generate(PROMPTS[0], max_new_tokens=5)
    assert set(plain.token_ids) != {target}
    with tiny.model.hooks(fwd_hooks=[("unembed.hook_out", force)]):
        hooked = tiny.generate(PROMPTS[0], max_new_tokens=5)
    assert list(hooked.token_ids) == [target] * 5


@pytest.mark.parametrize("use_twin", [True, False])
def test_greedy_and_sampled_generation_agree_with_and_without_the_twin(tiny, use_twin):
    tiny.backend.use_twin = use_twin
    try:
        greedy = tiny.generate(PROMPTS, max_new_tokens=10)
        sampled = tiny.generate(PROMPTS[1], max_new_tokens=10, do_sample=True, n=4, seed=3)
    finally:
        tiny.backend.use_twin = True
    assert [list(g.token_ids) for g in greedy] == \
        [list(g.token_ids) for g in tiny.generate(PROMPTS, max_new_tokens=10)]
    assert [list(g.token_ids) for g in sampled] == [list(g.token_ids) for g in tiny.generate(
        PROMPTS[1], max_new_tokens=10, do_sample=True, n=4, seed=3)]


def test_edited_or_processed_weights_rebuild_or_refuse_the_twin(private_tiny):
    probe = private_tiny
    first = probe.backend.twin()
    assert first is not None and probe.backend.twin() is first  # cached
    # An in-place edit of a weight both models share: the twin is rebuilt and agrees.
    with torch.no_grad():
        probe.model.original_model.lm_head.weight[5] += 3.0
    second = probe.backend.twin()
    assert second is not None and second is not first
    ids = torch.tensor([probe.encode(PROMPTS[0])])
    with torch.no_grad():
        torch.testing.assert_close(second(ids).logits, probe.model(ids), atol=1e-4, rtol=1e-4)
    # Compatibility mode processes (folds) the weights: the bridge's numerics are no longer
    # the plain model's, so there is no twin and generation runs through the bridge.
    probe.model.enable_compatibility_mode(disable_warnings=True)
    assert probe.backend.twin() is None
    assert "processed weights" in probe.backend._twins.reason
    with pytest.raises(NoTwin, match="processed weights"):
        plain_twin(probe.model)
    gen = probe.generate(PROMPTS[0], max_new_tokens=5)
    full = probe.engine.logits([probe.encode(PROMPTS[0]) + list(gen.token_ids[:-1])], 5)[0]
    assert list(gen.token_ids) == full.argmax(-1).tolist()


def test_rebuild_twin_after_an_edit_through_data(private_tiny):
    probe = private_tiny
    first = probe.backend.twin()
    probe.backend.rebuild_twin()
    second = probe.backend.twin()
    assert second is not None and second is not first
