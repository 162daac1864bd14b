"""Generation: KV-cached decoding checked against Hugging Face and against full recomputation.

False-alarm rate of the chi-square tests: 1e-3 each, with fixed seeds.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe.engine import BatchLayout
from logitprobe.errors import InvalidArgument, PromptError
from logitprobe.generation import Generation, _logsumexp
from logitprobe.kvcache import Decoder
from logitprobe.sampling_stats import chi_square_test
from logitprobe.warpers import build_warpers, probabilities

FALSE_ALARM = 1e-3
TINY_PROMPTS = ["The cat sat on", "I like oat milk in my coffee and", "Paris"]
SMOL_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village near the mountains,",
    "def fibonacci(n):",
    # the model answers and emits its EOS (<|im_end|>) after a few tokens
    "<|im_start|>user\nWhat is the capital of France? One word.<|im_end|>\n<|im_start|>assistant\n",
]


def hf_greedy(hf, ids: list[int], max_new_tokens: int) -> list[int]:
    model, tok = hf
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.eos_token_id)
    return out[0, len(ids):].tolist()


def same(a: Generation, b: Generation) -> bool:
    """Equal up to float rounding (a batched forward is not bitwise an unbatched one)."""
    key = lambda g: (g.prompt, g.token_ids, g.text, g.stop_reason, g.stop_string)  # noqa: E731
    return key(a) == key(b) and all(abs(x.logprob - y.logprob) < 1e-4
                                    for x, y in zip(a.steps, b.steps))


def teacher_forced(probe, ids: list[int], keep: int) -> torch.Tensor:
    """Logits from full, uncached forwards (the engine), for the last ``keep`` positions."""
    return probe.engine.logits([ids], keep)[0]


# -- greedy == Hugging Face ------------------------------------------------------------
def test_greedy_matches_hf_generate_tiny(tiny, tiny_hf):
    batched = tiny.generate(TINY_PROMPTS, max_new_tokens=20)
    for prompt, gen in zip(TINY_PROMPTS, batched):
        ref = hf_greedy(tiny_hf, tiny.encode(prompt), 20)
        assert list(gen.token_ids) == ref, prompt
        assert list(tiny.generate(prompt, max_new_tokens=20).token_ids) == ref
        assert gen.text == tiny.decode(ref) and gen.greedy


@pytest.fixture(scope="module")
def smol_refs(smol, smol_hf):
    """Hugging Face greedy continuations (20 tokens) of SMOL_PROMPTS, computed once."""
    return {p: hf_greedy(smol_hf, smol.encode(p), 20) for p in SMOL_PROMPTS}


@pytest.mark.slow
def test_greedy_matches_hf_generate_smollm2(smol, smol_refs):
    batched = smol.generate(SMOL_PROMPTS, max_new_tokens=20)
    for prompt, gen in zip(SMOL_PROMPTS, batched):
        ref = smol_refs[prompt]
        assert list(gen.token_ids) == ref, (prompt, gen.text, smol.decode(ref))
    assert batched[0].text == " Paris.\n\nThe answer is: 2018-01-22 "
    assert batched[3].stop_reason == "eos" and batched[3].text.endswith("<|im_end|>")
    assert batched[0].stop_reason == "length" and len(batched[0]) == 20


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_upstream_bridge_generate_still_loses_its_kv_cache(smol, smol_refs):
    """Regression guard for the defect kvcache.cache_kwarg_fix works around.

    TransformerBridge.generate (default KV cache) ignores the cache on every step
    with transformer-lens 4.3.0 + transformers 5.24. When this test fails, upstream
    has fixed it.
    """
    prompt = SMOL_PROMPTS[0]
    ids = smol.encode(prompt)
    ref = smol_refs[prompt][:12]
    with torch.no_grad():
        out = smol.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                  verbose=False)
    got = out[0, len(ids):].tolist()
    assert got != ref, ("upstream fixed: switch to bridge.generate / remove workaround "
                        "(logitprobe/kvcache.py cache_kwarg_fix)")
    assert smol.decode(got).startswith(" Paris--")  # the symptom in the issue
    # ours, on the same bridge afterwards, is still right
    assert list(smol.generate(prompt, max_new_tokens=12).token_ids) == ref


def test_uncached_decoder_path_agrees_with_the_kv_cache(tiny):
    """Decoder(cached=False) re-runs full forwards (non-bridge models, cache-unsafe edits)."""
    seqs = [tiny.encode(p) for p in TINY_PROMPTS]
    fast = Decoder(tiny.backend, pad_id=tiny.engine.pad_id)
    slow = Decoder(tiny.backend, pad_id=tiny.engine.pad_id, cached=False)
    assert fast.cached and not slow.cached
    a, b = fast.prefill(seqs, repeats=2), slow.prefill(seqs, repeats=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        nxt = torch.multinomial(a.softmax(-1), 1, generator=gen).squeeze(1)
        a, b = fast.step(nxt), slow.step(nxt)
    assert fast.lengths == slow.lengths == [len(s) + 5 for s in seqs for _ in "ab"]


# -- sampled generation is exactly what the model says ---------------------------------
def test_sampled_steps_agree_with_full_recomputation(tiny):
    """KV cache + left padding + n-fold cache expansion vs uncached teacher forcing."""
    gens = tiny.generate(TINY_PROMPTS, max_new_tokens=12, do_sample=True, temperature=1.5,
                         top_k=200, n=3, seed=4)
    assert len(gens) == 9 and [g.prompt for g in gens] == [p for p in TINY_PROMPTS for _ in "abc"]
    warpers = build_warpers(do_sample=True, temperature=1.5, top_k=200)
    for g in gens:
        ids = tiny.encode(g.prompt)
        logits = teacher_forced(tiny, ids + list(g.token_ids[:-1]), len(g))
        logprobs = logits.log_softmax(-1)
        warped = probabilities(logits, warpers)
        for j, step in enumerate(g.steps):
            assert step.logprob == pytest.approx(float(logprobs[j, step.id]), abs=1e-4)
            assert step.rank == int((logits[j] > logits[j, step.id]).sum()) + 1
            assert step.warped_prob == pytest.approx(float(warped[j, step.id]), abs=1e-5)
            assert step.warped_prob > 0


def test_generation_seeds_reproduce(tiny):
    kw = dict(do_sample=True, temperature=1.2, seed=21)
    four = tiny.generate("The cat", max_new_tokens=10, n=4, **kw)
    assert tiny.generate("The cat", max_new_tokens=10, n=4, **kw) == four  # bit for bit
    two = tiny.generate("The cat", max_new_tokens=10, n=2, **kw)  # prefix in n
    assert all(same(a, b) for a, b in zip(two, four[:2]))
    short = tiny.generate("The cat", max_new_tokens=4, n=4, **kw)  # prefix in length
    assert [g.token_ids for g in short] == [g.token_ids[:4] for g in four]
    mixed = tiny.generate(["Paris", "The cat"], max_new_tokens=10, n=4, **kw)  # batch-independent
    assert [g.token_ids for g in mixed[4:]] == [g.token_ids for g in four]
    assert len({g.token_ids for g in four}) > 1  # the rows differ from each other
    other = tiny.generate("The cat", max_new_tokens=10, n=4, do_sample=True, temperature=1.2,
                          seed=22)
    assert [g.token_ids for g in other] != [g.token_ids for g in four]
    first = tiny.sample("The cat", 4, seed=21, temperature=1.2)  # sample == generate's step 0
    assert [c.id for c in first] == [g.token_ids[0] for g in four]
    assert all(g.seed == 21 and g.index == i for i, g in enumerate(four))


def test_generation_leaves_global_rng_alone_and_records_fresh_seeds(tiny):
    state = torch.get_rng_state()
    g = tiny.generate("The cat", max_new_tokens=6, do_sample=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(g.seed, int)
    assert tiny.generate("The cat", max_new_tokens=6, do_sample=True, seed=g.seed) == g


def test_sampled_first_and_second_tokens_follow_the_warped_softmax(tiny):
    """Chi-square on step 0 (vs the prompt's warped softmax) and on step 1 given step 0."""
    warp = dict(temperature=0.9, top_k=4)
    n = 4000
    gens = tiny.generate("The cat sat", max_new_tokens=2, do_sample=True, n=n, seed=8, **warp)
    warpers = build_warpers(do_sample=True, **warp)
    ids = tiny.encode("The cat sat")
    first = Counter(g.token_ids[0] for g in gens)
    p0 = probabilities(teacher_forced(tiny, ids, 1), warpers)[0]
    assert not chi_square_test(first, p0).rejects(FALSE_ALARM)
    uniform_on_top4 = (p0 > 0).double()  # a wrong distribution on the right support
    assert chi_square_test(first, uniform_on_top4).rejects(FALSE_ALARM)
    second: dict[int, Counter] = defaultdict(Counter)
    for g in gens:
        second[g.token_ids[0]][g.token_ids[1]] += 1
    for t0, counts in second.items():
        if sum(counts.values()) < 200:
            continue
        p1 = probabilities(teacher_forced(tiny, ids + [t0], 1), warpers)[0]
        assert not chi_square_test(counts, p1).rejects(FALSE_ALARM / len(second)), t0


# -- steps, stop, results --------------------------------------------------------------
def test_steps_yield_the_distributions_and_choices_of_generate(tiny):
    gen = tiny.generate("The cat sat", max_new_tokens=6, do_sample=True, seed=2, temperature=1.4)
    ids = tiny.encode("The cat sat")
    seen = []
    for dist, chosen in tiny.steps("The cat sat", max_new_tokens=6, do_sample=True, seed=2,
                                   temperature=1.4):
        assert list(dist.token_ids) == ids
        torch.testing.assert_close(dist.logits, teacher_forced(tiny, ids, 1)[0], atol=1e-4, rtol=0)
        assert chosen == dist.candidate(chosen.id)
        seen.append(chosen.id)
        ids = ids + [chosen.id]
    assert seen == list(gen.token_ids)


def test_stop_strings_and_stop_reasons(tiny):
    free = tiny.generate("The cat sat on", max_new_tokens=8)
    assert free.text.startswith(" on on")
    stopped = tiny.generate("The cat sat on", max_new_tokens=8, stop=[" on on", "zzz"])
    assert stopped.stop_reason == "stop" and stopped.stop_string == " on on"
    assert stopped.token_ids == free.token_ids[:2] and stopped.text == " on on"
    assert free.stop_reason == "length"
    # rows stop independently in a batch
    both = tiny.generate(["The cat sat on", "Paris"], max_new_tokens=8, stop=" on on")
    assert same(both[0], stopped)
    assert same(both[1], tiny.generate("Paris", max_new_tokens=8, stop=" on on"))


def test_generation_result_reads_well(tiny):
    g = tiny.generate("The cat sat on", max_new_tokens=3)
    assert isinstance(g, Generation)
    assert g.full_text == "The cat sat on" + g.text
    assert g.tokens == [tiny.vocab.decode_one(i) for i in g.token_ids]
    assert g.logprob == pytest.approx(sum(s.logprob for s in g.steps))
    text = str(g)
    first_line = "'The cat sat on' -> ' on on on' (3 tokens, stopped by length)"
    assert text.splitlines()[0] == first_line
    assert "warped p" in text and "rank" in text
    assert "stop_reason='length'" in repr(g)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(temperature=0.0, do_sample=True), InvalidArgument, "temperature"),
    (dict(temperature=-0.5, do_sample=True), InvalidArgument, "temperature"),
    (dict(top_p=0.0, do_sample=True), InvalidArgument, "top_p"),
    (dict(top_p=1.01, do_sample=True), InvalidArgument, "top_p"),
    (dict(top_k=0, do_sample=True), InvalidArgument, "top_k"),
    (dict(max_new_tokens=200), InvalidArgument,
     r"max_new_tokens=200: the prompt 'The cat' has 2 tokens and the model's context is 128, "
     r"so at most 126 new tokens fit"),
    (dict(max_new_tokens=0), InvalidArgument, r"max_new_tokens=0: `max_new_tokens` must be a "
                                              "positive int"),
    (dict(n=0), InvalidArgument, r"n=0: `n` must be a positive int"),
    (dict(temperature=0.7), InvalidArgument, r"temperature=0.7: warpers only apply when "
                                             "sampling; pass do_sample=True"),
    (dict(do_sample="yes"), InvalidArgument, r"do_sample='yes': `do_sample` must be True or False"),
    (dict(stop=""), InvalidArgument, r"stop='': `stop` must be a non-empty str"),
    (dict(seed=1.5), InvalidArgument, r"seed=1.5: `seed` must be an int"),
])
def test_generate_bad_arguments(tiny, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        tiny.generate("The cat", **kwargs)
    if "n" not in kwargs:  # steps() has no n
        with pytest.raises(error, match=pattern):
            tiny.steps("The cat", **kwargs)  # raised at the call, not at the first next()


def test_prompt_that_fills_the_context(tiny):
    prompt = " cat" * tiny.n_ctx
    assert len(tiny.encode(prompt)) == tiny.n_ctx == 128
    pattern = (r"max_new_tokens=1: the prompt ' cat cat .*…' has 128 tokens and already fills "
               r"the model's context of 128; shorten it")
    with pytest.raises(InvalidArgument, match=pattern):
        tiny.generate(prompt, max_new_tokens=1)
    assert len(tiny.generate(prompt[4:], max_new_tokens=1)) == 1  # 127 + 1 fits exactly


def test_generate_bad_prompts(tiny):
    with pytest.raises(PromptError, match="empty"):
        tiny.generate("")
    with pytest.raises(PromptError, match=r"prompt\[1\]=3"):
        tiny.generate(["ok", 3])
    with pytest.raises(InvalidArgument, match="steps\\(\\) takes one str prompt"):
        tiny.steps(["a", "b"])


# -- interventions fire on every forward -----------------------------------------------
class PositionNudge:
    """Test double of a compiled intervention: adds ``vec`` to the residual at one position.

    Implements the engine's protocol (``key``, ``hooks(layout)``, ``check_fired``)
    and records every layout it was asked for.
    """

    def __init__(self, position: int, vec: torch.Tensor):
        self.position, self.vec = position, vec
        self.key = ("nudge", position)
        self.layouts: list[BatchLayout] = []
        self.fired = 0
        self.checked = 0

    def hooks(self, layout: BatchLayout):
        self.layouts.append(layout)

        def fn(resid, hook):  # (batch, seq, d_model)
            for row, start in enumerate(layout.starts):
                col = self.position - start
                if 0 <= col < layout.seq_len:
                    resid[row, col] += self.vec
                    self.fired += 1
            return resid

        return [("blocks.0.hook_in", fn)]

    def check_fired(self):
        self.checked += 1


def test_interventions_fire_on_every_cached_step(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "_compile_interventions", lambda spec: spec)
    d_model = tiny.model.cfg.d_model
    vec = torch.randn(d_model, generator=torch.Generator().manual_seed(0)) * 30
    prompts = ["The cat sat on", "Paris"]  # different lengths: left padding
    plain = tiny.generate(prompts, max_new_tokens=6)
    # position 6 is a generated token in both rows, so only cached steps touch it
    nudge = PositionNudge(6, vec)
    gens = tiny.generate(prompts, max_new_tokens=6, interventions=nudge)
    assert nudge.checked == 1
    assert [g.token_ids for g in gens] != [g.token_ids for g in plain]
    first = nudge.layouts[0]
    lengths = [len(tiny.encode(p)) for p in prompts]
    assert first.lengths == tuple(lengths) and first.seq_len == max(lengths)
    steps = nudge.layouts[1:]
    assert len(steps) == 5 and all(s.seq_len == 1 for s in steps)
    assert [s.lengths for s in steps] == [tuple(n + t for n in lengths) for t in range(1, 6)]
    # uncached reference: greedy by full forwards, the same intervention via the engine
    for prompt, g in zip(prompts, gens):
        ids = tiny.encode(prompt)
        for _ in range(6):
            logits = tiny.engine.logits([ids], 1, PositionNudge(6, vec))[0][-1]
            ids.append(int(logits.argmax()))
        assert list(g.token_ids) == ids[len(tiny.encode(prompt)):]
    # steps() too, and the prompt pass is hooked as well (position 1 is in the prompt)
    early = PositionNudge(1, vec)
    chosen = [c.id for _, c in tiny.steps("The cat sat on", max_new_tokens=4, interventions=early)]
    assert early.checked == 1 and early.fired == 1
    ids = tiny.encode("The cat sat on")
    for _ in range(4):
        ids.append(int(tiny.engine.logits([ids], 1, PositionNudge(1, vec))[0][-1].argmax()))
    assert chosen == ids[-4:]


_SPECIAL = st.sampled_from([-float("inf"), float("inf"), float("nan"), 0.0, 1e38, -1e38])


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(st.one_of(st.floats(-50, 50, width=32), _SPECIAL), min_size=1,
                              max_size=40), min_size=1, max_size=5).filter(
    lambda r: len({len(x) for x in r}) == 1))
def test_logsumexp_from_the_checked_max_is_torch_logsumexp_bit_for_bit(rows):
    # Rows with -inf (banned), all -inf, +inf and NaN included: the loop's logsumexp reuses
    # the max of the non-finite check and must give exactly torch.logsumexp's numbers.
    x = torch.tensor(rows, dtype=torch.float32)
    got, expected = _logsumexp(x, x.amax(-1)), torch.logsumexp(x, -1)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(0.5), expected.nan_to_num(0.5))


def test_logsumexp_from_the_checked_max_on_a_full_vocabulary():
    x = torch.randn(3, 50257, generator=torch.Generator().manual_seed(0)) * 4
    x[1, ::7] = -float("inf")
    assert torch.equal(_logsumexp(x, x.amax(-1)), torch.logsumexp(x, -1))
