"""Interventions on the embedded pretrained SmolLM2-135M, checked against Hugging Face and
TransformerLens ``run_with_hooks``."""

from __future__ import annotations

import torch

from logitprobe.interventions import SetLogit, Steer, ZeroAblate

PARIS = "The capital of France is"


def test_tutorial_coffee_hook_on_smollm2(smol, smol_hf):
    hf, tok = smol_hf
    clean = smol.next_token(PARIS)
    coffee = smol.token_id(" coffee")
    assert clean.argmax == " Paris"
    nt = smol.next_token(PARIS, interventions=[SetLogit(" coffee", to="max+10",
                                                        positions="last")])
    assert nt.argmax == " coffee"
    assert torch.equal(nt.logits[coffee], clean.logits.max() + 10)  # exactly max + 10

    def hook(module, inputs, out):  # the tutorial's hand-written hook, on the HF model
        out = out.clone()
        out[0, -1, coffee] = out[0, -1].max() + 10
        return out

    handle = hf.lm_head.register_forward_hook(hook)
    try:
        with torch.no_grad():
            ref = hf(tok(PARIS, return_tensors="pt").input_ids).logits[0, -1]
    finally:
        handle.remove()
    assert int(ref.argmax()) == coffee
    torch.testing.assert_close(nt.logits, ref, atol=1e-3, rtol=1e-4)


def test_steering_and_head_ablation_match_run_with_hooks(smol):
    hook = "blocks.12.hook_resid_pre"
    ids = torch.tensor([smol.encode(PARIS)])
    with torch.no_grad():
        _, pos = smol.model.run_with_cache(torch.tensor([smol.encode("Rome")]), names_filter=hook,
                                           logits_to_keep=1)
        _, neg = smol.model.run_with_cache(torch.tensor([smol.encode("Paris")]), names_filter=hook,
                                           logits_to_keep=1)
        vec = pos[hook][0, -1] - neg[hook][0, -1]

        def steer(x, hook):
            return x + 8.0 * vec

        def ablate(z, hook):
            z = z.clone()
            z[:, :, [0, 4]] = 0
            return z

        want = smol.model.run_with_hooks(ids, fwd_hooks=[(hook, steer),
                                                         ("blocks.20.attn.hook_z", ablate)],
                                         logits_to_keep=1)[0, -1]
    specs = [Steer(hook, coefficient=8, positive="Rome", negative="Paris"),
             ZeroAblate("blocks.20.attn.hook_z", heads=[0, 4])]
    got = smol.next_token(PARIS, interventions=specs)
    torch.testing.assert_close(got.logits, want, atol=1e-4, rtol=1e-4)
    assert (got.logits - smol.next_token(PARIS).logits).abs().max() > 0.5


def test_intervened_cached_generation_equals_naive_loop(smol):
    specs = [Steer("blocks.12.hook_resid_pre", coefficient=8, positive="Rome", negative="Paris")]
    gen = smol.generate(PARIS, max_new_tokens=4, stop_at_eos=False, interventions=specs)
    compiled = smol._compile_interventions(specs)
    ids = smol.encode(PARIS)
    for _ in range(4):
        ids.append(int(smol.engine.logits([ids], 1, compiled)[0][-1].argmax()))
    assert list(gen.token_ids) == ids[len(smol.encode(PARIS)):]
