"""Shared prefixes computed once: one KV cache for a prefix, many suffixes on top of it.

When the prompts of a query share a token prefix (a few-shot header, a template's
opening, one context scored against four options), the engine runs the prefix
once (batch 1) and then only the suffixes, every row attending to the prefix's
keys and values. Only the plain Hugging Face twin (:mod:`logitprobe.twin`) does
this: a forward with hooks (an intervention, a user's hook) takes the ordinary
path, because a position-aware hook would see the suffix columns only.

Memory: the prefix's keys and values are stored once; :class:`_SharedLayer`
hands each attention layer ``cat(prefix expanded to the rows, suffix)`` and keeps
none of it, so at any moment only one layer's expanded keys and values exist
(the batched forward they replace holds as much per layer in activations).

Layout of a suffix batch of R rows: ``[prefix (P, cached)] [left padding] [suffix]``;
the attention mask covers prefix + suffix columns (prefix all ones, padding 0),
and position ids continue from P, so each row's logits equal the separate forward's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from transformers.cache_utils import DynamicCache, DynamicLayer

__all__ = ["PrefixState", "run_prefix", "run_suffixes"]


class _SharedLayer(DynamicLayer):
    """A cache layer holding prefixes that the rows of a forward attend to.

    ``index[r]`` is the prefix row ``r`` reads (None: the one prefix, for every row).
    ``update`` returns those prefixes' keys/values followed by the new ones and stores
    nothing: the cache is the same before and after, so it serves every suffix batch.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor | None):
        super().__init__()
        self.keys, self.values, self.index = keys, values, index
        self.device = keys.device
        self.is_initialized = True

    def _rows(self, t: torch.Tensor, rows: int) -> torch.Tensor:
        if self.index is None:
            return t.expand(rows, *t.shape[1:])
        return t.index_select(0, self.index)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        rows = key_states.shape[0]
        keys = torch.cat([self._rows(self.keys, rows), key_states], dim=-2)
        values = torch.cat([self._rows(self.values, rows), value_states], dim=-2)
        return keys, values


@dataclass
class PrefixState:
    """Keys and values of C left-padded prefixes (``[C, heads, width, head_dim]`` per layer)."""

    lengths: torch.Tensor  # Long[C]: real tokens of each prefix
    mask: torch.Tensor | None  # [C, width] 1 = real token; None: no padding
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    cache_arg: str

    @property
    def width(self) -> int:
        return self.layers[0][0].shape[-2]

    def cache(self, index: torch.Tensor | None) -> DynamicCache:
        cache = DynamicCache()
        cache.layers = [_SharedLayer(k, v, index) for k, v in self.layers]
        return cache


def _cache_arg(model: torch.nn.Module) -> str:
    # transformers renamed the model's `past_key_values=` to `cache=` (5.2x)
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def run_prefix(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor | None
               ) -> PrefixState | None:
    """Run left-padded prefixes ``tokens`` (``[C, width]``) once; None when not shareable.

    A model with sliding-window or otherwise special cache layers is not shared (None).
    """
    cache_arg = _cache_arg(model)
    cache = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    kwargs: dict[str, Any] = {}
    if mask is not None:
        kwargs["attention_mask"] = mask
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    model(tokens, use_cache=True, logits_to_keep=1, **{cache_arg: cache}, **kwargs)
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    if not layers or any(k is None or k.shape[-2] != tokens.shape[1] for k, _ in layers):
        return None
    lengths = (mask.sum(-1) if mask is not None
               else torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device))
    return PrefixState(lengths.long(), mask, layers, cache_arg)


@torch.no_grad()
def run_suffixes(model: torch.nn.Module, state: PrefixState, index: torch.Tensor,
                 tokens: torch.Tensor, mask: torch.Tensor | None, keep: int) -> torch.Tensor:
    """Logits ``[rows, keep, vocab]`` of left-padded suffixes ``tokens``.

    Row ``r`` continues prefix ``index[r]`` of ``state``.
    """
    rows, S = tokens.shape
    one = state.lengths.shape[0] == 1
    kwargs: dict[str, Any] = {}
    suffix_mask = mask if mask is not None else torch.ones_like(tokens)
    if mask is not None or state.mask is not None:
        prefix_mask = (state.mask[index] if state.mask is not None
                       else torch.ones((rows, state.width), dtype=suffix_mask.dtype,
                                       device=tokens.device))
        kwargs["attention_mask"] = torch.cat([prefix_mask.to(suffix_mask.dtype), suffix_mask],
                                             dim=1)
    kwargs["position_ids"] = (state.lengths[index][:, None]
                              + (suffix_mask.cumsum(-1) - 1).clamp(min=0))
    if keep < S:
        kwargs["logits_to_keep"] = keep
    cache = state.cache(None if one else index)
    logits = model(tokens, use_cache=True, **{state.cache_arg: cache}, **kwargs).logits
    return logits[:, logits.shape[1] - keep:]
