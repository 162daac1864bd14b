"""Token handling and its errors, on the tiny GPT-2 with a real BPE tokenizer."""

import pytest

import logitprobe
from logitprobe import InvalidArgument, PromptError, TokenError


def test_token_id_matches_hf_tokenizer(tiny, tiny_hf):
    _, tok = tiny_hf
    ids = tok(" coffee", add_special_tokens=False).input_ids
    assert len(ids) == 1
    assert tiny.token_id(" coffee") == ids[0]
    assert tiny.token_id(ids[0]) == ids[0]


def test_tokenize_and_decode_follow_hf(tiny, tiny_hf):
    _, tok = tiny_hf
    text = "I like oat milk in my"
    ids = tok(text).input_ids
    assert tiny.encode(text) == ids  # GPT-2: no BOS, as Hugging Face tokenizes
    assert tiny.tokenize(text) == [tok.decode([i]) for i in ids]
    assert tiny.decode(ids) == text


def test_multi_token_string_lists_pieces_and_points_to_score(tiny):
    pieces = tiny.tokenize(" oatmilk coffee")
    assert len(pieces) > 1
    with pytest.raises(TokenError) as info:
        tiny.token_id(" oatmilk coffee")
    msg = str(info.value)
    assert f"is {len(pieces)} tokens: {pieces!r}" in msg
    assert "probe.score" in msg


def test_missing_leading_space_gets_a_hint(tiny):
    assert len(tiny.tokenize("coffee")) > 1  # unspaced form is several tokens here
    with pytest.raises(TokenError, match=r"did you mean ' coffee' \(with a leading space\)"):
        tiny.token_id("coffee")


@pytest.mark.parametrize("bad, pattern", [
    (-1, r"token=-1: token ids must be between 0 and 999"),
    (1000, r"token=1000: token ids must be between 0 and 999"),
    ("", r"token='': the empty string is not a token"),
    (3.5, r"token=3.5: `token` must be a token string .* not float"),
    (None, r"token=None: .* not NoneType"),
    (True, r"token=True: `token` must be a token string or an int id"),
])
def test_bad_tokens(tiny, bad, pattern):
    with pytest.raises(TokenError, match=pattern):
        tiny.token_id(bad)


def test_token_error_is_a_value_error(tiny):
    with pytest.raises(ValueError):
        tiny.token_id("")
    assert issubclass(TokenError, logitprobe.LogitProbeError)


def test_prompt_errors(tiny):
    with pytest.raises(PromptError, match=r"prompt='': the prompt is empty \(0 tokens\).*prepend_bos=True"):
        tiny.next_token("")
    with pytest.raises(PromptError, match=r"prompt=42: `prompt` must be a str or a non-empty list of str, not int"):
        tiny.next_token(42)
    with pytest.raises(PromptError, match=r"prompt=\[\]: `prompt` must be a str or a non-empty list of str, not an empty list"):
        tiny.next_token([])
    with pytest.raises(PromptError, match=r"prompt\[1\]=7: every prompt must be a str"):
        tiny.next_token(["a", 7])


def test_prompt_longer_than_context(tiny):
    long = " the" * (tiny.n_ctx + 5)
    with pytest.raises(PromptError, match=rf"is {tiny.n_ctx + 5} tokens, longer than the model's "
                                          rf"context of {tiny.n_ctx}; shorten it"):
        tiny.next_token(long)


@pytest.mark.parametrize("k", [0, -3, 1001, "5", 2.0])
def test_k_out_of_range(tiny, k):
    nt = tiny.next_token("The cat sat")
    with pytest.raises(InvalidArgument, match=rf"k={k!r}: `k` must be"):
        nt.top(k)


def test_position_out_of_range(tiny):
    with pytest.raises(InvalidArgument, match=r"position=7: the prompt 'The cat sat' has 3 tokens"):
        tiny.next_token("The cat sat", position=7)


def test_prepend_bos_changes_tokens_and_predictions(tiny_gpt2_dir, tiny):
    with_bos = logitprobe.load(str(tiny_gpt2_dir), device="cpu", prepend_bos=True)
    bos = with_bos.tokenizer.bos_token_id
    text = "The cat sat"
    assert with_bos.encode(text) == [bos] + tiny.encode(text)
    a, b = tiny.next_token(text), with_bos.next_token(text)
    assert not (a.logits == b.logits).all()  # BOS changes the context, hence the logits


def test_prepend_bos_must_be_bool_or_none(tiny_gpt2_dir):
    with pytest.raises(InvalidArgument, match=r"prepend_bos='yes'"):
        logitprobe.load(str(tiny_gpt2_dir), device="cpu", prepend_bos="yes")
