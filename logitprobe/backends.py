"""Adapters from a TransformerLens model to the one call the engine needs.

``forward(tokens, attention_mask, keep, hooks) -> logits[batch, keep, vocab]``
for left-padded ``tokens``. Hooks are attached for that forward only and only
our own hooks are removed afterwards (TransformerLens #1636: ``reset_hooks``
removes hooks the caller did not add).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import torch

from ._boot import Boot, Deferred
from ._text import short
from .errors import InvalidArgument, LogitProbeError
from .batching import model_lock, share_lock
from .batching import position_ids as _position_ids
from .prefix import PrefixState, run_prefix, run_suffixes
from .twin import (HooksWatch, NoTwin, TwinCache, WeightsWatch, plain_parameters, same_weights,
                   shared_copy)

__all__ = ["BridgeBackend", "HookedTransformerBackend", "backend_for", "own_hooks"]


@contextlib.contextmanager
def own_hooks(model: Any, hooks: list[tuple[str, Callable]]) -> Iterator[None]:
    """Attach ``(hook_name, fn)`` forward hooks for one block; remove exactly those on exit.

    Uses the model's own ``hooks()`` context (alias resolution, shape conversion
    of attention hooks); TransformerLens 4 removes only the handles that context
    added (3.x: only the hooks of that context's level), so hooks the user
    attached are left alone (tests pin this for both).
    """
    if not hooks:
        yield
        return
    with model.hooks(fwd_hooks=list(hooks)):
        yield


class _Watched:
    """What the engine asks before using its cache: foreign hooks? which weights?"""

    def _watch(self, model: Any) -> None:
        # Held around every forward: another thread's forward must not run while this
        # one's hooks are on the shared model (the engine holds it around its cache too).
        self.lock = model_lock(model)
        self._hooks_watch = HooksWatch(model)
        self._weights_watch = WeightsWatch(model)

    def foreign_hooks(self) -> bool:
        """Whether a hook that is not logitprobe's own is attached (the user's, a raw torch one)."""
        return self._hooks_watch()

    def weights_key(self) -> tuple:
        """Changes when a parameter or buffer is replaced or edited in place (not via ``.data``)."""
        return self._weights_watch.key()

    def refresh(self) -> None:
        """Re-list the weights (after edits no check sees: ``.data`` writes)."""
        self._weights_watch.refresh()


class BridgeBackend(_Watched):
    """A TransformerLens 4.x ``TransformerBridge``, booted now or when first needed.

    ``use_twin``: whether forwards with nothing hooked (no intervention, no hook of
    the user's) may run the plain Hugging Face model the bridge wraps
    (:mod:`logitprobe.twin`: same parameters, checked to give the bridge's logits;
    a KV-cached step is about 25% faster on CPU, a batched forward a few percent).

    Deferred boot (``deferred=``): ``load()`` hands over the plain Hugging Face
    model and a :class:`~logitprobe._boot.Boot`. Unhooked forwards run that model
    (it is what the twin would be); the bridge is booted, and TransformerLens
    imported, only when something needs it: ``probe.model``, a hook, an intervention,
    the lens, or a foreign hook on the plain model. Booting changes no weight, so
    results cached before it stay valid (:meth:`weights_key` says so only after
    checking that the twin holds exactly the tensors the plain model held).
    """

    kind = "bridge"

    def __init__(self, bridge: Any = None, *, deferred: Deferred | None = None):
        """Wrap a booted ``bridge``, or (``deferred=``) a plain model and the boot to run later."""
        if (bridge is None) == (deferred is None):
            raise TypeError("BridgeBackend needs a bridge or deferred=, not both")
        self._bridge = bridge
        self._plain: torch.nn.Module | None = None if deferred is None else deferred.plain
        # How to boot the bridge later (None once booted or when given booted); copied by
        # deepcopy(probe), which keeps a copy unbooted.
        self.boot_plan: Boot | None = None if deferred is None else deferred.boot
        self._aliases: dict[tuple, tuple] = {}  # bridge weights key at boot -> plain key before
        self.boot_keys: tuple | None = None  # (key before, key after) a deferred boot
        self.use_twin = True
        self._twins: Any = None
        self._set_cfg(bridge.cfg if bridge is not None else deferred.cfg)
        self._watch(bridge if bridge is not None else self._plain)

    def _set_cfg(self, cfg: Any) -> None:
        self.cfg = cfg
        self.vocab_size = int(cfg.d_vocab)
        self.n_ctx = getattr(cfg, "n_ctx", None)
        self.n_layers = int(cfg.n_layers)

    @property
    def booted(self) -> bool:
        """Whether the bridge exists (``probe.model`` boots it)."""
        return self._bridge is not None

    @property
    def model(self) -> Any:
        """The ``TransformerBridge`` (booted on first access when deferred)."""
        if self._bridge is None:
            with self.lock:
                if self._bridge is None:
                    self._boot_now()
        return self._bridge

    @property
    def module(self) -> torch.nn.Module:
        """The model as it is now, without booting: the bridge, or the plain model before it."""
        return self._bridge if self._bridge is not None else self._plain

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The Hugging Face model's parameters, in its order, before and after the boot.

        After it, those the bridge's components wrap (not the copies a bridge may keep,
        e.g. GPT-2's q/k/v); no twin needed.
        """
        if self._bridge is None:
            return self._plain.parameters()
        return plain_parameters(self._bridge)

    def _boot_now(self) -> None:
        """Boot the bridge (the caller holds the lock); publish it only once it is complete."""
        plain, before = self._plain, self._weights_watch.key()
        try:
            tree = shared_copy(plain)
        except NoTwin as exc:
            raise LogitProbeError(
                "cannot boot the TransformerBridge: the plain model of "
                f"{short(self.cfg.model_name)} carries something booting would drop ({exc}); remove it first") from None
        bridge = self.boot_plan(tree)
        _check_same_shape(self.cfg, bridge.cfg)
        share_lock(plain, bridge)
        hooks_watch, weights_watch = HooksWatch(bridge), WeightsWatch(bridge)
        twins = TwinCache(bridge)
        after = weights_watch.key()
        aliases = {}
        # The twin is the plain model's module tree again: the same tensors, unedited, mean
        # that booting changed nothing a cached result depends on. Not checked under a
        # foreign (global) hook: the check forward would run it; the twin is built later.
        if not hooks_watch():
            twin = twins.get()
            if (twin is not None and WeightsWatch(plain).key()[:3] == before[:3]
                    and same_weights(plain, twin)):
                aliases = {after: before}
        self.boot_keys = (before, after)  # the weights keys just before and just after the boot
        self.cfg, self._aliases, self._twins = bridge.cfg, aliases, twins
        self._hooks_watch, self._weights_watch = hooks_watch, weights_watch
        self._bridge = bridge  # last: other threads read it without the lock
        # The plain model stays (readers that saw no bridge yet may still use it); booting
        # again is impossible.
        self.boot_plan = None

    def weights_key(self) -> tuple:
        key = super().weights_key()
        return self._aliases.get(key, key)

    @property
    def device(self) -> torch.device:
        module = self._plain if self._bridge is None else self._bridge.original_model
        return next(iter(module.parameters())).device

    @property
    def original(self) -> torch.nn.Module:
        """The Hugging Face model object (inside the bridge once booted): its configs."""
        return self._plain if self._bridge is None else self._bridge.original_model

    def rebuild_twin(self) -> None:
        """Rebuild the plain twin before its next use (after editing weights through ``.data``)."""
        if self._twins is not None:
            self._twins.rebuild()

    def refresh(self) -> None:
        super().refresh()
        self.rebuild_twin()

    def twin(self) -> torch.nn.Module | None:
        """The plain HF model for a forward without hooks, or None (then use the bridge)."""
        if not self.use_twin or self.foreign_hooks():
            return None
        if self._bridge is None:
            return self._plain
        if self._twins is None:
            self._twins = TwinCache(self._bridge)
        return self._twins.get()

    def prefix_state(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None
                     ) -> PrefixState | None:
        """KV caches of left-padded prefixes ``[C, width]`` on the plain twin, or None (no twin).

        Prefix sharing (:mod:`logitprobe.prefix`) runs only unhooked forwards.
        """
        with self.lock:
            twin = self.twin()
            return None if twin is None else run_prefix(twin, tokens, attention_mask)

    def forward_suffixes(self, state: PrefixState, index: torch.Tensor, tokens: torch.Tensor,
                         attention_mask: torch.Tensor | None, keep: int) -> torch.Tensor | None:
        """Logits of left-padded ``tokens``, row r after prefix ``index[r]``; None: no twin now."""
        with self.lock:
            twin = self.twin()
            return None if twin is None else run_suffixes(twin, state, index, tokens,
                                                           attention_mask, keep)

    def forward(self, tokens: torch.Tensor, *, attention_mask: torch.Tensor | None,
                keep: int, hooks: list[tuple[str, Callable]]) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
            kwargs["position_ids"] = _position_ids(attention_mask)
        if keep < tokens.shape[1]:
            kwargs["logits_to_keep"] = keep
        with self.lock:
            twin = None if hooks else self.twin()
            if twin is not None:  # nothing hooked: the plain model, same logits, less overhead
                logits = twin(tokens, use_cache=False, **kwargs).logits
            else:
                with own_hooks(self.model, hooks):
                    logits = self.model(tokens, **kwargs)
        return logits[:, logits.shape[1] - keep:]


class HookedTransformerBackend(_Watched):
    """A TransformerLens 3.x ``HookedTransformer`` (tested with 3.9.0: ``make test-tl3``).

    HookedTransformer derives left-padded positions from the attention mask
    itself and always computes every position's logits. Every forward gets an
    explicit mask, all ones when nothing is padded: without one, a model whose
    tokenizer pads on the left guesses the mask from the tokens and masks a
    prompt's leading tokens that equal the pad id (e.g. an ``<|endoftext|>``
    the prompt starts with), which silently changes every logit.
    No KV cache (generation re-runs the whole batch each step) and no logit lens.
    """

    kind = "hooked_transformer"

    def __init__(self, model: Any):
        self.model = model
        self.cfg = model.cfg
        self.vocab_size = int(model.cfg.d_vocab_out)
        self.n_ctx = getattr(model.cfg, "n_ctx", None)
        self.n_layers = int(model.cfg.n_layers)
        # The BOS policy of ``model.to_tokens`` / ``model(prompt)``: a Probe's
        # prepend_bos=None means this, so it sees the tokens the model's own calls see.
        self.default_prepend_bos = bool(getattr(model.cfg, "default_prepend_bos", True))
        self._watch(model)

    booted = True
    boot_keys = None  # never booted late
    original = None  # no Hugging Face model inside

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters())).device

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.model.parameters()

    def forward(self, tokens: torch.Tensor, *, attention_mask: torch.Tensor | None,
                keep: int, hooks: list[tuple[str, Callable]]) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens)
        with self.lock, own_hooks(self.model, hooks):
            logits = self.model(tokens, attention_mask=attention_mask)
        return logits[:, logits.shape[1] - keep:]


def _check_same_shape(plain: Any, booted: Any) -> None:
    """The bridge must agree with the Hugging Face config the probe was built from."""
    for field in ("d_vocab", "n_layers", "n_ctx"):
        want, got = getattr(plain, field), getattr(booted, field, None)
        if got != want:
            raise LogitProbeError(
                f"booting TransformerLens on {short(plain.model_name)} gave {field}={got!r}, "
                f"but the Hugging Face config says {want!r}; load it with a booted bridge instead: "
                "logitprobe.Probe(TransformerBridge.boot_transformers(...), tokenizer)")


def backend_for(model: Any) -> BridgeBackend | HookedTransformerBackend:
    """Pick the adapter for a TransformerLens model object (or a deferred boot from load())."""
    if isinstance(model, Deferred):
        return BridgeBackend(deferred=model)
    names = {cls.__name__ for cls in type(model).__mro__}
    if "TransformerBridge" in names:
        return BridgeBackend(model)
    if "HookedTransformer" in names:
        return HookedTransformerBackend(model)
    if isinstance(model, (str, os.PathLike)):
        shown = repr(str(model)) if len(str(model)) <= 60 else repr(str(model)[:57]) + "…"
        raise InvalidArgument(
            f"model={shown}: Probe wraps a model object you already hold; to load a model by "
            f"name or path use logitprobe.load({shown})")
    raise InvalidArgument(
        f"model=<{type(model).__name__} object>: Probe needs a TransformerLens TransformerBridge "
        "or HookedTransformer, or a Hugging Face causal LM (a transformers PreTrainedModel); "
        "load one by name or path with logitprobe.load(...)")
