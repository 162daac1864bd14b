"""Integration: the embedded pretrained SmolLM2-135M, each claim checked against Hugging Face."""

import re

import pytest
import torch

from logitprobe.results import NextToken


def hf_next(hf, text):
    model, tok = hf
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0, -1]


def test_coffee_is_the_argmax(smol, smol_hf):
    ref = hf_next(smol_hf, "I like oat milk in my")
    nt = smol.next_token("I like oat milk in my")
    assert smol_hf[1].decode(int(ref.argmax())) == " coffee"  # the tutorial's finding, from HF
    assert nt.argmax == " coffee" and nt.argmax.id == int(ref.argmax())
    assert nt.rank(" coffee") == 1
    torch.testing.assert_close(nt.logits, ref, atol=1e-3, rtol=1e-4)


def test_paris_ranks_first(smol, smol_hf):
    ref = hf_next(smol_hf, "The capital of France is")
    nt = smol.next_token("The capital of France is")
    paris = smol.token_id(" Paris")
    assert int(ref.argmax()) == paris
    assert nt.rank(" Paris") == 1
    assert " Paris" in nt.top(5)
    assert nt.prob(" Paris") == pytest.approx(float(torch.softmax(ref, -1)[paris]), rel=1e-3)


def test_top10_matches_hf(smol, smol_hf):
    ref = hf_next(smol_hf, "I like oat milk in my")
    assert smol.next_token("I like oat milk in my").top(10).ids == torch.topk(ref, 10).indices.tolist()


def test_rank_is_transformerlens_rank_plus_one(smol, capsys):
    """TransformerLens's test_prompt prints 0-based ranks; logitprobe's are 1-based."""
    from transformer_lens.utilities import test_prompt as tl_test_prompt

    prompt = "I like oat milk in my"
    for answer in (" coffee", " tea", " car"):
        tl_test_prompt(prompt, answer, smol.model, prepend_space_to_answer=False,
                       prepend_bos=False, print_details=False)
        printed = capsys.readouterr().out
        tl_rank = int(re.search(r"Ranks of the answer tokens:.*?, (\d+)\)", printed).group(1))
        assert smol.next_token(prompt).rank(answer) == tl_rank + 1


def test_score_matches_hf(smol, smol_hf):
    model, tok = smol_hf
    prompt, cont = "The capital of France is", " Paris."
    ids = tok(prompt).input_ids + tok(cont, add_special_tokens=False).input_ids
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    n = len(tok(prompt).input_ids)
    expected = sum(float(lp[n - 1 + j, t]) for j, t in enumerate(ids[n:]))
    assert smol.score(prompt, cont).logprob == pytest.approx(expected, abs=1e-3)


def test_bos_policy_is_hugging_face_by_default(smol, smol_hf):
    _, tok = smol_hf
    assert smol.encode("I like oat milk in my") == tok("I like oat milk in my").input_ids
    assert isinstance(smol.next_token("Hi"), NextToken)


def test_prepend_bos_changes_the_rank_as_documented(smol_hf):
    """docs/concepts.md: with its BOS, SmolLM2 no longer ranks ' coffee' first."""
    import logitprobe

    model, tok = smol_hf
    with_bos = logitprobe.load("smollm2", device="cpu", prepend_bos=True)
    ids = [tok.bos_token_id] + tok("I like oat milk in my").input_ids
    assert with_bos.encode("I like oat milk in my") == ids
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0, -1]
    coffee = tok(" coffee", add_special_tokens=False).input_ids[0]
    expected_rank = int((ref > ref[coffee]).sum()) + 1
    assert with_bos.next_token("I like oat milk in my").rank(" coffee") == expected_rank > 1
