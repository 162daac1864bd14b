"""KV-cached decoding through a TransformerBridge, with hooks on every forward.

:class:`Decoder` runs one prefill forward over a left-padded batch of prompts
(optionally repeating each prompt's cache ``repeats`` times, so n samples of one
prompt cost one prompt pass), then one forward per generated token in which each
row feeds only its newest token and reads the rest from the Hugging Face cache.

Upstream defect worked around here (transformer-lens 4.3.0 + transformers 5.24):
HF decoder layers now hand the cache to attention as ``cache=``, while the
bridge's reimplemented attention reads only ``past_key_values=``/``layer_past=``.
The cache is then never extended, so every cached step attends to its own token
only and ``TransformerBridge.generate`` returns wrong tokens (SmolLM2:
' Paris-----...' instead of ' Paris.\\n\\nThe answer is: 201...'). While our
forwards run, :func:`cache_kwarg_fix` gives each attention bridge the cache under
the name it reads (a forward pre-hook, removed afterwards; harmless once upstream
reads ``cache=`` itself). ``tests/test_generation.py`` checks that the defect
still exists and says when it can be removed.

Models other than a bridge (a TransformerLens 3.x ``HookedTransformer``) are
decoded without a cache: each step re-runs the whole batch (correct, slower).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch

from .backends import own_hooks
from .batching import BatchLayout, Stats, left_pad, position_ids

__all__ = ["Decoder", "cache_kwarg_fix"]


def _attention_modules(model: Any) -> list[torch.nn.Module]:
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:  # pragma: no cover - TransformerLens 3.x has no bridge
        return []
    return [m for m in model.modules() if isinstance(m, AttentionBridge)]


def _pass_cache(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs["past_key_values"] = kwargs["cache"]
    return args, kwargs


@contextlib.contextmanager
def cache_kwarg_fix(model: Any, modules: list[torch.nn.Module] | None = None) -> Iterator[None]:
    """While inside, every attention bridge of ``model`` sees ``cache=`` as ``past_key_values=``.

    ``modules``: the attention bridges, if already found (walking the model costs ~3 ms).
    """
    if modules is None:
        modules = _attention_modules(model)
    handles = [m.register_forward_pre_hook(_pass_cache, with_kwargs=True) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class Decoder:
    """Incremental forwards for a batch of rows: a prefill, then one token per row per step.

    Every forward is wrapped in the intervention's hooks for a :class:`BatchLayout`
    that says where each row's tokens are: ``lengths`` counts each row's real
    tokens so far (cached ones included), ``seq_len`` the columns of this forward
    (1 on a cached step), and ``offset`` the absolute position of column 0 for
    unpadded rows; ``layout.starts[i]`` is row i's absolute position of column 0.
    """

    def __init__(self, backend: Any, *, pad_id: int, intervention: Any = None,
                 stats: Stats | None = None, cached: bool | None = None, lock: Any = None):
        self.backend = backend
        # The engine's lock, held for each forward: another thread's query must not run
        # while this forward's hooks are on the shared model.
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self.pad_id = pad_id
        self.intervention = intervention
        self.stats = stats if stats is not None else Stats()
        # An intervention that edits 'last' activations would stay in the cache of the
        # positions it edited: such rows are decoded with full forwards instead.
        # cached=False re-runs every row in full each step (always so for non-bridge models).
        auto = backend.kind == "bridge" and getattr(intervention, "cache_safe", True)
        self.cached = auto if cached is None else (cached and backend.kind == "bridge")
        self._hf = backend.original  # the Hugging Face model (inside the bridge once booted)
        # transformers renamed the model's `past_key_values=` to `cache=` (5.2x);
        # pass the cache under the name this version takes (no deprecation path).
        params = inspect.signature(self._hf.forward).parameters if self.cached else {}
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._attention: list | None = None  # the bridge's attention modules, on first hooked step
        self._twin: torch.nn.Module | None = None  # set by prefill when nothing is hooked
        self.rows = 0
        self.lengths: list[int] = []  # real tokens per row so far
        self._mask: torch.Tensor | None = None  # [rows, columns] 1 = real token
        self._cache: Any = None
        self._tokens: torch.Tensor | None = None  # [rows, columns], uncached path only
        self._padded = False

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def _hooks(self, layout: BatchLayout) -> list:
        return self.intervention.hooks(layout) if self.intervention is not None else []

    def prefill(self, seqs: list[list[int]], repeats: int = 1) -> torch.Tensor:
        """Run the prompts; return next-token logits ``Float[Tensor, "rows vocab"]``.

        Rows are prompt-major: prompt j's copies are rows ``j*repeats ... j*repeats+repeats-1``.
        """
        with self._lock:
            return self._prefill(seqs, repeats)

    @torch.no_grad()
    def _prefill(self, seqs: list[list[int]], repeats: int) -> torch.Tensor:
        batch = left_pad(seqs, self.pad_id)
        tokens, mask = batch.tokens.to(self.device), batch.mask.to(self.device)
        # Without padding no mask is needed: the model's causal masking is the same and
        # cheaper than expanding a 2-D mask on every step.
        self._padded = batch.padded
        layout = batch.layout(keep=1, offset=0)
        if self.cached:
            from transformers import DynamicCache

            self._cache = DynamicCache(config=self._hf.config)  # filled in place by each forward
            hooks = self._hooks(layout)
            # Nothing hooked (no intervention, no user hook): the whole generation runs the
            # plain HF model inside the bridge, skipping the hook machinery (same logits).
            self._twin = self.backend.twin() if self.intervention is None else None
            logits = self._cached_forward(tokens, hooks, attention_mask=mask if self._padded
                                          else None, position_ids=position_ids(mask),
                                          logits_to_keep=1)
            if repeats > 1:
                self._cache.batch_repeat_interleave(repeats)
            logits = logits[:, -1]
        else:
            logits = self.backend.forward(tokens, attention_mask=mask if self._padded else None,
                                          keep=1, hooks=self._hooks(layout))[:, -1]
            self._tokens = tokens.repeat_interleave(repeats, dim=0)
        self.stats.count(batch)
        self._mask = mask.repeat_interleave(repeats, dim=0)
        self.lengths = [n for n in batch.lengths for _ in range(repeats)]
        self.rows = len(self.lengths)
        return logits.float().repeat_interleave(repeats, dim=0)

    def _cached_forward(self, tokens: torch.Tensor, hooks: list, **kwargs: Any) -> torch.Tensor:
        kwargs.update(use_cache=True, **{self._cache_arg: self._cache})
        if self._twin is not None and not hooks:
            return self._twin(tokens, **kwargs).logits
        model = self.backend.model  # boots a deferred bridge: something is hooked
        if self._attention is None:
            self._attention = _attention_modules(model)
        with cache_kwarg_fix(model, self._attention), own_hooks(model, hooks):
            return model(tokens, **kwargs)

    def step(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (``Long[Tensor, "rows"]``); return the next logits."""
        with self._lock:
            return self._step(new_tokens)

    @torch.no_grad()
    def _step(self, new_tokens: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            raise RuntimeError("Decoder.step() before prefill()")
        new_tokens = new_tokens.to(self.device, torch.long).reshape(self.rows, 1)
        ones = torch.ones((self.rows, 1), dtype=self._mask.dtype, device=self._mask.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        self.lengths = [n + 1 for n in self.lengths]
        columns = self._mask.shape[1]
        if self.cached:
            layout = BatchLayout(lengths=tuple(self.lengths), seq_len=1, keep=1,
                                 offset=columns - 1)
            # Each row's new token sits at position (its real tokens so far) - 1.
            positions = torch.tensor(self.lengths, device=self.device).unsqueeze(1) - 1
            logits = self._cached_forward(new_tokens, self._hooks(layout), position_ids=positions,
                                          attention_mask=self._mask if self._padded else None)
            self.stats.tokens += self.rows
        else:
            self._tokens = torch.cat([self._tokens, new_tokens], dim=1)  # set by prefill
            layout = BatchLayout(lengths=tuple(self.lengths), seq_len=columns, keep=1, offset=0)
            padded = min(self.lengths) != columns
            logits = self.backend.forward(self._tokens,
                                          attention_mask=self._mask if padded else None,
                                          keep=1, hooks=self._hooks(layout))
            self.stats.tokens += sum(self.lengths)
            self.stats.padded_tokens += columns * self.rows - sum(self.lengths)
        self.stats.forwards += 1
        self.stats.sequences += self.rows
        return logits[:, -1].float()
