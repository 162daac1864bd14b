"""Shared fixtures: one load per model per test session (per xdist worker)."""

from __future__ import annotations

import os

import pytest

import logitprobe
from logitprobe.testing import build_random_gpt2


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random GPT-2 (2 layers, vocab 1000) with a locally trained BPE tokenizer."""
    return build_random_gpt2(tmp_path_factory.getbasetemp() / "tiny-gpt2", size="tiny")


@pytest.fixture(scope="session")
def tiny(tiny_gpt2_dir) -> "logitprobe.Probe":
    return logitprobe.load(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(scope="session")
def smol() -> "logitprobe.Probe":
    """The embedded pretrained SmolLM2-135M (offline)."""
    return logitprobe.load("smollm2", device="cpu")


@pytest.fixture(scope="session")
def smol_hf_dir(smol):
    """The float32 Hugging Face copy of SmolLM2 that load('smollm2') made."""
    from logitprobe.loading import dequantized_dir, smollm2_path

    directory = dequantized_dir(smollm2_path())
    assert (directory / "model.safetensors").is_file(), "load('smollm2') should have cached it"
    return directory


def hf_reference(directory):
    """A separate Hugging Face model from ``directory`` (never the object a bridge wraps)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(directory), attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="session")
def tiny_hf(tiny_gpt2_dir):
    return hf_reference(tiny_gpt2_dir)


@pytest.fixture(scope="session")
def smol_hf(smol_hf_dir):
    return hf_reference(smol_hf_dir)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker gets one thread: two workers with two threads each on a
    # two-core machine oversubscribe it and run many times slower.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
