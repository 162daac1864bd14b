"""docs/guarantees.md, the cache part: a cached answer is always the answer a fresh forward gives.

User hooks (TransformerLens ``hooks()`` / ``add_hook``, raw torch hooks, global module
hooks), weight edits (in place, replaced parameters, ``load_state_dict``) and other
threads' ``intervene`` blocks or intervened forwards never change what a query
returns, compared with plain Hugging Face computations of the same edit and with a
second probe on the same model that caches nothing.
"""

from __future__ import annotations

import contextlib
import copy
import threading

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

import logitprobe
from conftest import hf_reference
from logitprobe.interventions import SetLogit, ZeroAblate

PROMPTS = ["The cat sat on the", "I like oat milk in my", "The capital of France is",
           "One two three four"]
ABLATE = ZeroAblate("blocks.0.hook_mlp_out")
ATOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def hf_pair(tiny_gpt2_dir):
    return hf_reference(tiny_gpt2_dir)


@pytest.fixture
def own(hf_pair):
    """A probe of its own (these tests attach hooks and edit weights)."""
    hf, tok = hf_pair
    return logitprobe.Probe(hf, tok)


def hf_next(hf, ids, hook_module=None) -> torch.Tensor:
    """Last-position logits of a plain HF model, optionally with ``hook_module``'s output zeroed."""
    handle = None
    if hook_module is not None:
        handle = hook_module.register_forward_hook(lambda m, i, o: o * 0)
    try:
        with torch.no_grad():
            return hf(torch.tensor([ids])).logits[0, -1]
    finally:
        if handle is not None:
            handle.remove()


def bridge_params(probe) -> dict[str, torch.nn.Parameter]:
    """The bridge's parameters under their Hugging Face names."""
    return {name.replace("._original_component", ""): p
            for name, p in probe.model.original_model.named_parameters()}


def zero_mlp(m, i, o):
    return o * 0


@contextlib.contextmanager
def user_hook(probe, how: str):
    """Zero layer 0's MLP output the way a user would: four ways to attach a hook."""
    mlp = probe.model.blocks[0].mlp
    if how == "hooks()":
        with probe.model.hooks(fwd_hooks=[("blocks.0.hook_mlp_out", lambda x, hook: x * 0)]):
            yield
    elif how == "add_hook":
        probe.model.add_hook("blocks.0.hook_mlp_out", lambda x, hook: x * 0)
        try:
            yield
        finally:
            probe.model.reset_hooks()
    elif how == "raw":
        handle = mlp.register_forward_hook(zero_mlp)
        try:
            yield
        finally:
            handle.remove()
    else:  # a global module hook that edits only that module
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: o * 0 if m is mlp else None)
        try:
            yield
        finally:
            handle.remove()


# -- user hooks --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["hooks()", "add_hook", "raw", "global"])
def test_user_hooks_are_never_cached_over(own, hf_pair, how):
    hf = hf_pair[0]
    seen, fresh = PROMPTS[0], PROMPTS[1]
    own.next_token(seen)  # cached clean
    with user_hook(own, how):
        for prompt in (seen, fresh, fresh):
            ids = own.encode(prompt)
            want = hf_next(hf, ids, hf.transformer.h[0].mlp)
            got = own.next_token(prompt).logits
            torch.testing.assert_close(got, want, **ATOL)
            assert not torch.allclose(want, hf_next(hf, ids), **ATOL)  # the hook matters
        with own.intervene(SetLogit(" the", to="max+5")):  # intervened under a user hook too
            got = own.next_token(fresh).logits
        want = hf_next(hf, own.encode(fresh), hf.transformer.h[0].mlp)
        want[own.token_id(" the")] = want.max() + 5
        torch.testing.assert_close(got, want, **ATOL)
    for prompt in (seen, fresh):  # the hooked results were not cached as clean ones
        torch.testing.assert_close(own.next_token(prompt).logits,
                                   hf_next(hf, own.encode(prompt)), **ATOL)


# -- weight edits ------------------------------------------------------------------------
def _edit(probe, hf, how: str) -> None:
    """Halve the final norm's weight in ``probe``'s model (``how``) and in ``hf`` (plainly)."""
    with torch.no_grad():
        hf.transformer.ln_f.weight.mul_(0.5)
    ln_f = probe.model.original_model.transformer.ln_f._original_component
    if how == "in place":
        with torch.no_grad():
            bridge_params(probe)["transformer.ln_f.weight"].mul_(0.5)
    elif how == "replaced":
        ln_f.weight = torch.nn.Parameter(ln_f.weight.detach() * 0.5)
    elif how == "load_state_dict":
        ln_f.load_state_dict({"weight": ln_f.weight.detach() * 0.5, "bias": ln_f.bias.detach()})
    elif how == ".data":
        ln_f.weight.data.mul_(0.5)
        probe.clear_cache()  # the documented step: .data writes are invisible


@pytest.mark.parametrize("how", ["in place", "replaced", "load_state_dict", ".data"])
def test_weight_edits_invalidate_the_cache(own, hf_pair, how):
    hf = copy.deepcopy(hf_pair[0])
    before = {p: own.next_token(p).logits for p in PROMPTS}  # cached
    _edit(own, hf, how)
    for prompt in PROMPTS:
        got = own.next_token(prompt).logits
        want = hf_next(hf, own.encode(prompt))
        torch.testing.assert_close(got, want, **ATOL)
        assert not torch.allclose(got, before[prompt], **ATOL)
    # Generation runs the plain twin, which must follow the edit too.
    gen = own.generate(PROMPTS[0], max_new_tokens=4)
    ids = own.encode(PROMPTS[0])
    for token in gen.token_ids:
        assert int(hf_next(hf, ids).argmax()) == token
        ids.append(token)


def test_clear_cache_rebuilds_the_twin(own):
    # Before the bridge is booted the "twin" is the plain model itself: nothing to rebuild.
    assert not own.backend.booted and own.backend.twin() is own.backend.module
    own.model  # boot: now the twin is a rebuilt tree of the bridge's modules
    first = own.backend.twin()
    own.clear_cache()
    assert own.backend.twin() is not first


# -- threads -----------------------------------------------------------------------------
def test_an_intervene_block_does_not_reach_other_threads(tiny):
    prompt = PROMPTS[0]
    clean = tiny.next_token(prompt).argmax.id
    boosted = tiny.next_token(prompt).top(5)[4].id
    inside, done = threading.Event(), threading.Event()
    got = {}

    def other_thread():
        inside.wait(timeout=60)
        got["argmax"] = tiny.next_token(prompt).argmax.id
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with tiny.intervene(SetLogit(boosted, to="max+10")):
        inside.set()
        assert done.wait(timeout=60)
        mine = tiny.next_token(prompt).argmax.id
    thread.join(timeout=60)
    assert (got["argmax"], mine) == (clean, boosted)


def test_concurrent_forwards_never_see_each_others_hooks(tiny):
    # cache_bytes=0: every query is a forward, so the threads' forwards overlap. Two probes
    # on one model: the lock belongs to the model, not to a probe.
    probe = logitprobe.Probe(tiny.model, tiny.tokenizer, cache_bytes=0)
    other = logitprobe.Probe(tiny.model, tiny.tokenizer, cache_bytes=0)
    clean = [probe.next_token(p).logits for p in PROMPTS]
    ablated = [probe.next_token(p, interventions=[ABLATE]).logits for p in PROMPTS]
    generated = probe.generate(PROMPTS[1], max_new_tokens=6, interventions=[ABLATE]).token_ids
    start = threading.Barrier(3)
    errors: list[str] = []

    def queries(p, interventions, want):
        for _ in range(8):
            for prompt, expected in zip(PROMPTS, want):
                got = p.next_token(prompt, interventions=interventions).logits
                if not torch.allclose(got, expected, **ATOL):
                    errors.append(f"{prompt!r} interventions={interventions!r}")

    def generation():
        for _ in range(4):
            got = probe.generate(PROMPTS[1], max_new_tokens=6, interventions=[ABLATE]).token_ids
            if got != generated:
                errors.append(f"generate: {got} != {generated}")

    def thread(job, *args):
        def run():
            start.wait(timeout=60)
            try:
                job(*args)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(f"{type(exc).__name__}: {exc}")
        return threading.Thread(target=run)

    threads = [thread(queries, probe, None, clean), thread(queries, other, [ABLATE], ablated),
               thread(generation)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []


# -- everything interleaved --------------------------------------------------------------
class CacheMachine(RuleBasedStateMachine):
    """Clean, hooked, intervened, weight-edited and repeated queries vs an uncached probe."""

    probe: logitprobe.Probe  # set by the test
    reference: logitprobe.Probe  # same model, caches nothing

    def __init__(self):
        super().__init__()
        self.handle = None
        self.weight = bridge_params(self.probe)["transformer.ln_f.weight"]
        self.saved = self.weight.detach().clone()

    def check(self, prompt: str, got, interventions=None) -> None:
        want = self.reference.next_token(prompt, interventions=interventions).logits
        torch.testing.assert_close(got.logits, want, **ATOL)

    @rule(prompt=st.sampled_from(PROMPTS))
    def clean(self, prompt):
        self.check(prompt, self.probe.next_token(prompt))

    @rule(prompts=st.lists(st.sampled_from(PROMPTS), min_size=1, max_size=3))
    def batch(self, prompts):
        for prompt, got in zip(prompts, self.probe.next_token(prompts)):
            self.check(prompt, got)

    @rule(prompt=st.sampled_from(PROMPTS))
    def inside_hooks(self, prompt):
        with self.probe.model.hooks(fwd_hooks=[("blocks.1.hook_attn_out", lambda x, hook: x * 0)]):
            self.check(prompt, self.probe.next_token(prompt))

    @precondition(lambda self: self.handle is None)
    @rule()
    def add_raw_hook(self):
        self.handle = self.probe.model.blocks[0].mlp.register_forward_hook(zero_mlp)

    @precondition(lambda self: self.handle is not None)
    @rule()
    def remove_raw_hook(self):
        self.handle.remove()
        self.handle = None

    @rule(prompt=st.sampled_from(PROMPTS))
    def intervened(self, prompt):
        self.check(prompt, self.probe.next_token(prompt, interventions=[ABLATE]), [ABLATE])

    @rule(prompt=st.sampled_from(PROMPTS))
    def intervene_block(self, prompt):
        with self.probe.intervene(ABLATE):
            got = self.probe.next_token(prompt)
        self.check(prompt, got, [ABLATE])

    @rule(factor=st.sampled_from([0.5, 2.0, -1.0]))
    def edit_weights(self, factor):
        with torch.no_grad():
            self.weight.mul_(factor)

    @rule()
    def restore_weights(self):
        with torch.no_grad():
            self.weight.copy_(self.saved)

    @invariant()
    def nothing_of_ours_left_on_the_model(self):
        assert not self.probe.model.hook_dict["blocks.0.hook_mlp_out"].fwd_hooks

    def teardown(self):
        if self.handle is not None:
            self.handle.remove()
        self.restore_weights()


def test_interleaved_queries_match_an_uncached_probe(own):
    CacheMachine.probe = own
    CacheMachine.reference = logitprobe.Probe(own.model, own.tokenizer, cache_bytes=0)
    run_state_machine_as_test(CacheMachine, settings=settings(
        max_examples=6, stateful_step_count=10, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


def test_a_whole_model_dtype_conversion_is_seen(own):
    # .to(dtype) writes through .data, which no version counter sees; the key has the dtype.
    before = own.next_token(PROMPTS[0]).logits
    own.model.to(torch.float64)
    want = own.backend.twin()(torch.tensor([own.encode(PROMPTS[0])])).logits[0, -1]
    got = own.next_token(PROMPTS[0]).logits
    assert want.dtype == torch.float64
    torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=0)
    assert not torch.equal(got, before)


def test_a_deep_copy_is_an_independent_probe(tiny):
    import copy

    prompt = "The cat sat on the"
    before = tiny.next_token(prompt).logits
    twin = copy.deepcopy(tiny)
    assert twin is not tiny and twin.model is not tiny.model and twin.engine is not tiny.engine
    torch.testing.assert_close(twin.next_token(prompt).logits, before)
    with torch.no_grad():
        twin.model.original_model.lm_head.weight.mul_(0)  # edits the copy only
    assert torch.count_nonzero(twin.next_token(prompt).logits) == 0
    assert torch.equal(tiny.next_token(prompt).logits, before)
