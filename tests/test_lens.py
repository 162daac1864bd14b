"""Logit lens and direct logit attribution, checked against plain Hugging Face / torch.

The reference side never touches TransformerLens: hidden states and sublayer
outputs come from forward hooks on a separate Hugging Face model, and the final
norm is recomputed by hand (LayerNorm for GPT-2, RMSNorm for SmolLM2).
"""

from __future__ import annotations

import pytest
import torch

from logitprobe import (Attribution, InvalidArgument, LensResult, LogitProbeError, Probe,
                        PromptError, TokenError)

from conftest import hf_reference

PROMPT = "The capital of France is"


# -- a tiny GPT-2 whose final LayerNorm is not the identity ------------------------------
@pytest.fixture(scope="module")
def skewed(tiny_gpt2_dir):
    """(Probe, HF reference) of the tiny GPT-2 with a random final-norm weight and bias.

    The random tiny model's ln_f is weight=1, bias=0, which would hide a missing
    gamma or beta; these are not.
    """
    hf, tok = hf_reference(tiny_gpt2_dir)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ln_f = hf.transformer.ln_f
        ln_f.weight.copy_(1 + 0.5 * torch.randn(ln_f.weight.shape, generator=gen))
        ln_f.bias.copy_(2.0 * torch.randn(ln_f.bias.shape, generator=gen))
    return Probe(hf, tok, name="skewed-tiny"), (hf, tok)


@pytest.fixture(scope="module")
def tiny_tokens(tiny):
    """Two single tokens of the tiny vocabulary."""
    return " the", " of"


class Case:
    """One model's results, computed once per module: lens, attributions, references."""

    def __init__(self, probe, hf, token, versus):
        self.probe, self.hf, self.token, self.versus = probe, hf, token, versus
        self.lens = probe.lens(PROMPT, tokens=[token, versus], k=3)
        self.next = probe.next_token(PROMPT)
        self.att = probe.attribute(PROMPT, token)
        self.att_versus = probe.attribute(PROMPT, versus)
        self.diff = probe.attribute(PROMPT, token, versus=versus)
        self.ref_lens = _hf_lens(hf, PROMPT)
        self.ref_attn, self.ref_mlp, self.ref_logits, self.read = _reference_dla(hf, PROMPT, token)


@pytest.fixture(scope="module", params=["skewed", "smol"])
def case(request, skewed):
    if request.param == "skewed":
        return Case(skewed[0], skewed[1], " the", " of")
    return request.getfixturevalue("smol_case")


@pytest.fixture(scope="module")
def smol_case(smol, smol_hf):
    return Case(smol, smol_hf, " Paris", " London")


def _ids(hf, text):
    return hf[1](text, return_tensors="pt").input_ids


def _final_norm(hf_model):
    base = getattr(hf_model, "transformer", None) or hf_model.model
    return getattr(base, "ln_f", None) or base.norm


def _hf_lens(hf, text):
    """Reference lens: lm_head(final_norm(hidden state after each block)), [L+1, vocab]."""
    model, _ = hf
    with torch.no_grad():
        out = model(_ids(hf, text), output_hidden_states=True)
        hs = out.hidden_states  # the last one already has the final norm applied
        rows = [model.lm_head(_final_norm(model)(h[0, -1])) for h in hs[:-1]]
        rows.append(out.logits[0, -1])
    return torch.stack(rows)


def _hf_parts(hf, text):
    """Reference sublayer outputs at the last position and the final norm's input."""
    model, _ = hf
    base = getattr(model, "transformer", None) or model.model
    blocks = getattr(base, "h", None) or base.layers
    got: dict = {}
    handles = []

    def keep(name):
        def hook(module, args, out):
            got[name] = (out[0] if isinstance(out, tuple) else out)[0, -1]
        return hook

    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None) or block.self_attn
        handles += [attn.register_forward_hook(keep(("attn", i))),
                    block.mlp.register_forward_hook(keep(("mlp", i)))]
    norm = _final_norm(model)
    handles.append(norm.register_forward_hook(
        lambda m, args, out: got.__setitem__("resid", args[0][0, -1])))
    try:
        with torch.no_grad():
            logits = model(_ids(hf, text)).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return got, logits, len(blocks)


def _reference_dla(hf, text, token, versus=None):
    """Plain-torch DLA: each sublayer output through the final norm frozen at its scale."""
    model, _ = hf
    got, logits, n = _hf_parts(hf, text)
    norm = _final_norm(model)
    resid = got["resid"]
    tid = hf[1](token, add_special_tokens=False).input_ids[0]
    w = model.lm_head.weight  # [vocab, d_model]
    direction = w[tid].clone()
    if versus is not None:
        direction = direction - w[hf[1](versus, add_special_tokens=False).input_ids[0]]
    if isinstance(norm, torch.nn.LayerNorm):
        scale = (resid.var(unbiased=False) + norm.eps).sqrt()
        linear = lambda x: (x - x.mean()) / scale  # noqa: E731
    else:  # RMSNorm
        eps = getattr(norm, "variance_epsilon", None) or norm.eps
        scale = (resid.pow(2).mean() + eps).sqrt()
        linear = lambda x: x / scale  # noqa: E731
    direction = direction * norm.weight
    attn = torch.stack([linear(got[("attn", i)]) @ direction for i in range(n)])
    mlp = torch.stack([linear(got[("mlp", i)]) @ direction for i in range(n)])
    return attn, mlp, logits, (lambda x: float(linear(x) @ direction))


# -- logit lens ------------------------------------------------------------------------
def test_lens_final_entry_is_the_models_output(case):
    lens = case.lens
    assert isinstance(lens, LensResult) and len(lens) == case.probe.n_layers + 1
    torch.testing.assert_close(lens.final.logits, case.next.logits, atol=1e-4, rtol=1e-5)


def test_every_layer_equals_hf_hidden_states(case):
    lens, n = case.lens, case.probe.n_layers
    assert lens.logits.shape == case.ref_lens.shape
    torch.testing.assert_close(lens.logits, case.ref_lens, atol=2e-3, rtol=1e-4)
    assert lens.labels[0] == "embed" and lens.labels[-1] == f"block {n - 1}"
    assert lens.depths == [float(i) for i in range(n + 1)]


def test_lens_tracks_tokens_across_layers(case):
    lens, token, versus = case.lens, case.token, case.versus
    ranks = lens.rank(token)
    assert lens.ranks[:, 0].tolist() == ranks and lens.ranks[:, 1].tolist() == lens.rank(versus)
    assert lens.tracked == [token, versus]
    for i in (0, 1, -1):
        nt = lens.at(i)
        assert nt.rank(token) == ranks[i]
        assert nt.prob(token) == pytest.approx(lens.prob(token)[i], rel=1e-5)
        assert nt.logit(token) == pytest.approx(lens.logit(token)[i], rel=1e-6)
        assert nt.logprob(token) == pytest.approx(lens.logprob(token)[i], rel=1e-5)
    tops = lens.top()
    assert len(tops) == len(lens) and all(len(t) == 3 for t in tops)
    assert tops[-1].ids == case.next.top(3).ids and len(lens.top(7)[0]) == 7
    for i in (0, 1, -1):  # the batched top-k agrees with NextToken's, ranks and ties included
        assert tops[i] == lens.at(i).top(3)
    with pytest.raises(InvalidArgument, match="k=0: `k` must be between 1"):
        lens.top(0)
    torch.testing.assert_close(lens.probs.sum(-1), torch.ones(len(lens)), atol=1e-4, rtol=0)


def test_paris_rises_through_the_layers(smol_case):
    ranks = smol_case.lens.rank(" Paris")
    assert ranks[-1] == 1 and ranks[0] > 100 and min(ranks[:20]) > 100  # only late layers know


def test_lens_table_and_repr(smol_case):
    lens = smol_case.lens
    text = str(lens)
    assert text.splitlines()[0] == f"Logit lens after {PROMPT!r} (position 4):"
    header = text.splitlines()[1]
    assert "' Paris'" in header and "' London'" in header and "top-3" in header
    last = text.splitlines()[-1]
    assert last.split("|")[0].strip() == "block 29" and "#1 p=" in last
    assert last.split("|")[1].strip().startswith("' Paris' ")
    assert len(text.splitlines()) == 3 + len(lens)
    assert repr(lens) == (f"LensResult(prompt={PROMPT!r}, entries=31, "
                          "tracked=[' Paris', ' London'], final=' Paris')")


def test_batched_lens_equals_single(tiny, tiny_tokens):
    prompts = [PROMPT, "Hi", "I like oat milk in my coffee and", "Logits are"]
    batch = tiny.lens(prompts, tokens=list(tiny_tokens))
    assert isinstance(batch, list) and len(batch) == len(prompts)
    for prompt, got in zip(prompts, batch):
        alone = tiny.lens(prompt, tokens=list(tiny_tokens))
        assert got.prompt == prompt and got.token_ids == tuple(tiny.encode(prompt))
        torch.testing.assert_close(got.logits, alone.logits, atol=1e-4, rtol=1e-4)


def test_lens_batches_into_few_forwards(tiny):
    before = tiny.stats.snapshot()
    tiny.lens(["a b c", "d e f", "g h i j", "k l"])
    done = tiny.stats - before
    assert done.forwards == 1 and done.sequences == 4


def test_lens_at_an_earlier_position(tiny):
    lens = tiny.lens(PROMPT, position=2)
    assert lens.position == 2 and lens.token_ids == tuple(tiny.encode(PROMPT))
    torch.testing.assert_close(lens.final.logits, tiny.next_token(PROMPT, position=2).logits,
                               atol=1e-4, rtol=1e-5)


def test_lens_with_mid_layers(skewed):
    probe, hf = skewed
    lens = probe.lens(PROMPT, incl_mid=True)
    n = probe.n_layers
    assert len(lens) == 2 * n + 1
    assert lens.labels[:3] == ["embed", "block 0 attn", "block 0"]
    assert lens.depths[:3] == [0.0, 0.5, 1.0]
    ref = _hf_lens(hf, PROMPT)
    torch.testing.assert_close(lens.logits[::2], ref, atol=2e-3, rtol=1e-4)


class ZeroMLP:
    """An engine intervention (key + hooks): zero one layer's MLP output."""

    key = ("zero-mlp", 1)

    def hooks(self, layout):
        return [("blocks.1.hook_mlp_out", lambda t, hook: torch.zeros_like(t))]


def test_lens_under_an_engine_intervention(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "_compile_interventions", lambda spec: spec)
    ids = tiny.encode(PROMPT)
    want = tiny.engine.logits([ids], 1, ZeroMLP())[0][0]
    plain = tiny.next_token(PROMPT).logits
    assert (want - plain).abs().max() > 1e-3  # the intervention matters
    lens = tiny.lens(PROMPT, interventions=ZeroMLP())
    torch.testing.assert_close(lens.final.logits, want, atol=1e-4, rtol=1e-5)
    att = tiny.attribute(PROMPT, " the", interventions=ZeroMLP())
    assert att.logit == pytest.approx(float(want[tiny.token_id(" the")]), abs=1e-5)
    assert abs(att.error) < 1e-4 and att.mlp[1] == 0.0  # the zeroed part contributes nothing
    # hooks are gone afterwards
    torch.testing.assert_close(tiny.lens(PROMPT).final.logits, plain, atol=1e-4, rtol=1e-5)


class EditLogits:
    key = ("edit-logits",)

    def hooks(self, layout):
        return [("unembed.hook_out", lambda t, hook: t + 1.0)]


def test_logit_edits_are_refused(tiny, monkeypatch):
    """The lens and DLA read the residual stream: an edit after it would be silently lost."""
    monkeypatch.setattr(tiny, "_compile_interventions", lambda spec: spec)
    for call in (lambda: tiny.lens(PROMPT, interventions=EditLogits()),
                 lambda: tiny.attribute(PROMPT, " the", interventions=EditLogits())):
        with pytest.raises(InvalidArgument, match=r"\['unembed.hook_out'\] edit the final norm "
                                                  r"or the logits"):
            call()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(tokens=[" London is"]), TokenError, "tokens[0]=' London is' is"),
    (dict(tokens=[3.5]), TokenError, "tokens[0]=3.5"),
    (dict(tokens={" the"}), InvalidArgument, "`tokens` must be a list of tokens"),
    (dict(k=0), InvalidArgument, "k=0: `k` must be between 1"),
    (dict(position=9), InvalidArgument, "position=9: the prompt"),
    (dict(position="last"), InvalidArgument, "position='last': `position` must be an int"),
    (dict(incl_mid="yes"), InvalidArgument, "incl_mid='yes'"),
])
def test_lens_bad_arguments(tiny, kwargs, error, message):
    with pytest.raises(error) as info:
        tiny.lens(PROMPT, **kwargs)
    assert message in str(info.value)


def test_lens_bad_prompts_and_entries(tiny):
    with pytest.raises(PromptError, match="non-empty list"):
        tiny.lens([])
    with pytest.raises(PromptError, match="empty"):
        tiny.lens("")
    lens = tiny.lens(PROMPT)
    with pytest.raises(InvalidArgument, match=r"entry=3: `entry` must be an int index into "
                                              r"labels, in \[-3, 2\]"):
        lens.at(3)
    with pytest.raises(InvalidArgument, match="entry='block 1'"):
        lens.at("block 1")


# -- direct logit attribution ------------------------------------------------------------
def test_attribution_sums_to_the_logit_and_matches_plain_torch(case):
    att, token, versus, nt = case.att, case.token, case.versus, case.next
    assert isinstance(att, Attribution)
    assert att.logit == pytest.approx(nt.logit(token), abs=1e-4)
    assert abs(att.error) < 1e-3 and att.total == pytest.approx(att.logit, abs=1e-3)
    torch.testing.assert_close(att.attn, case.ref_attn.float(), atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(att.mlp, case.ref_mlp.float(), atol=2e-4, rtol=1e-3)
    tid = case.hf[1](token, add_special_tokens=False).input_ids[0]
    assert att.logit == pytest.approx(float(case.ref_logits[tid]), abs=2e-3)
    # logit difference: the same decomposition along the difference of directions
    diff, other = case.diff, case.att_versus
    torch.testing.assert_close(diff.values, att.values - other.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(diff.heads, att.heads - other.heads, atol=1e-4, rtol=1e-4)
    assert diff.logit == pytest.approx(nt.logit(token) - nt.logit(versus), abs=1e-4)
    assert abs(diff.error) < 1e-3
    assert diff.bias == pytest.approx(att.bias - other.bias, abs=1e-4)


def test_skewed_norm_bias_is_accounted_for(skewed):
    probe, (hf, tok) = skewed
    att = probe.attribute(PROMPT, " the")
    tid = tok(" the", add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        want = float(hf.transformer.ln_f.bias @ hf.lm_head.weight[tid])
    assert att.bias == pytest.approx(want, abs=1e-5)
    assert abs(att.bias) > 1e-2  # would be lost if the norm's bias were ignored


def test_heads_sum_to_their_layer(case):
    """Attention output = its heads + the output bias (GPT-2's c_proj.bias; Llama has none)."""
    att, probe = case.att, case.probe
    assert att.heads.shape == (probe.n_layers, probe.model.cfg.n_heads)
    base = getattr(case.hf[0], "transformer", None)
    with torch.no_grad():
        if base is not None:
            bias = torch.tensor([case.read(block.attn.c_proj.bias) for block in base.h])
        else:
            bias = torch.zeros(probe.n_layers)
    torch.testing.assert_close(att.heads.sum(1) + bias, case.ref_attn.float(), atol=2e-4,
                               rtol=1e-3)


def test_one_head_matches_plain_torch(smol_case):
    """Head h of layer 23 = its slice of o_proj's input times its slice of o_proj's weight."""
    model, tok = smol_case.hf
    layer, z = 23, {}
    o_proj = model.model.layers[layer].self_attn.o_proj
    handle = o_proj.register_forward_pre_hook(lambda m, args: z.__setitem__("z", args[0][0, -1]))
    try:
        got, _, _ = _hf_parts(smol_case.hf, PROMPT)
    finally:
        handle.remove()
    d_head = model.config.hidden_size // model.config.num_attention_heads
    norm = model.model.norm
    scale = (got["resid"].pow(2).mean() + norm.variance_epsilon).sqrt()
    direction = model.lm_head.weight[tok(" Paris", add_special_tokens=False).input_ids[0]]
    with torch.no_grad():
        for h in (0, 4):
            w = o_proj.weight[:, h * d_head:(h + 1) * d_head]
            part = z["z"][h * d_head:(h + 1) * d_head] @ w.T
            want = float((part / scale * norm.weight) @ direction)
            assert smol_case.att.heads[layer, h].item() == pytest.approx(want, abs=2e-4, rel=1e-3)


def test_batched_attribution_equals_single(tiny, tiny_tokens):
    prompts = [PROMPT, "Hi there", "I like oat milk in my"]
    got = tiny.attribute(prompts, tiny_tokens[0], versus=[tiny_tokens[1]] * 3)
    assert isinstance(got, list) and len(got) == 3
    for prompt, att in zip(prompts, got):
        alone = tiny.attribute(prompt, tiny_tokens[0], versus=tiny_tokens[1])
        torch.testing.assert_close(att.values, alone.values, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(att.heads, alone.heads, atol=1e-4, rtol=1e-4)
        assert abs(att.error) < 1e-4


def test_attribution_at_an_earlier_position(tiny, tiny_tokens):
    att = tiny.attribute(PROMPT, tiny_tokens[0], position=1)
    nt = tiny.next_token(PROMPT, position=1)
    assert att.position == 1 and att.logit == pytest.approx(nt.logit(tiny_tokens[0]), abs=1e-5)
    assert abs(att.error) < 1e-4


def test_attribution_table_top_and_repr(smol_case):
    att = smol_case.diff
    assert att.labels[:3] == ["embed", "L0 attn", "L0 mlp"] and len(att.labels) == 61
    assert att.quantity == "logit(' Paris') - logit(' London')"
    top = att.top(3)
    assert [abs(v) for _, v in top] == sorted((abs(v) for _, v in top), reverse=True)
    assert top[0][1] == pytest.approx(float(att.values.abs().max()), rel=1e-6)
    best_head = att.top(1, heads=True)[0]
    layer, head = divmod(int(att.heads.abs().argmax()), att.heads.shape[1])
    assert best_head[0] == f"L{layer}H{head}"
    lines = str(att).splitlines()
    assert lines[0] == (f"Direct logit attribution of logit(' Paris') - logit(' London') after "
                        f"{PROMPT!r} (position 4):")
    assert [ln.split("|")[0].strip() for ln in lines[2:]][-3:] == ["bias", "sum", "model"]
    assert f"{att.logit:+.4f}" in lines[-1] and len(lines) == 2 + 61 + 3
    assert repr(att).startswith("Attribution(logit(' Paris') - logit(' London'), prompt=")


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((" the",), dict(versus=" the"), InvalidArgument, "`versus` is the same token"),
    ((" London is",), {}, TokenError, "token=' London is' is"),
    ((" the",), dict(versus=7.0), TokenError, "versus=7.0"),
    ((" the",), dict(position=-99), InvalidArgument, "position=-99"),
])
def test_attribution_bad_arguments(tiny, args, kwargs, error, message):
    with pytest.raises(error) as info:
        tiny.attribute(PROMPT, *args, **kwargs)
    assert message in str(info.value)


def test_attribution_bad_batches_and_top(tiny):
    with pytest.raises(InvalidArgument, match="got 1 tokens for 2 prompts"):
        tiny.attribute(["a", "b"], [" the"])
    with pytest.raises(InvalidArgument, match="n=0: `n` must be a positive int"):
        tiny.attribute(PROMPT, " the").top(0)


def test_unsupported_final_norm_is_refused(tiny, monkeypatch):
    import logitprobe.lens as lens_module

    real = lens_module._final_norm_affine
    monkeypatch.setattr(lens_module, "_final_norm_affine",
                        lambda model: (real(model)[0] * 2, real(model)[1]))
    with pytest.raises(LogitProbeError, match="final norm is not `normalized"):
        tiny.attribute(PROMPT, " the")
