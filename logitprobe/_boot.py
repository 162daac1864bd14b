"""Boot a TransformerLens bridge on a Hugging Face model, now or when first needed.

Below both :mod:`logitprobe.loading` (which loads the model first) and
:mod:`logitprobe.probe` (``Probe(hf_model, tokenizer=...)`` boots a copy), so neither
imports the other back. TransformerLens itself is imported only when a bridge is booted.

:func:`defer` packs what a later boot needs (:class:`Boot`) with the plain model: the
probe answers unhooked queries with the plain model and boots the bridge only when a
hook, an intervention, the lens or ``probe.model`` needs it (a fresh process saves
importing TransformerLens and booting, about a second on two CPU cores).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

from ._quiet import quiet
from ._text import short
from .errors import ModelUnavailableError

__all__ = ["PLACEMENT", "Boot", "Deferred", "PlainConfig", "_boot_from_hf", "_bridge_class",
           "defer"]

# load() keywords that place the model's weights: applied when the Hugging Face model is
# loaded (from_pretrained), and refused by the bridge alongside hf_model=.
PLACEMENT = ("device_map", "max_memory", "n_devices", "offload_folder")


def _bridge_class() -> Any:
    from transformer_lens.model_bridge import TransformerBridge  # ~1-4 s: import lazily

    return TransformerBridge


def _boot_from_hf(hf_model: Any, tokenizer: Any, name: str, device: Any, dtype: Any,
                  bridge_kwargs: dict) -> tuple[Any, Any]:
    """Boot a bridge on ``hf_model`` (which it changes); return it with the HF tokenizer.

    The bridge gets its own copy of the tokenizer: TransformerLens normalises the
    tokenizer it is given (BOS, padding) and logitprobe tokenizes as Hugging Face does.
    """
    if device is not None and "device_map" not in bridge_kwargs:
        hf_model = hf_model.to(device)
    bridge_kwargs = {k: v for k, v in bridge_kwargs.items() if k not in PLACEMENT}
    with warnings.catch_warnings(), quiet():  # quiet: also for Probe(hf_model)
        warnings.simplefilter("ignore")
        bridge = _bridge_class().boot_transformers(
            name, hf_model=hf_model, tokenizer=copy.deepcopy(tokenizer), device=device,
            dtype=dtype, **bridge_kwargs)
    return bridge.eval(), tokenizer


@dataclass(frozen=True)
class Boot:
    """A bridge boot postponed: ``Boot(...)(hf_model)`` boots it as load() would have."""

    name: str
    tokenizer: Any
    device: Any
    dtype: Any
    bridge_kwargs: dict = field(default_factory=dict)

    def __call__(self, hf_model: Any) -> Any:
        try:
            return _boot_from_hf(hf_model, self.tokenizer, self.name, self.device, self.dtype,
                                 self.bridge_kwargs)[0]
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ModelUnavailableError(
                f"model={short(self.name)}: TransformerLens could not boot a TransformerBridge "
                f"on it ({type(exc).__name__}: {short(str(exc), 200)}). Hooks, interventions, "
                "the lens and probe.model need one; queries without them still work") from exc


@dataclass(frozen=True)
class Deferred:
    """A Hugging Face model whose bridge is booted when first needed (what a Probe wraps)."""

    plain: Any
    boot: Boot
    cfg: "PlainConfig"


@dataclass(frozen=True)
class PlainConfig:
    """The few TransformerLens ``cfg`` fields a probe reads, from the Hugging Face config.

    The bridge's own ``cfg`` replaces it at boot, which checks that they agree.
    """

    model_name: str
    d_vocab: int
    n_ctx: int | None
    n_layers: int
    n_heads: int
    n_key_value_heads: int | None
    d_model: int
    d_head: int
    dtype: Any

    @classmethod
    def of(cls, hf_model: Any, name: str) -> "PlainConfig":
        c = hf_model.config
        heads = int(c.num_attention_heads)
        d_model = int(c.hidden_size)
        n_ctx = getattr(c, "max_position_embeddings", None)
        return cls(model_name=name, d_vocab=int(c.vocab_size),
                   n_ctx=None if n_ctx is None else int(n_ctx),
                   n_layers=int(c.num_hidden_layers), n_heads=heads,
                   n_key_value_heads=getattr(c, "num_key_value_heads", None),
                   d_model=d_model, d_head=int(getattr(c, "head_dim", None) or d_model // heads),
                   dtype=next(iter(hf_model.parameters())).dtype)


def defer(hf_model: Any, tokenizer: Any, name: str, device: Any, dtype: Any,
          bridge_kwargs: dict) -> tuple[Any, Any]:
    """Like :func:`_boot_from_hf`, with the boot postponed: ``(Deferred | bridge, tokenizer)``.

    Booted now instead: a model given any bridge option (``n_ctx=``,
    ``hf_config_overrides=``, ... change what the bridge computes), a model spread over
    devices (``device_map=``, ``n_devices=``, or an accelerate-dispatched model: its
    patched forwards make the plain model unsuitable for the twin's role), and a model
    whose config lacks the usual fields (``num_attention_heads``, ...). The plain
    model runs eager attention, as the bridge makes it do (identical logits before and
    after the boot).
    """
    try:
        cfg = PlainConfig.of(hf_model, name)
    except (AttributeError, TypeError, ValueError, StopIteration):
        cfg = None  # a config without the usual fields: TransformerLens reads it at once
    given = {k: v for k, v in bridge_kwargs.items() if v is not None}
    if cfg is None or given or getattr(hf_model, "hf_device_map", None):
        return _boot_from_hf(hf_model, tokenizer, name, device, dtype, bridge_kwargs)
    if device is not None:
        hf_model = hf_model.to(device)
    if hasattr(hf_model, "set_attn_implementation"):
        hf_model.set_attn_implementation("eager")
    boot = Boot(name, tokenizer, device, dtype, dict(bridge_kwargs))
    return Deferred(hf_model.eval(), boot, cfg), tokenizer
