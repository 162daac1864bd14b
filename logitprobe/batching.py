"""Left-padded batches, their layout, work counters and the per-model lock.

The pieces every forward shares: :func:`left_pad` builds the one padded batch (tokens,
mask, explicit position ids; TransformerLens #1609) that the engine, the KV decoder and
the lens run; :class:`BatchLayout` tells an intervention where each row's tokens are;
:class:`Stats` counts the work; :func:`model_lock` serializes forwards on one model.
Re-exported by :mod:`logitprobe.engine`.
"""

from __future__ import annotations

import threading
import weakref

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["BatchLayout", "PaddedBatch", "Stats", "left_pad", "model_lock", "position_ids",
           "share_lock"]


@dataclass
class Stats:
    """Work done by a probe since it was created (or since :meth:`reset`)."""

    forwards: int = 0  # batched forward passes run
    sequences: int = 0  # prompts evaluated by those passes
    tokens: int = 0  # real (unpadded) tokens evaluated
    padded_tokens: int = 0  # padding added to batch them
    cache_hits: int = 0
    cache_misses: int = 0  # includes queries that bypass the cache (foreign hooks attached)

    def reset(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, 0)

    def count(self, batch: "PaddedBatch") -> None:
        """Count one forward over ``batch``: its sequences, real tokens and padding."""
        self.forwards += 1
        self.sequences += len(batch.lengths)
        self.tokens += sum(batch.lengths)
        self.padded_tokens += batch.pad_tokens

    def snapshot(self) -> "Stats":
        return Stats(**{n: getattr(self, n) for n in self.__dataclass_fields__})

    def __sub__(self, other: "Stats") -> "Stats":
        return Stats(**{n: getattr(self, n) - getattr(other, n) for n in self.__dataclass_fields__})


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions in a left-padded batch: real tokens get 0..n-1, pads 0 (they are masked)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class PaddedBatch:
    """Sequences left-padded into one batch, as every forward of logitprobe runs them.

    ``tokens`` and ``mask`` are ``(batch, T)`` long tensors on the CPU; ``mask`` is 1 on
    real tokens. Built by :func:`left_pad`; the engine, the KV decoder and the lens share it.
    """

    tokens: torch.Tensor  # (batch, T): pad_id, then the row's ids
    mask: torch.Tensor  # (batch, T): 0 on padding, 1 on real tokens
    lengths: tuple[int, ...]  # real tokens per row

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def padded(self) -> bool:
        """Whether any row is padded (without padding no mask is needed)."""
        return min(self.lengths) != self.seq_len

    @property
    def pad_tokens(self) -> int:
        return self.seq_len * len(self.lengths) - sum(self.lengths)

    def position_ids(self) -> torch.Tensor:
        return position_ids(self.mask)

    def layout(self, keep: int = 1, offset: int = 0) -> "BatchLayout":
        return BatchLayout(lengths=self.lengths, seq_len=self.seq_len, keep=keep, offset=offset)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> PaddedBatch:
    """Left-pad ``seqs`` (token ids) to their longest length with ``pad_id``."""
    lengths = tuple(len(s) for s in seqs)
    T = max(lengths)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for row, ids in enumerate(seqs):
        tokens[row, T - len(ids):] = torch.as_tensor(ids, dtype=torch.long)
        mask[row, T - len(ids):] = 1
    return PaddedBatch(tokens, mask, lengths)


@dataclass(frozen=True)
class BatchLayout:
    """Where each row's tokens lie in a left-padded batch (for position-aware hooks)."""

    lengths: tuple[int, ...]  # real tokens per row
    seq_len: int  # padded length T
    keep: int  # trailing positions whose logits are computed
    offset: int = 0  # absolute position of column 0 for unpadded rows (KV-cache steps)

    @property
    def starts(self) -> tuple[int, ...]:
        """Absolute position of column 0 in each row (negative: that column is padding).

        Row i's token at absolute position p is column ``p - starts[i]`` of this
        forward. On a KV-cache step ``lengths`` counts the cached tokens too and
        ``seq_len`` is the number of new columns (usually 1), so the formula holds
        for prompt passes and cached steps alike.
        """
        return tuple(n - self.seq_len for n in self.lengths)


_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def share_lock(model: Any, other: Any) -> None:
    """Make ``other`` use ``model``'s lock (a bridge booted on a model a probe already runs)."""
    lock = model_lock(model)
    with _LOCKS_LOCK:
        _LOCKS[other] = lock


def model_lock(model: Any) -> threading.RLock:
    """The one lock of ``model``, shared by every probe (engine) built on it.

    Reentrant, so that a hook running inside a forward may query a probe of the same model.
    """
    if model is None:
        return threading.RLock()
    with _LOCKS_LOCK:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
