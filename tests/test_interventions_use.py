"""Using interventions on the tiny GPT-2: blocks, clean-up, cache keys, validation errors,
comparisons and patching sweeps (each checked against an independent computation)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from logitprobe.errors import InvalidArgument, PromptError, TokenError  # noqa: E402
from logitprobe.interventions import (BanTokens, InterventionNotFired, MeanAblate, Patch,  # noqa
                                      Scale, SetLogit, Steer, ZeroAblate, dump_specs,
                                      plot_comparison,
                                      plot_patch_sweep)
from logitprobe.interventions.use import open_scope  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog"
BOOST = SetLogit(" coffee", to="max+10")


def hook_count(model) -> int:
    """Hooks registered on the bridge's hook points (aliases resolve to the same points)."""
    points = {id(p): p for p in model.hook_dict.values()}.values()
    return sum(len(p._forward_hooks) + len(p._forward_pre_hooks) + len(p.fwd_hooks)
               for p in points)


@pytest.fixture
def no_leaks(tiny):
    before = hook_count(tiny.model)
    yield
    assert hook_count(tiny.model) == before, "a hook was left registered"
    assert open_scope(tiny) is None


# -- the cache key ---------------------------------------------------------------------
def test_cache_never_mixes_clean_and_intervened(tiny):
    prompt = "The cat sat on the"
    clean = tiny.next_token(prompt)
    hits = tiny.stats.cache_hits
    edited = tiny.next_token(prompt, interventions=[BOOST])
    assert tiny.stats.cache_hits == hits, "an intervened query must not hit the clean entry"
    assert edited.argmax == " coffee" and clean.argmax != " coffee"
    again = tiny.next_token(prompt)
    assert torch.equal(again.logits, clean.logits) and tiny.stats.cache_hits == hits + 1
    assert torch.equal(tiny.next_token(prompt, interventions={"kind": "set_logit",
                                                             "token": " coffee",
                                                             "to": "max+10"}).logits,
                       edited.logits)
    assert tiny.stats.cache_hits == hits + 2, "the same spec, as a dict: the same cache entry"
    other = tiny.next_token(prompt, interventions=[SetLogit(" coffee", to="max+11")])
    assert other.logit(" coffee") == pytest.approx(clean.logits.max().item() + 11, abs=1e-5)


# -- with probe.intervene(...) ---------------------------------------------------------
def test_intervene_scopes_every_query(tiny, no_leaks):
    steer = Steer("blocks.1.hook_resid_pre", coefficient=3, positive="I love it",
                  negative="I hate it")
    both = tiny.next_token(PROMPT, interventions=[steer, BOOST]).logits
    steered = tiny.next_token(PROMPT, interventions=[steer]).logits
    score = tiny.score(PROMPT, " sat on", interventions=[steer])
    baseline = hook_count(tiny.model)
    with tiny.intervene(steer) as outer:
        assert hook_count(tiny.model) == baseline, "hooks live only inside each forward"
        assert tiny.score(PROMPT, " sat on") == score
        with tiny.intervene(BOOST):  # blocks nest: outer specs first
            assert torch.equal(tiny.next_token(PROMPT).logits, both)
            torch.testing.assert_close(tiny.logits("a fresh prompt")[-1],
                                       tiny.next_token("a fresh prompt", interventions=[]).logits)
        assert torch.equal(tiny.next_token(PROMPT).logits, steered)
        assert outer.fired[0] >= 1
    clean = tiny.next_token(PROMPT).logits
    assert not torch.equal(clean, steered)
    torch.testing.assert_close(clean, tiny.logits(PROMPT)[-1])


def test_intervene_cleans_up_after_an_exception(tiny, no_leaks):
    clean = tiny.next_token(PROMPT).logits
    with pytest.raises(RuntimeError, match="boom"):
        with tiny.intervene(BOOST):
            assert tiny.next_token(PROMPT).argmax == " coffee"
            raise RuntimeError("boom")
    assert torch.equal(tiny.next_token(PROMPT).logits, clean)
    with pytest.raises(InvalidArgument, match="intervene\\(\\): give at least one spec"):
        with tiny.intervene():
            pass
    with pytest.raises(InvalidArgument, match="did you mean 'blocks.0.hook_resid_pre'"):
        with tiny.intervene(ZeroAblate("blocks.0.hook_resid_pr")):
            raise AssertionError("an invalid spec must fail before the block runs")


def test_no_hook_remains_after_queries_assertions_and_errors(tiny, no_leaks):
    from logitprobe.assertions import assert_argmax

    specs = [BOOST, ZeroAblate("blocks.0.attn.hook_z", heads=[1]),
             Patch("blocks.0.hook_resid_post", source="The capital of Italy is")]
    tiny.next_token([PROMPT, "a cat"], interventions=specs)
    tiny.score(PROMPT, " sat", interventions=specs)
    tiny.logits(PROMPT, interventions=specs)
    tiny.generate(PROMPT, max_new_tokens=3, interventions=specs)
    tiny.compare(PROMPT, specs)
    with pytest.raises(AssertionError):
        assert_argmax(tiny.next_token(PROMPT, interventions=specs), " dog")
    # an exception in the middle of a forward, while our hooks are attached
    point = tiny.model.hook_dict["blocks.1.hook_resid_pre"]

    def explode(x, hook):
        raise RuntimeError("user hook failed")

    handle = point.add_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="user hook failed"):
            tiny.next_token("a fresh prompt", interventions=specs)
    finally:
        handle.hook.remove()
        point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]


def test_user_hooks_survive_interventions(tiny):
    """TransformerLens #1636: only logitprobe's own hooks are removed."""
    calls = []
    # The first compile of an activation spec on a hook runs one small shape-check forward
    # (read once per probe); do it first, so that only the queries below reach the user hook
    # whatever ran before this test on the shared probe.
    tiny.next_token("warm up", interventions=[ZeroAblate("blocks.0.attn.hook_z", heads=[0])])
    point = tiny.model.hook_dict["blocks.0.hook_resid_post"]
    handle = point.add_hook(lambda x, hook: calls.append(x.shape))
    try:
        tiny.next_token("user hook prompt", interventions=[BOOST])
        with tiny.intervene(ZeroAblate("blocks.0.attn.hook_z", heads=[0])):
            tiny.next_token("user hook prompt two")
        assert len(calls) == 2
        assert len(point._forward_hooks) == 1, "the user's hook must still be registered"
        tiny.next_token("user hook prompt three")
        assert len(calls) == 3
    finally:
        handle.hook.remove()
        point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]


# -- fired counts ----------------------------------------------------------------------
def test_fired_counts_and_check_fired(tiny, tmp_path):
    compiled = tiny._compile_interventions([BOOST, ZeroAblate("blocks.0.hook_resid_post",
                                                              positions=[60])])
    tiny.engine.logits([tiny.encode("fired count prompt")], 1, compiled)
    assert compiled.fired == (1, 0)
    with pytest.raises(InterventionNotFired) as info:
        compiled.check_fired()
    assert "1 of 2 intervention(s) never fired: ZeroAblate(hook='blocks.0.hook_resid_post', " \
           "positions=(60,)" in str(info.value)
    with pytest.raises(InterventionNotFired, match="positions=\\(60,\\)"):
        tiny.generate(PROMPT, max_new_tokens=2,
                      interventions=[ZeroAblate("blocks.0.hook_resid_post", positions=[60])])


# -- validation against the model ------------------------------------------------------
@pytest.mark.parametrize("spec, error, fragment", [
    (ZeroAblate("blocks.0.hook_resid_pr"), InvalidArgument,
     "ZeroAblate(hook='blocks.0.hook_resid_pr'): the model has no hook point "
     "'blocks.0.hook_resid_pr'; did you mean 'blocks.0.hook_resid_pre'"),
    (ZeroAblate("blocks.7.hook_resid_pre"), InvalidArgument,
     "layer 7 is out of range: the model has 2 layers (blocks.0 to blocks.1); the last is "
     "'blocks.1.hook_resid_pre'"),
    (ZeroAblate("blocks.0.attn.hook_z", heads=[4]), InvalidArgument,
     "heads=[4]: head 4 is out of range; 'blocks.0.attn.hook_z' has 4 heads (0 to 3)"),
    (ZeroAblate("blocks.0.hook_resid_pre", heads=[0]), InvalidArgument,
     "'blocks.0.hook_resid_pre' has no head axis (shape [batch, pos, 64])"),
    (Scale("blocks.0.mlp.hook_post", 2.0, neurons=[256]), InvalidArgument,
     "neurons=[256]: neuron 256 is out of range; 'blocks.0.mlp.hook_post' has 256 (0 to 255)"),
    (Steer("blocks.0.hook_resid_pre", vector=[1.0, 2.0]), InvalidArgument,
     "vector has 2 values but the activation at 'blocks.0.hook_resid_pre' has 64 features"),
    (SetLogit(" coffeeshop", to="max+10"), TokenError,
     "SetLogit(token=' coffeeshop'): token=' coffeeshop' is "),
    (BanTokens([" the", "Paris"]), TokenError, "BanTokens(tokens=(' the', 'Paris')): tokens[1]="),
    (ZeroAblate("blocks.0.attn.hook_result"), InvalidArgument,
     "is switched off on this model and never fires; call "
     "probe.model.set_use_attn_result(True) first"),
    (MeanAblate("blocks.0.attn.hook_pattern", reference=["a"]), InvalidArgument,
     "its key axis changes size with the prompt"),
    (ZeroAblate("embed.hook_in"), InvalidArgument, "carries token ids, not activations"),
    (ZeroAblate("blocks.0.hook_resid_post", positions={"token": " jumps over"}), TokenError,
     "positions['token']=' jumps over' is 2 tokens"),
])
def test_validation_errors_name_the_spec(tiny, no_leaks, spec, error, fragment):
    with pytest.raises(error) as info:
        tiny.next_token(PROMPT, interventions=[spec])
    assert fragment in str(info.value)


def test_a_failing_spec_applies_nothing(tiny, no_leaks):
    clean = tiny.next_token(PROMPT).logits
    mean = MeanAblate("blocks.1.hook_resid_pre", reference=["never computed"])
    with pytest.raises(InvalidArgument, match="did you mean"):
        tiny.next_token(PROMPT, interventions=[BOOST, mean, ZeroAblate("blocks.1.hook_mlp_ot")])
    assert ("blocks.1.hook_resid_pre", "never computed") not in \
        tiny._intervention_state.activations, \
        "validate everything before running any reference forward"
    assert torch.equal(tiny.next_token(PROMPT).logits, clean)


def test_yaml_file_as_interventions(tiny, tmp_path):
    path = tmp_path / "coffee.yaml"
    dump_specs([BOOST], path)
    assert "to: max+10" in path.read_text()
    nt = tiny.next_token(PROMPT, interventions=str(path))
    assert torch.equal(nt.logits, tiny.next_token(PROMPT, interventions=[BOOST]).logits)


# -- compare ---------------------------------------------------------------------------
def test_compare_against_manual_numbers(tiny):
    before = tiny.next_token(PROMPT)
    cmp = tiny.compare(PROMPT, [SetLogit(" the", to="max+1")], tokens=[" the", before.argmax.id],
                       k=5)
    after = tiny.next_token(PROMPT, interventions=[SetLogit(" the", to="max+1")])
    assert torch.equal(cmp.before.logits, before.logits)
    assert torch.equal(cmp.after.logits, after.logits)
    kl = torch.nn.functional.kl_div(after.logits.double().log_softmax(-1),
                                    before.logits.double().log_softmax(-1),
                                    log_target=True, reduction="sum")
    assert cmp.kl == pytest.approx(float(kl), rel=1e-9)
    the = cmp.changes[0]
    assert (the.rank_before, the.rank_after) == (before.rank(" the"), 1)
    assert the.prob_after == pytest.approx(after.prob(" the"))
    assert the.logit_after == pytest.approx(before.logits.max().item() + 1, abs=1e-5)
    b, a = cmp.logit_diff
    assert b == pytest.approx(before.logit(" the") - before.argmax.logit, abs=1e-5)
    assert a == pytest.approx(1.0, abs=1e-5)
    assert cmp.argmax_changed and cmp.top_after[0].token == " the"
    text = str(cmp)
    assert "KL(before || after)" in text and "' the'" in text and "logit diff" in text
    assert tiny.compare(PROMPT, BanTokens([before.argmax.id])).kl == float("inf")
    ax = plot_comparison(cmp)
    assert len(ax.containers) == 2 and ax.get_ylabel() == "probability"
    with pytest.raises(InvalidArgument, match="compare\\(\\) needs at least one spec"):
        tiny.compare(PROMPT, [])
    with pytest.raises(InvalidArgument, match="k=0: `k` must be between 1"):
        tiny.compare(PROMPT, [BOOST], k=0)
    with pytest.raises(TokenError, match="tokens\\[0\\]=' coffeeshop' is "):
        tiny.compare(PROMPT, [BOOST], tokens=[" coffeeshop"])
    with pytest.raises(InvalidArgument, match="comparison=str\\(...\\): expected a Comparison"):
        plot_comparison("not a comparison")
    with pytest.raises(InvalidArgument, match="`ax` must be a matplotlib Axes or None"):
        plot_comparison(cmp, ax="axes")


# -- patching sweeps -------------------------------------------------------------------
CLEAN, CORRUPTED = "The capital of France is", "The capital of Italy is"


def _diff(nt, a=" Paris", b=" Rome"):
    return nt.logit(a) - nt.logit(b)


def test_patch_sweep_equals_declarative_patches(tiny):
    sweep = tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris", " Rome"])
    n = len(tiny.encode(CORRUPTED))
    assert sweep.values.shape == (2, n) and sweep.axes == ("layer", "pos")
    assert sweep.clean_value == pytest.approx(_diff(tiny.next_token(CLEAN)), abs=1e-5)
    assert sweep.corrupted_value == pytest.approx(_diff(tiny.next_token(CORRUPTED)), abs=1e-5)
    specs = [[Patch(f"blocks.{layer}.hook_resid_pre", source=CLEAN, positions=[pos])]
             for layer in range(2) for pos in range(n)]
    want = [_diff(nt) for nt in (tiny.next_token(CORRUPTED, interventions=s) for s in specs)]
    torch.testing.assert_close(sweep.values.flatten(), torch.tensor(want), atol=1e-5, rtol=1e-5)
    norm = sweep.normalized()
    torch.testing.assert_close(norm, (sweep.values - sweep.corrupted_value)
                               / (sweep.clean_value - sweep.corrupted_value))
    matrix, rows, cols = sweep.heatmap()
    assert rows == ["L0", "L1"] and cols[-1] == f"{n - 1}: ' is'"
    assert "patching resid_pre" in str(sweep)
    ax = plot_patch_sweep(sweep)
    assert ax.images and ax.get_ylabel() == "layer"


def test_patch_sweep_whole_layers_and_heads(tiny):
    layers = tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris", " Rome"], per_position=False,
                              activation="attn_out")
    heads = tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris", " Rome"], activation="z")
    assert layers.values.shape == (2,) and heads.values.shape == (2, 4)
    nt = tiny.next_token(CORRUPTED, interventions=Patch("blocks.1.hook_attn_out", source=CLEAN))
    assert layers.values[1].item() == pytest.approx(_diff(nt), abs=1e-5)
    nt = tiny.next_token(CORRUPTED, interventions=Patch("blocks.0.attn.hook_z", source=CLEAN,
                                                        heads=[2]))
    assert heads.values[0, 2].item() == pytest.approx(_diff(nt), abs=1e-5)
    assert heads.heatmap()[2] == ["H0", "H1", "H2", "H3"]


def test_patch_sweep_errors(tiny):
    with pytest.raises(PromptError, match="prompts must have the same number of tokens"):
        tiny.patch_sweep(CLEAN, "The capital city of Italy is", [" Paris", " Rome"])
    with pytest.raises(InvalidArgument, match="activation='resid_post': did you mean 'resid_pre'"):
        tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris", " Rome"], activation="resid_post")
    with pytest.raises(InvalidArgument, match="give two tokens"):
        tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris"])
    with pytest.raises(TokenError, match="tokens\\[1\\]"):
        tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris", " Romee"])
    with pytest.raises(InvalidArgument, match="per_position='yes': must be True or False"):
        tiny.patch_sweep(CLEAN, CORRUPTED, [" Paris", " Rome"], per_position="yes")
    with pytest.raises(InvalidArgument, match="metric=3: `metric` must be a callable"):
        tiny.patch_sweep(CLEAN, CORRUPTED, metric=3)
    with pytest.raises(InvalidArgument, match="sweep=Comparison\\(...\\): expected a PatchSweep"):
        plot_patch_sweep(tiny.compare(PROMPT, [BOOST]))
    same = tiny.patch_sweep(CLEAN, CLEAN, metric=lambda logits: logits.max(), per_position=False)
    with pytest.raises(InvalidArgument, match="cannot be normalized"):
        same.normalized()
