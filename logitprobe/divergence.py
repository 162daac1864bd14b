"""Distances between next-token distributions, in float64: KL both ways, total variation, entropy.

One place for these formulas, written once: the model comparison
(:mod:`logitprobe.model_diff`) and the snapshots (:mod:`logitprobe.snapshots`)
use them, and they are checked against ``torch.nn.functional.kl_div`` in the tests.

Every function takes **logits or log-probabilities** over the last axis
(``Float[Tensor, "... vocab"]``, any float dtype) and first normalizes them in
float64 (``x - logsumexp(x)``), so logits and log-probabilities give the same
answer and a float32 or bfloat16 input loses nothing more. The result has the
input's leading shape (a 0-d tensor for one distribution).

Conventions: ``0 * log 0 = 0``; where ``p > 0`` and ``q = 0`` (a token banned
in ``q``), ``KL(p || q) = inf``, as it should be.

>>> import torch
>>> p = torch.tensor([0.0, 0.0]); q = torch.tensor([0.0, float("-inf")])
>>> float(kl(p, q)), float(total_variation(p, q)), round(float(entropy(p)), 4)
(inf, 0.5, 0.6931)
"""

from __future__ import annotations

import torch

__all__ = ["entropy", "kl", "log_probs", "total_variation"]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``logits - logsumexp(logits)`` over the last axis, in float64."""
    x = logits.detach().to(torch.float64)
    return x - torch.logsumexp(x, dim=-1, keepdim=True)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum p * (log p - log q)`` in nats (``p`` is the reference)."""
    lp, lq = log_probs(p), log_probs(q)
    pp = lp.exp()
    # where p = 0 the term is 0, even when q = 0 too (-inf - -inf would be nan)
    terms = torch.where(pp > 0, pp * (lp - lq), torch.zeros_like(pp))
    return terms.sum(-1)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum |p - q|``, in [0, 1] (clamped: disjoint supports can round to 1 + 1e-15)."""
    return (0.5 * (log_probs(p).exp() - log_probs(q).exp()).abs().sum(-1)).clamp(max=1.0)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``-sum p log p`` in nats."""
    lp = log_probs(p)
    pp = lp.exp()
    return -torch.where(pp > 0, pp * lp, torch.zeros_like(pp)).sum(-1)
