"""Batched, cached forward passes: every query goes through :class:`Engine`.

Why it is shaped this way:

- Prompts are sorted by length and grouped so padding stays small; each group
  is one forward. Rows are padded on the LEFT with an attention mask and
  explicit position ids (TransformerLens #1609: the bridge can derive position
  ids without the mask), so every prompt's last token sits at index -1.
- Left padding makes "the last n positions" the same slice for every row, so
  the model computes logits only there (``logits_to_keep``): the unembedding
  is ~a quarter of a GPT-2-small forward and most queries need one position.
- Results are cached per (token ids, intervention key), LRU-bounded in bytes,
  so no forward pass is computed twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Protocol, Sequence

import torch

__all__ = ["BatchLayout", "Engine", "Stats"]

HookList = list[tuple[str, Callable]]


@dataclass
class Stats:
    """Work done by a probe since it was created (or since :meth:`reset`)."""

    forwards: int = 0  # batched forward passes run
    sequences: int = 0  # prompts evaluated by those passes
    tokens: int = 0  # real (unpadded) tokens evaluated
    padded_tokens: int = 0  # padding added to batch them
    cache_hits: int = 0
    cache_misses: int = 0

    def reset(self) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, 0)

    def snapshot(self) -> "Stats":
        return Stats(**{n: getattr(self, n) for n in self.__dataclass_fields__})

    def __sub__(self, other: "Stats") -> "Stats":
        return Stats(**{n: getattr(self, n) - getattr(other, n) for n in self.__dataclass_fields__})


@dataclass(frozen=True)
class BatchLayout:
    """Where each row's tokens lie in a left-padded batch (for position-aware hooks)."""

    lengths: tuple[int, ...]  # real tokens per row
    seq_len: int  # padded length T
    keep: int  # trailing positions whose logits are computed
    offset: int = 0  # absolute position of column 0 for unpadded rows (KV-cache steps)

    @property
    def pad_left(self) -> tuple[int, ...]:
        return tuple(self.seq_len - n for n in self.lengths)

    @property
    def starts(self) -> tuple[int, ...]:
        """Absolute position of column 0 in each row (negative: that column is padding).

        Row i's token at absolute position p is column ``p - starts[i]`` of this
        forward. On a KV-cache step ``lengths`` counts the cached tokens too and
        ``seq_len`` is the number of new columns (usually 1), so the formula holds
        for prompt passes and cached steps alike.
        """
        return tuple(n - self.seq_len for n in self.lengths)


class Intervention(Protocol):
    """What the engine needs from an intervention: a cache key and hooks for a batch."""

    key: Hashable

    def hooks(self, layout: BatchLayout) -> HookList: ...


@dataclass
class _Request:
    ids: tuple[int, ...]
    keep: int


class Engine:
    """Runs forwards for a backend, batched and cached."""

    def __init__(self, backend: Any, *, pad_id: int, max_batch_tokens: int = 4096,
                 max_batch_logits: int = 64 * 1024 * 1024, cache_bytes: int = 512 * 1024 * 1024):
        self.backend = backend
        self.pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_logits = max_batch_logits  # float32 elements in one logits tensor
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cached_bytes = 0
        self.stats = Stats()

    # -- cache ---------------------------------------------------------------------
    def _lookup(self, key: tuple, keep: int) -> torch.Tensor | None:
        hit = self._cache.get(key)
        if hit is None or hit.shape[0] < keep:
            return None
        self._cache.move_to_end(key)
        return hit[hit.shape[0] - keep:]

    def _store(self, key: tuple, value: torch.Tensor) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.numel() * old.element_size()
        size = value.numel() * value.element_size()
        if size > self.cache_bytes:
            return
        self._cache[key] = value
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.numel() * evicted.element_size()

    def clear_cache(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0

    # -- forwards ------------------------------------------------------------------
    def logits(self, seqs: Sequence[Sequence[int]], keep: Sequence[int] | int = 1,
               intervention: Intervention | None = None) -> list[torch.Tensor]:
        """Logits of the last ``keep[i]`` positions of each sequence: ``[keep_i, vocab]``.

        ``keep[i]`` of ``len(seqs[i])`` gives every position.
        """
        if isinstance(keep, int):
            keep = [keep] * len(seqs)
        ikey = None if intervention is None else intervention.key
        out: list[torch.Tensor | None] = [None] * len(seqs)
        missing: dict[tuple, _Request] = {}
        for i, (ids, k) in enumerate(zip(seqs, keep)):
            ids = tuple(int(t) for t in ids)
            hit = self._lookup((ids, ikey), k)
            if hit is not None:
                self.stats.cache_hits += 1
                out[i] = hit
                continue
            self.stats.cache_misses += 1
            req = missing.get((ids, ikey))
            if req is None:
                missing[(ids, ikey)] = _Request(ids, k)
            else:
                req.keep = max(req.keep, k)
        for group in self._groups(list(missing.values())):
            results = self._run(group, intervention)
            for req, value in zip(group, results):
                self._store((req.ids, ikey), value)
        for i, (ids, k) in enumerate(zip(seqs, keep)):
            if out[i] is None:
                key = (tuple(int(t) for t in ids), ikey)
                value = self._cache.get(key)
                if value is None:  # too large to cache: recompute alone (rare)
                    value = self._run([_Request(key[0], k)], intervention)[0]
                out[i] = value[value.shape[0] - k:]
        return out  # type: ignore[return-value]

    def _groups(self, reqs: list[_Request]) -> Iterable[list[_Request]]:
        """Length-sorted groups: bounded tokens, bounded logits, padding waste <= ~30%."""
        reqs = sorted(reqs, key=lambda r: len(r.ids), reverse=True)
        vocab = self.backend.vocab_size
        group: list[_Request] = []
        for req in reqs:
            if group:
                longest = len(group[0].ids)
                keep = max(max(r.keep for r in group), req.keep)
                fits = ((len(group) + 1) * longest <= self.max_batch_tokens
                        and (len(group) + 1) * keep * vocab <= self.max_batch_logits
                        and len(req.ids) >= 0.7 * longest)
                if not fits:
                    yield group
                    group = []
            group.append(req)
        if group:
            yield group

    @torch.no_grad()
    def _run(self, group: list[_Request], intervention: Intervention | None) -> list[torch.Tensor]:
        lengths = [len(r.ids) for r in group]
        T = max(lengths)
        keep = max(r.keep for r in group)
        device = self.backend.device
        tokens = torch.full((len(group), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), T), dtype=torch.long)
        for row, req in enumerate(group):
            tokens[row, T - len(req.ids):] = torch.tensor(req.ids, dtype=torch.long)
            mask[row, T - len(req.ids):] = 1
        padded = min(lengths) != T
        layout = BatchLayout(lengths=tuple(lengths), seq_len=T, keep=keep)
        hooks = intervention.hooks(layout) if intervention is not None else []
        logits = self.backend.forward(
            tokens.to(device),
            attention_mask=mask.to(device) if padded else None,
            keep=keep,
            hooks=hooks,
        )
        self.stats.forwards += 1
        self.stats.sequences += len(group)
        self.stats.tokens += sum(lengths)
        self.stats.padded_tokens += T * len(group) - sum(lengths)
        logits = logits.to("cpu", torch.float32)
        return [logits[row, keep - r.keep:].clone() for row, r in enumerate(group)]
