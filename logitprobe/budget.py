"""Memory estimates that refuse a runaway call before it allocates anything.

``probe.sample(p, n=10**12)`` or ``probe.generate(p, n=10**9)`` would otherwise
take the machine's memory until the kernel kills the process. Each such call
first estimates the memory it needs from its arguments and the model's shape,
and raises :class:`~logitprobe.InvalidArgument` (saying how to split the work)
when the estimate exceeds ``probe.max_call_bytes``, which is
:data:`DEFAULT_MAX_CALL_BYTES` (8 GiB) unless given to ``Probe(...,
max_call_bytes=...)`` or set on the probe later. The estimates are upper-end
approximations of the peak, not measurements.
"""

from __future__ import annotations

import operator
from typing import Any

from .errors import InvalidArgument

__all__ = ["DEFAULT_MAX_CALL_BYTES", "check_limit", "generation_bytes", "refuse", "row_bytes",
           "sample_bytes"]

DEFAULT_MAX_CALL_BYTES = 8 * 2**30
"""The default of ``probe.max_call_bytes``: the most memory one call may estimate it needs."""

# One draw of sample()/sample_frequencies(): its key, index and uniform (int64/float64
# tensors and their temporaries), the inverse-CDF target (float64) and id (int64), and
# the id as a Python int in a list (measured: ~48 bytes).
DRAW_BYTES = 64
# What sample() keeps per draw after its prompt is done: a pointer in the result list
# (a Candidate is shared by every draw of the same token).
KEPT_DRAW_BYTES = 16
# Per row and vocabulary entry at one generation step: the float32 logits, warped logits
# and probabilities, the float64 CDF of the draw and the comparisons for ranks.
STEP_VOCAB_BYTES = 32
# Per row and generated token: its GenerationStep record, token text and bookkeeping
# (3000 rows x 40 tokens of the tiny GPT-2: peak RSS growth measured 313-350 MB, estimate 350 MB).
STEP_RECORD_BYTES = 1000


def check_limit(value: Any, name: str = "max_call_bytes") -> int:
    """Validate a memory limit in bytes: a positive int."""
    if not isinstance(value, bool):
        try:
            value = operator.index(value)
        except TypeError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be a positive int of bytes "
                              f"(e.g. {name}=16 * 2**30 for 16 GiB)")
    return value


def size(n: float) -> str:
    """``1.5 GiB``: a byte count for people."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def sample_bytes(n: int, prompts: int = 1) -> int:
    """Peak memory of drawing ``n`` samples for each of ``prompts`` prompts (one at a time)."""
    return n * DRAW_BYTES + prompts * n * KEPT_DRAW_BYTES


def generation_bytes(cfg: Any, *, rows: int, prompt_tokens: int, new_tokens: int,
                     vocab_size: int) -> int:
    """Peak memory of ``rows`` rows, each a prompt of ``prompt_tokens`` and ``new_tokens`` more.

    Per row: one step's vocabulary-sized tensors, the KV cache of every position
    (keys and values of every layer), the attention mask, and the step records.
    """
    return rows * row_bytes(cfg, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                            vocab_size=vocab_size)


def row_bytes(cfg: Any, *, prompt_tokens: int, new_tokens: int, vocab_size: int) -> int:
    layers = int(getattr(cfg, "n_layers", 1) or 1)
    heads = getattr(cfg, "n_key_value_heads", None) or getattr(cfg, "n_heads", 1) or 1
    d_head = getattr(cfg, "d_head", None) or getattr(cfg, "d_model", 1) // max(int(heads), 1)
    itemsize = getattr(getattr(cfg, "dtype", None), "itemsize", 4)
    kv_per_token = 2 * layers * int(heads) * int(d_head) * int(itemsize)
    positions = prompt_tokens + new_tokens
    """Estimated bytes per generated row (see :func:`generation_bytes`)."""
    return (vocab_size * STEP_VOCAB_BYTES + positions * (kv_per_token + 16)
            + new_tokens * STEP_RECORD_BYTES)


def refuse(need: int, limit: int, *, what: str, name: str, value: int, most: int,
           note: str = "", other: str = "") -> InvalidArgument:
    """The error for a call whose estimate ``need`` exceeds ``limit``.

    ``most``: the largest ``name`` that fits; ``note`` follows the advice to split,
    ``other`` replaces it when not even ``name=1`` fits.
    """
    split = (f"split the work into calls of at most {name}={most:,}{note}" if most >= 1
             else f"even {name}=1 does not fit{other}")
    return InvalidArgument(
        f"{name}={value!r}: {what} needs about {size(need)} of memory, more than this probe's "
        f"limit of {size(limit)} (probe.max_call_bytes); {split}, or raise the limit "
        "(probe.max_call_bytes = 64 * 2**30) if the machine has the memory")
