"""Counter-based random numbers: the draw for (seed, sample, step) is a pure function.

Why not ``torch.Generator``: a generator's stream depends on how many numbers were
drawn before and on the device, so "the same samples drawn later" would depend
on batch composition. Here the ``t``-th uniform of sample ``i`` of ``prompt`` is

    base = splitmix64(splitmix64(seed + G) + blake2b64(prompt))
    u    = splitmix64(splitmix64(base + (i + 1) G) + (t + 1) G) >> 11, / 2**53

(64-bit wrapping arithmetic, G the golden-ratio constant), so:

- the same (seed, prompt, sample index, step) always gives the same number, on
  any device and in any batch, without touching torch's global RNG;
- ``sample(p, n=10, seed=s)[:5] == sample(p, n=5, seed=s)``, and a generation's
  row i depends only on (seed, prompt, i), not on what ran beside it;
- different prompts get independent streams, while the same prompt with and
  without an intervention shares its stream (common random numbers: their
  samples differ only where the intervention changed the distribution).

splitmix64 (Steele, Lea & Flood 2014) is the seeding mixer of the xoshiro
family; it passes BigCrush as a counter-mode generator.
"""

from __future__ import annotations

import hashlib
import operator
import secrets
from typing import Any

import torch

from .errors import InvalidArgument

__all__ = ["check_seed", "draw", "fresh_seed", "row_keys", "stream_base", "uniforms"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def _signed(c: int) -> int:
    c &= _MASK
    return c - (1 << 64) if c >= 1 << 63 else c


def mix64(z: int) -> int:
    """splitmix64's finalizer on a Python int (the reference for the tensor version)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _C1) & _MASK
    z = ((z ^ (z >> 27)) * _C2) & _MASK
    return z ^ (z >> 31)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    # Logical right shift on int64 (>> is arithmetic for negative values).
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    # int64 multiplication wraps modulo 2**64, which is what splitmix64 needs;
    # tests/test_sampling.py checks this against the Python-int reference.
    z = (z ^ _srl(z, 30)) * _signed(_C1)
    z = (z ^ _srl(z, 27)) * _signed(_C2)
    return z ^ _srl(z, 31)


def check_seed(seed: Any) -> int:
    """A seed is any int (taken modulo 2**64); ``None`` is handled by the caller."""
    if isinstance(seed, bool):
        raise InvalidArgument(f"seed={seed!r}: `seed` must be an int (e.g. seed=0) or None")
    try:
        return operator.index(seed) & _MASK
    except TypeError:
        raise InvalidArgument(f"seed={seed!r}: `seed` must be an int (e.g. seed=0) or None, "
                              f"not {type(seed).__name__}") from None


def fresh_seed() -> int:
    """A random seed from the OS (torch's global RNG is left alone)."""
    return secrets.randbits(63)


def stream_base(seed: int, prompt: str) -> int:
    """The key of (seed, prompt): samples of different prompts are independent."""
    digest = hashlib.blake2b(prompt.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return mix64(mix64(seed + _GOLDEN) + int.from_bytes(digest, "little"))


def row_keys(base: int, indices: torch.Tensor) -> torch.Tensor:
    """Per-sample keys ``Long[Tensor, "rows"]`` for sample indices (0-based) of one stream."""
    base = _signed(base)
    idx = indices.to(torch.int64) + 1
    return _mix(base + idx * _signed(_GOLDEN))


def uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """The ``step``-th uniform in [0, 1) of each row: ``Float64[Tensor, "rows"]``."""
    z = _mix(keys + _signed((step + 1) * _GOLDEN))
    return _srl(z, 11).to(torch.float64) * (1.0 / (1 << 53))


def draw(probs: torch.Tensor, u: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF sampling: the first id whose cumulative probability exceeds ``u * total``.

    ``probs`` is ``Float[Tensor, "rows vocab"]`` with one uniform per row, or
    ``Float[Tensor, "vocab"]`` with any number of uniforms (one CDF for all of them).
    Rows need not sum to 1; tokens of probability 0 are never drawn.
    ``out``: a float64 tensor shaped like ``probs`` to hold the CDF (overwritten), so a
    loop drawing every step reuses one buffer instead of faulting in fresh pages each
    time; the CDF and the draws are the same bits either way.
    Returns ``Long[Tensor, "rows"]`` (or ``"n"``).
    """
    if out is None:
        cdf = probs.to(torch.float64).cumsum(-1)  # non-decreasing: flat where p = 0
    else:
        cdf = out.copy_(probs).cumsum_(-1)
    total = cdf[..., -1:]
    x = u.to(cdf.device, torch.float64).reshape(*probs.shape[:-1], -1) * total
    # u < 1, but u * total may round up to total: keep x strictly below it.
    x = torch.minimum(x, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, x, right=True).reshape(-1)
