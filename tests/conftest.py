"""Shared fixtures: one load per model per test session (per xdist worker).

Tests are selectable by cost: ``pytest -m "not slow"`` (``make test-fast``) runs the unit
tests on the tiny random models; ``pytest`` runs everything. A test is ``slow`` when it is
marked so, needs the embedded SmolLM2 model (a ``smol*`` fixture or parameter), runs pytest through
``pytester``, or lives in a module listed in ``SLOW_MODULES`` (docs, examples, notebooks,
benchmarks, multi-process torchrun runs, subprocess runs of the command line).
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

# load() boots TransformerLens lazily. Import it here, once: pytester's in-process runs restore
# sys.modules afterwards, and a second import of TransformerLens (its `datasets` dependency)
# fails to re-register pyarrow extension types. (TransformerLens 3.x, `make test-tl3`, has
# no bridge: its top-level package is what the tests import there.)
try:
    import transformer_lens.model_bridge  # noqa: F401
except ImportError:
    import transformer_lens  # noqa: F401

import logitprobe
from logitprobe.testing import build_random_gpt2


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random GPT-2 (2 layers, vocab 1000) with a locally trained BPE tokenizer."""
    return build_random_gpt2(tmp_path_factory.getbasetemp() / "tiny-gpt2", size="tiny")


def private_load(model, **kwargs) -> "logitprobe.Probe":
    """A probe of its own: load() as a new process would do it, leaving load()'s shared
    probes (the session fixtures') in place."""
    from logitprobe import loading

    saved = dict(loading._LOADED)
    loading._LOADED.clear()
    try:
        return logitprobe.load(str(model), **kwargs)
    finally:
        loading._LOADED.clear()
        loading._LOADED.update(saved)


@pytest.fixture(scope="session")
def tiny(tiny_gpt2_dir) -> "logitprobe.Probe":
    return logitprobe.load(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_gpt2_dir, tmp_path_factory):
    """A tiny random Llama-architecture model (RoPE, grouped-query attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    directory = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_gpt2_dir / name, directory / name)
    return directory


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


SLOW_FIXTURES = {"smol", "smol_hf", "smol_hf_dir", "pytester"}
SLOW_MODULES = {"test_benchmarks", "test_distributed", "test_docs", "test_examples",
                "test_hooked_transformer", "test_interventions_smol", "test_notebook",
                "test_smollm2"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rpartition(".")[2] if module is not None else ""
        params = getattr(getattr(item, "callspec", None), "params", {})
        smol_param = any(isinstance(v, str) and v.startswith("smol") for v in params.values())
        if (name in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or smol_param):  # parametrized over models, fetched with getfixturevalue
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker gets one thread: two workers with two threads each on a
    # two-core machine oversubscribe it and run many times slower.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
