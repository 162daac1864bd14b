"""Which model answered: a probe's weights fingerprint, dtype, device and its label in reports.

Snapshots store it (:mod:`logitprobe.snapshots`) to refuse comparing against other
weights; a model comparison (:mod:`logitprobe.model_diff`) labels its two sides with it.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from weakref import WeakKeyDictionary

import torch

from ._text import clip
from .errors import InvalidArgument
from .interventions.serialize import coerce

__all__ = ["SAMPLES", "SCHEMES", "dtype_name", "fingerprint", "fingerprint_like",
           "library_versions", "provenance", "side_label", "side_labels"]

SAMPLES = 64  # strided samples per parameter tensor in the fingerprint
SCHEMES = ("sg2", "sg1")  # the current one first
_FINGERPRINTS: WeakKeyDictionary = WeakKeyDictionary()


def fingerprint(probe: Any, scheme: str = "sg2") -> str:
    """A cheap fingerprint of the model's weights, the same in every dtype and on every device.

    SHA-256 over each parameter tensor's shape and the **signs** of ``SAMPLES`` (64)
    evenly strided entries (|w| < 1e-6 counts as 0), in parameter order.
    Signs survive float32 -> bfloat16/float16 casts and device moves, while other
    weights (another checkpoint, a fine-tune, a zeroed layer) change many of them.
    Cached per probe (weights edited in place afterwards are not noticed).

    ``scheme``: ``"sg2"`` (the default) reads the Hugging Face model's parameters
    (``probe.backend.parameters()``: the same before and after a deferred bridge
    boots, and no boot needed) and skips tensors whose samples are all zero;
    ``"sg1"``, what snapshots written before deferred booting hold, reads the
    bridge's parameters (and boots it).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}: one of {', '.join(SCHEMES)}")
    cached = _FINGERPRINTS.get(probe, {}).get(scheme)
    if cached is not None:
        return cached
    params = probe.backend.parameters() if scheme == "sg2" else probe.model.parameters()
    h = hashlib.sha256()
    with torch.no_grad():
        for p in params:
            if p.is_meta or p.numel() == 0:
                h.update(repr(tuple(p.shape)).encode())
                continue
            flat = p.detach().reshape(-1)
            n, m = flat.numel(), min(SAMPLES, flat.numel())
            # integer strides (a float linspace rounds past the end of a 28M-entry embedding)
            idx = torch.arange(m, device=flat.device) * (n - 1) // max(m - 1, 1)
            s = flat[idx].float()
            signs = (s > 1e-6).to(torch.int8) - (s < -1e-6).to(torch.int8)
            if scheme == "sg2" and not bool(signs.any()):
                continue  # zeros say nothing (and the bridge adds a zero bias to GPT-2's head)
            h.update(repr(tuple(p.shape)).encode())
            h.update(bytes((signs + 1).cpu().tolist()))
    value = f"{scheme}:" + h.hexdigest()[:16]
    _FINGERPRINTS.setdefault(probe, {})[scheme] = value
    return value


def fingerprint_like(probe: Any, stored: str) -> str:
    """This probe's fingerprint in the scheme of a ``stored`` one (``"sg1:..."``)."""
    scheme = stored.split(":", 1)[0]
    return fingerprint(probe, scheme if scheme in SCHEMES else "sg2")


def dtype_name(probe: Any) -> str | None:
    """The dtype of the probe's first parameter (``"float32"``), None when it has none."""
    try:
        return str(next(iter(probe.backend.parameters())).dtype).replace("torch.", "")
    except (AttributeError, StopIteration, TypeError):
        return None


def provenance(probe: Any) -> dict[str, str]:
    """``{model, fingerprint, dtype, device}`` of a probe (device: its type, e.g. ``cpu``)."""
    return {"model": str(probe.name), "fingerprint": fingerprint(probe),
            "dtype": dtype_name(probe) or "float32", "device": torch.device(probe.device).type}


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("logitprobe", "torch", "transformers", "transformer-lens"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def side_label(probe: Any, interventions: Any = None) -> str:
    """``name (dtype)``, plus `` + <spec kinds>`` with interventions: one side of a comparison."""
    name = str(getattr(probe, "name", type(probe).__name__))
    dtype = dtype_name(probe)
    name = f"{name} ({dtype})" if dtype else name
    if interventions:
        kinds = ", ".join(type(s).__name__ for s in coerce(interventions))
        name += f" + {kinds}"
    return name


def side_labels(given: Any, baseline: Any, candidate: Any, b_iv: Any, c_iv: Any) -> tuple[str, str]:
    """The two sides' labels: ``given`` (the user's ``labels=``, checked), else :func:`side_label`."""
    if given is None:
        return side_label(baseline, b_iv), side_label(candidate, c_iv)
    if (not isinstance(given, (tuple, list)) or len(given) != 2
            or not all(isinstance(x, str) for x in given)):
        raise InvalidArgument(f"labels={clip(repr(given), 60)}: `labels` must be two "
                              "strings, (baseline, candidate), e.g. ('float32', 'bfloat16')")
    return given[0], given[1]
