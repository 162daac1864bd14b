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
    """A cache layer holding one prefix (batch 1) that every row of a forward attends to.

    ``update`` returns the prefix expanded to the forward's rows followed by the new
    keys/values, and stores nothing: the cache is the same before and after, so one
    prefix serves every suffix batch.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.device = keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        rows = key_states.shape[0]
        keys = torch.cat([self.keys.expand(rows, *self.keys.shape[1:]), key_states], dim=-2)
        values = torch.cat([self.values.expand(rows, *self.values.shape[1:]), value_states],
                           dim=-2)
        return keys, values


@dataclass
class PrefixState:
    """A prefix's keys and values (batch 1), per layer, and how to pass a cache to the model."""

    length: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    cache_arg: str

    def cache(self) -> DynamicCache:
        cache = DynamicCache()
        cache.layers = [_SharedLayer(k, v) for k, v in self.layers]
        return cache


def _cache_arg(model: torch.nn.Module) -> str:
    # transformers renamed the model's `past_key_values=` to `cache=` (5.2x)
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def run_prefix(model: torch.nn.Module, prefix: torch.Tensor) -> PrefixState | None:
    """Run ``prefix`` (``Long[Tensor, "1 P"]``) once; None when the model's cache is not plain.

    A model with sliding-window or otherwise special cache layers is not shared (None).
    """
    cache_arg = _cache_arg(model)
    cache = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    model(prefix, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    if not layers or any(k is None or k.shape[-2] != prefix.shape[1] for k, _ in layers):
        return None
    return PrefixState(prefix.shape[1], layers, cache_arg)


@torch.no_grad()
def run_suffixes(model: torch.nn.Module, state: PrefixState, tokens: torch.Tensor,
                 mask: torch.Tensor | None, keep: int) -> torch.Tensor:
    """Logits ``[rows, keep, vocab]`` of left-padded suffixes ``tokens`` after the prefix."""
    rows, S = tokens.shape
    kwargs: dict[str, Any] = {}
    if mask is not None:
        ones = torch.ones((rows, state.length), dtype=mask.dtype, device=mask.device)
        kwargs["attention_mask"] = torch.cat([ones, mask], dim=1)
        kwargs["position_ids"] = state.length + (mask.cumsum(-1) - 1).clamp(min=0)
    else:
        kwargs["position_ids"] = (state.length + torch.arange(S, device=tokens.device)
                                  ).unsqueeze(0).expand(rows, S)
    if keep < S:
        kwargs["logits_to_keep"] = keep
    logits = model(tokens, use_cache=True, **{state.cache_arg: state.cache()}, **kwargs).logits
    return logits[:, logits.shape[1] - keep:]
