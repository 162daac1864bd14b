"""Randomly initialised GPT-2 models with a locally trained tokenizer.

For offline tests and benchmarks: a real byte-level BPE tokenizer (trained here
with ``tokenizers``) and a real ``GPT2LMHeadModel`` with random weights, saved
as an ordinary Hugging Face directory that :func:`logitprobe.load` reads like
any other local model. Random weights cost the same compute as trained ones,
so ``size="small"`` is an honest GPT-2-small benchmark subject.

>>> path = build_random_gpt2("/tmp/tiny-gpt2", size="tiny")   # doctest: +SKIP
>>> probe = logitprobe.load(path)                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._quiet import quiet
from .errors import InvalidArgument

__all__ = ["CORPUS", "SIZES", "build_random_gpt2"]

# Shapes: (n_layer, n_embd, n_head, n_positions, vocab_size).
SIZES = {
    "tiny": (2, 64, 4, 128, 1000),
    "small": (12, 768, 12, 1024, 50257),
}

# Training text for the tokenizer: enough English for sensible merges
# (" the", " coffee", " Paris", ...), small enough to train in well under a second.
CORPUS = """\
I like oat milk in my coffee. I like oat milk in my tea. I like milk in my cereal.
I think more people would eat turmeric if it were purple.
The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome.
The capital of Spain is Madrid. Paris is a city in France. Berlin is a city in Germany.
The cat sat on the mat. The dog sat on the log. A bird sang in the tree.
Logits are the raw scores a language model gives each token before the softmax.
The softmax turns logits into probabilities; the log-softmax avoids overflow.
She drinks coffee every morning and tea every afternoon. He prefers water.
One two three four five six seven eight nine ten. Monday Tuesday Wednesday Thursday Friday.
The quick brown fox jumps over the lazy dog. A language model predicts the next token.
"""


def build_random_gpt2(
    directory: str | os.PathLike[str],
    *,
    size: str = "tiny",
    seed: int = 0,
    n_layer: int | None = None,
    n_embd: int | None = None,
    n_head: int | None = None,
    n_positions: int | None = None,
    vocab_size: int | None = None,
) -> Path:
    """Save a random GPT-2 and its BPE tokenizer to ``directory``; return the path.

    Reuses a directory that already holds the same model (same shapes and seed).
    The tokenizer is trained on :data:`CORPUS` up to ``vocab_size`` entries (a
    large ``vocab_size`` leaves the model's extra rows unused by the tokenizer,
    like GPT-2's padded vocabulary).
    """
    if size not in SIZES:
        raise InvalidArgument(f"size={size!r}: `size` must be one of {sorted(SIZES)}")
    default = dict(zip(("n_layer", "n_embd", "n_head", "n_positions", "vocab_size"), SIZES[size]))
    given = dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions, vocab_size=vocab_size)
    shape = {k: (v if v is not None else default[k]) for k, v in given.items()}
    path = Path(directory)
    stamp = {"shape": shape, "seed": seed, "builder": "logitprobe.testing.build_random_gpt2/1"}
    stamp_file = path / "logitprobe_stamp.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return path

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [CORPUS] * 4,
        vocab_size=min(shape["vocab_size"], 1000),
        min_frequency=1,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer)
    tokenizer.model_max_length = shape["n_positions"]
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    config = GPT2Config(
        vocab_size=shape["vocab_size"],
        n_positions=shape["n_positions"],
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        bos_token_id=eos,
        eos_token_id=eos,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config).eval()
    with quiet():  # no "Writing model shards" bar: the library prints nothing
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    stamp_file.write_text(json.dumps(stamp))
    return path
