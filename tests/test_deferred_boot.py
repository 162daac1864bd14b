"""load() defers TransformerLens: the plain model answers until a bridge is needed.

The guarantee under test: booting is invisible in the results. Every answer equals
Hugging Face's (and a probe booted from the start) before the boot, across it and
after it; cached answers survive it only when the weights are provably the same;
anything that needs the bridge (probe.model, hooks, interventions, the lens, a
global torch hook) boots it first.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logitprobe
from logitprobe import ModelUnavailableError, _boot
from logitprobe import interventions as iv
from logitprobe._boot import PlainConfig

from conftest import private_load

PROMPTS = ["The cat sat on the", "I like oat milk in my", "One two three four five six"]
ATOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(params=["gpt2", "llama"])
def model_dir(request, tiny_gpt2_dir):
    return tiny_gpt2_dir if request.param == "gpt2" else request.getfixturevalue("tiny_llama_dir")


def fresh(directory) -> logitprobe.Probe:
    """A probe as a new process's load() makes it (nothing shared with other tests)."""
    return private_load(directory, device="cpu")


def hf_logits(directory, prompt: str, hook=None) -> torch.Tensor:
    """Last-position logits of the plain Hugging Face model, loaded independently."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    ids = AutoTokenizer.from_pretrained(str(directory))(prompt, return_tensors="pt").input_ids
    handle = None if hook is None else torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(ids).logits[0, -1]
    finally:
        if handle is not None:
            handle.remove()


def test_load_defers_the_bridge_until_something_needs_it(model_dir):
    probe = fresh(model_dir)
    assert not probe.backend.booted
    probe.next_token(PROMPTS)
    probe.score(PROMPTS[0], " mat")
    probe.generate(PROMPTS[1], max_new_tokens=3)
    probe.sample(PROMPTS[1], n=4, seed=0)
    assert not probe.backend.booted, "an unhooked query booted the bridge"
    assert type(probe.model).__name__ == "TransformerBridge" and probe.backend.booted


def test_answers_are_the_same_before_across_and_after_the_boot(model_dir):
    lazy = fresh(model_dir)
    eager = fresh(model_dir)
    eager.model  # booted before any query
    eager.engine.cache_bytes = 0
    before = lazy.next_token(PROMPTS)
    lazy.model
    after = lazy.next_token(PROMPTS)
    for b, a, e, p in zip(before, after, eager.next_token(PROMPTS), PROMPTS):
        want = hf_logits(model_dir, p)
        torch.testing.assert_close(b.logits, want, **ATOL)
        assert torch.equal(b.logits, a.logits)  # served from the cache across the boot
        torch.testing.assert_close(e.logits, want, **ATOL)
    # Greedy generation before the boot equals generation through the bridge itself.
    eager.backend.use_twin = False
    g_lazy = fresh(model_dir).generate(PROMPTS[2], max_new_tokens=6)
    assert list(g_lazy.token_ids) == list(eager.generate(PROMPTS[2], max_new_tokens=6).token_ids)


def test_cached_answers_survive_the_boot_only_with_the_same_weights(tiny_gpt2_dir):
    probe = fresh(tiny_gpt2_dir)
    first = probe.next_token(PROMPTS[0]).logits
    forwards = probe.stats.forwards
    probe.model
    assert torch.equal(probe.next_token(PROMPTS[0]).logits, first)
    assert probe.stats.forwards == forwards  # a cache hit: booting changed no weight
    with torch.no_grad():
        probe.model.original_model.lm_head.weight.mul_(2.0)  # a shared tensor, edited in place
    edited = probe.next_token(PROMPTS[0]).logits
    assert probe.stats.forwards == forwards + 1
    assert not torch.allclose(edited, first, **ATOL)  # the edit is seen, not a cached answer


def test_an_intervention_boots_the_bridge_and_applies(model_dir):
    probe = fresh(model_dir)
    clean = probe.next_token(PROMPTS[0])
    target = clean.top(5)[4]
    boosted = probe.next_token(PROMPTS[0], interventions=[iv.SetLogit(target.token, to="max+10")])
    assert probe.backend.booted
    assert boosted.argmax.id == target.id
    assert torch.equal(probe.next_token(PROMPTS[0]).logits, clean.logits)  # clean again


def test_a_global_torch_hook_before_the_boot_is_honoured_and_never_cached(tiny_gpt2_dir):
    probe = fresh(tiny_gpt2_dir)
    clean = probe.next_token(PROMPTS[0]).logits

    def boost(module, args, output):  # the unembedding: the one Linear with 1000 outputs
        if isinstance(module, torch.nn.Linear) and module.out_features == 1000:
            output = output.clone()
            output[..., 7] += 50.0
            return output
        return None

    want = hf_logits(tiny_gpt2_dir, PROMPTS[0], hook=boost)
    handle = torch.nn.modules.module.register_module_forward_hook(boost)
    try:
        got = probe.next_token(PROMPTS[0]).logits
    finally:
        handle.remove()
    torch.testing.assert_close(got, want, **ATOL)
    assert got.argmax() == 7
    torch.testing.assert_close(probe.next_token(PROMPTS[0]).logits, clean, **ATOL)


def test_a_deep_copy_before_the_boot_is_deferred_and_independent(tiny_gpt2_dir):
    probe = fresh(tiny_gpt2_dir)
    twin = copy.deepcopy(probe)
    assert not probe.backend.booted and not twin.backend.booted
    with torch.no_grad():
        next(twin.backend.parameters()).mul_(0.5)  # the copy's own weights
    assert not torch.allclose(twin.next_token(PROMPTS[0]).logits,
                              probe.next_token(PROMPTS[0]).logits, **ATOL)
    torch.testing.assert_close(probe.next_token(PROMPTS[0]).logits,
                               hf_logits(tiny_gpt2_dir, PROMPTS[0]), **ATOL)


def test_a_boot_racing_queries_in_other_threads_changes_no_answer(tiny_gpt2_dir):
    probe = fresh(tiny_gpt2_dir)
    probe.engine.cache_bytes = 0  # every query is a forward
    want = {p: hf_logits(tiny_gpt2_dir, p) for p in PROMPTS}
    errors: list[BaseException] = []

    def ask():
        try:
            for _ in range(5):
                for p in PROMPTS:
                    torch.testing.assert_close(probe.next_token(p).logits, want[p], **ATOL)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    probe.model  # boots while the others query
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_plain_config_agrees_with_the_bridge_cfg(model_dir):
    probe = fresh(model_dir)
    plain = probe.backend.cfg
    assert isinstance(plain, PlainConfig)
    cfg = probe.model.cfg
    for field in ("d_vocab", "n_ctx", "n_layers", "n_heads", "d_model", "d_head"):
        assert getattr(plain, field) == getattr(cfg, field), field
    assert plain.dtype == cfg.dtype
    assert (probe.vocab_size, probe.n_ctx, probe.n_layers) == (cfg.d_vocab, cfg.n_ctx, cfg.n_layers)


def test_a_failed_boot_is_a_named_error_and_queries_keep_working(tiny_gpt2_dir, monkeypatch):
    probe = fresh(tiny_gpt2_dir)

    class Broken:
        @staticmethod
        def boot_transformers(*args, **kwargs):
            raise ValueError("unsupported architecture")

    monkeypatch.setattr(_boot, "_bridge_class", lambda: Broken)
    with pytest.raises(ModelUnavailableError, match="could not boot a TransformerBridge.*"
                                                     "unsupported architecture"):
        probe.model
    assert not probe.backend.booted
    torch.testing.assert_close(probe.next_token(PROMPTS[0]).logits,
                               hf_logits(tiny_gpt2_dir, PROMPTS[0]), **ATOL)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(["query", "boot", "intervene", "score", "generate"]),
                    min_size=2, max_size=6),
       which=st.lists(st.integers(0, len(PROMPTS) - 1), min_size=6, max_size=6))
def test_any_order_of_queries_and_boot_matches_an_uncached_booted_probe(tiny_gpt2_dir, ops, which):
    probe = private_load(tiny_gpt2_dir, device="cpu")
    reference = private_load(tiny_gpt2_dir, device="cpu")
    reference.model
    reference.engine.cache_bytes = 0
    boost = [iv.AddLogit(" the", amount=4.0)]
    for op, i in zip(ops, which):
        p = PROMPTS[i]
        if op == "boot":
            probe.model
        elif op == "query":
            torch.testing.assert_close(probe.next_token(p).logits,
                                       reference.next_token(p).logits, **ATOL)
        elif op == "intervene":
            torch.testing.assert_close(probe.next_token(p, interventions=boost).logits,
                                       reference.next_token(p, interventions=boost).logits, **ATOL)
        elif op == "score":
            assert probe.score(p, " cat").logprob == pytest.approx(
                reference.score(p, " cat").logprob, abs=1e-4)
        else:
            assert list(probe.generate(p, max_new_tokens=3).token_ids) == list(
                reference.generate(p, max_new_tokens=3).token_ids)


@pytest.mark.slow  # a fresh interpreter: ~5 s
def test_a_fresh_process_answering_without_hooks_never_imports_transformer_lens(tiny_gpt2_dir):
    script = textwrap.dedent(f"""
        import sys, logitprobe
        p = logitprobe.load({str(tiny_gpt2_dir)!r}, device="cpu")
        p.next_token("The cat sat on the").top(3); p.score("The cat", " sat")
        p.next_token(["a b", "a c"]); p.generate("The cat", max_new_tokens=2)
        print("before", any(m.startswith("transformer_lens") for m in sys.modules))
        p.model
        print("after", any(m.startswith("transformer_lens") for m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.split() == ["before", "False", "after", "True"]


def test_a_config_without_the_usual_fields_is_booted_at_once(tiny_gpt2_dir, monkeypatch):
    def unreadable(cls, hf_model, name):
        raise AttributeError("'SomeConfig' object has no attribute 'num_attention_heads'")

    monkeypatch.setattr(PlainConfig, "of", classmethod(unreadable))
    probe = fresh(tiny_gpt2_dir)
    assert probe.backend.booted  # TransformerLens reads such a config itself
    torch.testing.assert_close(probe.next_token(PROMPTS[0]).logits,
                               hf_logits(tiny_gpt2_dir, PROMPTS[0]), **ATOL)


def test_the_weights_fingerprint_is_the_same_before_and_after_the_boot(model_dir):
    from logitprobe._provenance import fingerprint

    lazy, eager = fresh(model_dir), fresh(model_dir)
    eager.model
    eager.backend.use_twin = False  # no twin: the fingerprint must not depend on it
    want = fingerprint(lazy)
    lazy.model
    again = fresh(model_dir)
    again.model
    assert fingerprint(eager) == want == fingerprint(again)


def test_the_test_guard_sees_no_weight_change_in_a_boot_without_a_twin_check(tiny_gpt2_dir):
    from logitprobe._guard import Snapshot

    probe = fresh(tiny_gpt2_dir)
    snapshot = Snapshot(probe)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: None)
    try:
        probe.next_token(PROMPTS[0])  # a global hook: boots, and checks no twin under it
    finally:
        handle.remove()
    assert probe.backend.booted
    assert not snapshot.weights_changed()
    with torch.no_grad():
        next(probe.backend.parameters()).mul_(2.0)
    assert snapshot.weights_changed()
