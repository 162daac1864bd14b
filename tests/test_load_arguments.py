"""load() and Probe(): every bad argument gets a named error before any loading work,
and loading prints nothing while leaving the user's Hugging Face settings as they were."""

import inspect
import logging
import sys

import pytest
import torch

import logitprobe
from logitprobe import InvalidArgument, LogitProbeError, Probe, cli_commands, loading


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if load() gets as far as loading anything."""
    def boot(*args, **kwargs):
        raise AssertionError("load() started loading before rejecting its arguments")

    monkeypatch.setattr(loading, "_boot", boot)
    monkeypatch.setattr(loading, "_LOADED", {})


@pytest.mark.parametrize("model, words", [
    (None, "model=None: `model` must be a model name"),
    (5, "model=5: `model` must be a model name ('smollm2', 'gpt2'), a local model directory or "
        "a .gguf file, not int; wrap a model object you already hold with logitprobe.Probe"),
    ("", "model='': `model` is empty"),
    (["gpt2"], "not list"),
])
def test_model_must_be_a_name_or_a_path(no_loading, model, words):
    with pytest.raises(InvalidArgument) as info:
        logitprobe.load(model)
    assert words in str(info.value)


@pytest.mark.parametrize("device, words", [
    ("banana", "device='banana': not a device torch knows; use 'cpu', 'cuda'"),
    (True, "device=True: not a device torch knows"),
    (1.5, "device=1.5: not a device torch knows"),
])
def test_device_must_be_one_torch_knows(no_loading, tiny_gpt2_dir, device, words):
    with pytest.raises(InvalidArgument) as info:
        logitprobe.load(str(tiny_gpt2_dir), device=device)
    assert words in str(info.value)


def test_cuda_without_a_gpu_fails_before_loading(no_loading, tiny_gpt2_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(InvalidArgument, match=r"device=.*cuda.*: no CUDA GPU is available "
                                                  r"\(.*\); use device='cpu' or leave it out"):
            logitprobe.load(str(tiny_gpt2_dir), device=device)


def test_a_gpu_index_this_machine_lacks(no_loading, tiny_gpt2_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidArgument, match=r"device='cuda:3': this machine has 1 CUDA GPU\(s\), "
                                              r"numbered 0 to 0"):
        logitprobe.load(str(tiny_gpt2_dir), device="cuda:3")


def test_a_long_value_is_shortened(no_loading):
    with pytest.raises(InvalidArgument) as info:
        logitprobe.load("x", device="y" * 10_000)
    assert len(str(info.value)) < 300 and "…" in str(info.value)


@pytest.mark.parametrize("dtype", ["banana", torch.int64, 3])
def test_dtype_must_be_a_floating_torch_dtype(no_loading, tiny_gpt2_dir, dtype):
    with pytest.raises(InvalidArgument, match=r"dtype=.*: `dtype` must be a floating-point torch "
                                              r"dtype such as torch.float32"):
        logitprobe.load(str(tiny_gpt2_dir), dtype=dtype)


def test_dtype_by_name_is_the_same_load(tiny_gpt2_dir, tiny):
    assert logitprobe.load(str(tiny_gpt2_dir), device="cpu", dtype="float32") is tiny
    assert logitprobe.load(str(tiny_gpt2_dir), device=torch.device("cpu")) is tiny


def test_unknown_keyword_is_named_with_a_suggestion(no_loading, tiny_gpt2_dir):
    with pytest.raises(InvalidArgument, match=r"devcie='cpu': load\(\) has no argument 'devcie'; "
                                              r"did you mean device=\?"):
        logitprobe.load(str(tiny_gpt2_dir), devcie="cpu")
    with pytest.raises(InvalidArgument, match=r"colour=1: load\(\) has no argument 'colour'; it takes "
                                              r"model, device, dtype, prepend_bos, progress and "
                                              r"TransformerBridge.boot_transformers' options"):
        logitprobe.load(str(tiny_gpt2_dir), colour=1)
    with pytest.raises(InvalidArgument, match=r"hf_model=.*no argument 'hf_model'"):
        logitprobe.load(str(tiny_gpt2_dir), hf_model=object())


def test_passed_through_keywords_are_exactly_the_bridges_options():
    """A TransformerLens upgrade that adds or drops an option shows up here."""
    from transformer_lens.model_bridge import TransformerBridge

    params = set(inspect.signature(TransformerBridge.boot_transformers).parameters)
    assert loading.BRIDGE_KWARGS == params - {"model_name", "device", "dtype", "tokenizer",
                                              "hf_model"}


def test_progress_must_be_a_bool_or_a_bar(no_loading, tiny_gpt2_dir):
    with pytest.raises(InvalidArgument, match=r"progress='yes': `progress` must be True, False "
                                              r"or a tqdm-like callable"):
        logitprobe.load(str(tiny_gpt2_dir), progress="yes")


@pytest.mark.parametrize("model, words", [
    ("gpt2", "model='gpt2': Probe wraps a model object you already hold; to load a model by "
             "name or path use logitprobe.load('gpt2')"),
    ({}, "model=<dict object>: Probe needs a TransformerLens TransformerBridge or "
         "HookedTransformer, or a Hugging Face causal LM"),
    (None, "model=<NoneType object>"),
    (5, "model=<int object>"),
])
def test_probe_rejects_what_is_not_a_model(model, words):
    with pytest.raises(InvalidArgument) as info:
        Probe(model)
    assert words in str(info.value)
    assert isinstance(info.value, LogitProbeError)


def test_loading_prints_nothing(tiny_gpt2_dir, monkeypatch, capfd):
    monkeypatch.setattr(loading, "_LOADED", {})
    capfd.readouterr()
    logitprobe.load(str(tiny_gpt2_dir), device="cpu")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_building_the_random_test_model_prints_nothing(tmp_path, capfd):
    from logitprobe.testing import build_random_gpt2

    capfd.readouterr()
    build_random_gpt2(tmp_path / "tiny", size="tiny")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("bars", [True, False])
def test_loading_restores_the_users_hugging_face_settings(tiny_gpt2_dir, monkeypatch, bars):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as tf_logging

    before = (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled(),
              are_progress_bars_disabled(), logging.getLogger("transformer_lens").level)
    try:
        tf_logging.set_verbosity_info()
        (tf_logging.enable_progress_bar if bars else tf_logging.disable_progress_bar)()
        logging.getLogger("transformer_lens").setLevel(logging.DEBUG)
        monkeypatch.setattr(loading, "_LOADED", {})
        logitprobe.load(str(tiny_gpt2_dir), device="cpu")
        assert tf_logging.get_verbosity() == logging.INFO
        assert tf_logging.is_progress_bar_enabled() is bars
        assert are_progress_bars_disabled() is not bars
        assert logging.getLogger("transformer_lens").level == logging.DEBUG
    finally:
        tf_logging.set_verbosity(before[0])
        (tf_logging.enable_progress_bar if before[1] else tf_logging.disable_progress_bar)()
        logging.getLogger("transformer_lens").setLevel(before[3])


@pytest.mark.parametrize("tty", [True, False])
def test_the_cli_asks_for_progress_only_on_a_terminal(monkeypatch, tty):
    seen = {}
    monkeypatch.setattr(logitprobe, "load", lambda model, **kw: seen.update(kw))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    args = type("Args", (), {"model": "smollm2", "device": None, "prepend_bos": "auto"})()
    cli_commands._load(args)
    assert seen["progress"] is tty


def test_wrapping_a_hugging_face_model_prints_nothing(tiny_hf, capfd):
    model, tokenizer = tiny_hf
    capfd.readouterr()
    Probe(model, tokenizer)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
