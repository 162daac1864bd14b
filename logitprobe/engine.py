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
  so no forward pass is computed twice. The cache is only valid for the model
  it was filled on, so each call first asks the backend (cheaply, see
  :mod:`logitprobe.twin`) whether the weights changed (then the cache is
  cleared) and whether a hook that is not ours is attached (then the call
  neither reads nor writes the cache: its hooks may do anything).
- One lock per model serializes calls (cache, hooks check and forwards): an
  intervened forward attaches hooks to the shared model for its duration, which
  another thread's forward (this probe's or another probe's on the same model)
  must not run under.
"""

from __future__ import annotations

import math

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Protocol, Sequence

import torch

from ._finite import explain, find_nonfinite
from .batching import (BatchLayout, PaddedBatch, Stats, left_pad, model_lock,  # noqa: F401
                       position_ids, share_lock)  # re-exported: logitprobe.engine's public names

__all__ = ["BatchLayout", "Engine", "PaddedBatch", "Stats", "left_pad", "model_lock",
           "position_ids", "share_lock"]

HookList = list[tuple[str, Callable]]


class Intervention(Protocol):
    """What the engine needs from an intervention: a cache key and hooks for a batch."""

    key: Hashable

    def hooks(self, layout: BatchLayout) -> HookList: ...


@dataclass
class _Request:
    ids: tuple[int, ...]
    keep: int
    prefix: tuple[int, ...] = ()  # tokens before ``ids`` read from a shared KV cache


class _NoPrefix(Exception):
    """The backend cannot run suffixes after a shared prefix (now): use separate forwards."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Engine:
    """Runs forwards for a backend, batched and cached."""

    def __init__(self, backend: Any, *, pad_id: int, max_batch_tokens: int = 4096,
                 max_batch_logits: int = 64 * 1024 * 1024, cache_bytes: int = 512 * 1024 * 1024,
                 forward_cost_tokens: int = 32, share_prefixes: bool = True,
                 min_shared_prefix: int = 8):
        self.backend = backend
        # Prompts sharing a token prefix run it once (:mod:`logitprobe.prefix`): only
        # unintervened forwards on a backend with a plain twin and no foreign hooks.
        self.share_prefixes = share_prefixes
        self.min_shared_prefix = min_shared_prefix
        self.pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        # What one extra forward costs, in padded tokens (on a 2-core CPU and GPT-2
        # small a forward's fixed part, mostly reading the weights, is ~32 tokens of work)
        self.forward_cost_tokens = forward_cost_tokens
        self.max_batch_logits = max_batch_logits  # float32 elements in one logits tensor
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cached_bytes = 0
        self._weights_key: tuple | None = None  # backend.weights_key() the cache was filled under
        self.stats = Stats()
        self.decode: Callable[[Sequence[int]], str] | None = None  # ids -> text, for errors
        # Held for every call and by other forwards on the same model (generation, the lens).
        self.lock = getattr(backend, "lock", None) or model_lock(None)

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
        with self.lock:
            self._cache.clear()
            self._cached_bytes = 0

    # -- forwards ------------------------------------------------------------------
    def logits(self, seqs: Sequence[Sequence[int]], keep: Sequence[int] | int = 1,
               intervention: Intervention | None = None) -> list[torch.Tensor]:
        """Logits of the last ``keep[i]`` positions of each sequence: ``[keep_i, vocab]``.

        ``keep[i]`` of ``len(seqs[i])`` gives every position.
        """
        with self.lock:
            return self._logits(seqs, keep, intervention)

    def _logits(self, seqs: Sequence[Sequence[int]], keep: Sequence[int] | int,
                intervention: Intervention | None) -> list[torch.Tensor]:
        if isinstance(keep, int):
            keep = [keep] * len(seqs)
        weights = self.backend.weights_key()
        if weights != self._weights_key:  # edited or replaced weights: nothing cached holds
            self.clear_cache()
            self._weights_key = weights
        use_cache = not self.backend.foreign_hooks()
        ikey = None if intervention is None else intervention.key
        keys = [(tuple(int(t) for t in ids), ikey) for ids in seqs]
        out: list[torch.Tensor | None] = [None] * len(seqs)
        missing: dict[tuple, _Request] = {}
        for i, (key, k) in enumerate(zip(keys, keep)):
            hit = self._lookup(key, k) if use_cache else None
            if hit is not None:
                self.stats.cache_hits += 1
                out[i] = hit
                continue
            self.stats.cache_misses += 1
            req = missing.get(key)
            if req is None:
                missing[key] = _Request(key[0], k)
            else:
                req.keep = max(req.keep, k)
        fresh: dict[tuple, torch.Tensor] = {}
        reqs = list(missing.values())
        # Shared prefixes only when nothing is hooked: a hook would see suffix columns only.
        if (intervention is None and use_cache and self.share_prefixes and len(reqs) > 1
                and hasattr(self.backend, "prefix_state")):
            shared, reqs = self._shared_prefixes(reqs)
            if shared:
                try:
                    results = self._run_shared(shared)
                except _NoPrefix:
                    reqs += [r for _, members in shared for r in members]
                else:
                    for req, value in results:
                        fresh[(req.ids, ikey)] = value
                        if use_cache:
                            self._store((req.ids, ikey), value)
        for group in self._groups(reqs):
            results = self._run(group, intervention)
            for req, value in zip(group, results):
                fresh[(req.ids, ikey)] = value
                if use_cache:
                    self._store((req.ids, ikey), value)
        for i, (key, k) in enumerate(zip(keys, keep)):
            if out[i] is None:
                value = fresh[key]
                out[i] = value[value.shape[0] - k:]
        return out  # type: ignore[return-value]

    def _shared_prefixes(self, reqs: list[_Request]
                         ) -> tuple[list[tuple[int, list[_Request]]], list[_Request]]:
        """Clusters of requests worth running after one shared prefix, and the rest.

        Sorted by tokens, neighbours share the longest prefixes; a cluster grows while
        its common prefix stays at least ``min_shared_prefix`` tokens and shortening
        it for the newcomer costs the members less than the newcomer saves
        (``(members - 1) * tokens lost <= prefix``: a new template opening starts a new
        cluster instead of cutting a long one down to the few-shot header). The
        prefix stops ``keep`` tokens before each member's end (those logits come from
        the suffix forward). A cluster is shared when it saves more tokens than its
        extra forward costs: ``(members - 1) * prefix > forward_cost_tokens``.
        """
        clusters: list[tuple[int, list[_Request]]] = []
        for req in sorted(reqs, key=lambda r: r.ids):
            cap = len(req.ids) - req.keep
            if clusters:
                length, members = clusters[-1]
                p = min(length, cap, _common_prefix(members[-1].ids, req.ids))
                if p >= self.min_shared_prefix and (len(members) - 1) * (length - p) <= p:
                    members.append(req)
                    clusters[-1] = (p, members)
                    continue
            clusters.append((cap, [req]))
        shared, rest = [], []
        for length, members in clusters:
            if len(members) > 1 and (len(members) - 1) * length > self.forward_cost_tokens:
                shared.append((length, members))
            else:
                rest += members
        return shared, rest

    @torch.no_grad()
    def _run_shared(self, clusters: list[tuple[int, list[_Request]]]
                    ) -> list[tuple[_Request, torch.Tensor]]:
        """Logits of every cluster's members: batched prefix forwards, then suffix forwards.

        The prefixes (longest first) are cut into left-padded batches of at most
        ``max_batch_tokens``; each batch's suffixes are grouped like any prompts, every
        row reading its own cluster's keys and values.
        """
        device = self.backend.device
        clusters = sorted(clusters, key=lambda c: c[0], reverse=True)
        out: list[tuple[_Request, torch.Tensor]] = []
        start = 0
        while start < len(clusters):
            width = clusters[start][0]
            size = max(1, self.max_batch_tokens // width)
            chunk = clusters[start:start + size]
            start += len(chunk)
            tokens = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (length, members) in enumerate(chunk):
                tokens[row, width - length:] = torch.tensor(members[0].ids[:length])
                mask[row, width - length:] = 1
            padded = min(c[0] for c in chunk) != width
            state = self.backend.prefix_state(tokens.to(device),
                                              mask.to(device) if padded else None)
            if state is None:
                raise _NoPrefix
            real = sum(c[0] for c in chunk)
            self.stats.forwards += 1  # the prefix forward (its rows are the members, counted below)
            self.stats.tokens += real
            self.stats.padded_tokens += width * len(chunk) - real
            subs, where, origin = [], {}, {}
            for ci, (length, members) in enumerate(chunk):
                for r in members:
                    sub = _Request(r.ids[length:], r.keep, r.ids[:length])
                    subs.append(sub)
                    where[id(sub)], origin[id(sub)] = ci, r
            for group in self._groups(subs, context=width):
                index = torch.tensor([where[id(r)] for r in group], device=device)
                for req, value in zip(group, self._run(group, None, state=(state, index))):
                    out.append((origin[id(req)], value))
        return out

    def _groups(self, reqs: list[_Request], context: int = 0) -> Iterable[list[_Request]]:
        """Length-sorted groups that minimise padded tokens plus a cost per forward.

        ``context``: tokens every row attends to before its own (a shared prefix); they
        count towards ``max_batch_tokens`` (memory) but not towards the work.

        A forward costs its padded tokens (rows x longest) plus ``forward_cost_tokens``
        (reading every weight once, Python overhead): many tiny groups waste the
        second, a few wide ones the first. Dynamic programming over the distinct
        lengths (longest first) picks the split; a span too large for
        ``max_batch_tokens`` / ``max_batch_logits`` is cut into chunks that fit.
        """
        reqs = sorted(reqs, key=lambda r: len(r.ids), reverse=True)
        buckets: list[list[_Request]] = []
        for req in reqs:
            if buckets and len(buckets[-1][0].ids) == len(req.ids):
                buckets[-1].append(req)
            else:
                buckets.append([req])
        vocab = self.backend.vocab_size
        n = len(buckets)
        bucket_keep = [max(r.keep for r in bucket) for bucket in buckets]
        best = [0.0] + [math.inf] * n  # best[j]: cost of buckets[:j]
        cut = [0] * (n + 1)
        for j in range(1, n + 1):
            rows = keep = 0
            for i in range(j - 1, max(-1, j - 1 - self._SPAN), -1):  # span buckets[i:j]
                rows += len(buckets[i])
                keep = max(keep, bucket_keep[i])
                longest = len(buckets[i][0].ids)
                forwards = math.ceil(rows / self._rows_per_forward(longest + context, keep, vocab))
                cost = best[i] + rows * longest + self.forward_cost_tokens * forwards
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        spans = []
        j = n
        while j > 0:
            spans.append((cut[j], j))
            j = cut[j]
        for i, j in reversed(spans):
            span = [r for bucket in buckets[i:j] for r in bucket]
            longest = len(span[0].ids)
            keep = max(r.keep for r in span)
            size = self._rows_per_forward(longest + context, keep, vocab)
            chunks = math.ceil(len(span) / size)
            size = math.ceil(len(span) / chunks)  # even chunks
            for k in range(0, len(span), size):
                yield span[k:k + size]

    _SPAN = 64  # distinct lengths one group may span (more would pad heavily anyway)

    def _rows_per_forward(self, longest: int, keep: int, vocab: int) -> int:
        return max(1, min(self.max_batch_tokens // longest,
                          self.max_batch_logits // max(1, keep * vocab)))

    def nonfinite_error(self, bad: Any, ids: Sequence[int], keep: int,
                        intervention: Intervention | None) -> Exception:
        """The error for bad logits at ``bad.column`` of the last ``keep`` positions of ``ids``.

        Re-runs ``ids`` alone without, then with growing prefixes of, the interventions
        (uncached, unchecked) to name which one produced the values.
        """
        def fails(sub: Intervention | None) -> bool:
            out = self._run([_Request(tuple(ids), keep)], sub, check=False)[0]
            return find_nonfinite(out[None]) is not None

        prompt = None
        if self.decode is not None:
            try:
                prompt = self.decode(ids)
            except Exception:  # noqa: BLE001 - the prompt is only context for the message
                prompt = None
        return explain(bad, position=len(ids) - keep + bad.column, n_tokens=len(ids),
                       prompt=prompt, intervention=intervention, fails=fails)

    @torch.no_grad()
    def _run(self, group: list[_Request], intervention: Intervention | None, *,
             check: bool = True, state: Any = None) -> list[torch.Tensor]:
        keep = max(r.keep for r in group)
        device = self.backend.device
        batch = left_pad([r.ids for r in group], self.pad_id)
        mask = batch.mask.to(device) if batch.padded else None
        if state is not None:  # suffixes after a shared prefix (no hooks, see _run_shared)
            logits = self.backend.forward_suffixes(state[0], state[1], batch.tokens.to(device),
                                                   mask, keep)
            if logits is None:
                raise _NoPrefix
        else:
            hooks = intervention.hooks(batch.layout(keep)) if intervention is not None else []
            logits = self.backend.forward(batch.tokens.to(device), attention_mask=mask,
                                          keep=keep, hooks=hooks)
        self.stats.count(batch)
        logits = logits.to("cpu", torch.float32)
        # NaN / +inf / all -inf is no answer: one reduction per forward over what rows read.
        bad = find_nonfinite(logits, [r.keep for r in group]) if check else None
        if bad is not None:
            req = group[bad.row]
            raise self.nonfinite_error(bad._replace(column=bad.column - (keep - req.keep)),
                                       req.prefix + req.ids, req.keep, intervention)
        return [logits[row, keep - r.keep:].clone() for row, r in enumerate(group)]
