"""Boot a TransformerLens bridge on a Hugging Face model.

Below both :mod:`logitprobe.loading` (which loads the model first) and
:mod:`logitprobe.probe` (``Probe(hf_model, tokenizer=...)`` boots a copy), so neither
imports the other back. TransformerLens itself is imported only when a bridge is booted.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from ._quiet import quiet

__all__ = ["PLACEMENT", "_boot_from_hf", "_bridge_class"]

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
