"""KL divergence, total variation and entropy of next-token distributions: the one copy.

Each takes log-probabilities (``log_softmax`` of the logits, last axis the vocabulary)
and computes in float64, so a sum over 50k tokens does not lose the small terms.
``0 * log 0 = 0``; where ``p > 0`` but ``q`` underflowed to ``-inf``, KL is ``inf``.

>>> import torch
>>> lp = torch.log(torch.tensor([0.5, 0.5, 0.0]))
>>> lq = torch.log(torch.tensor([0.25, 0.25, 0.5]))
>>> round(kl(lp, lq), 6), round(total_variation(lp, lq), 6), round(entropy(lp), 6)
(0.693147, 0.5, 0.693147)
"""

from __future__ import annotations

import torch

__all__ = ["entropy", "kl", "total_variation"]


def kl(lp: torch.Tensor, lq: torch.Tensor) -> float:
    """``KL(p || q) = sum p * (log p - log q)`` in nats."""
    lp, lq = lp.double(), lq.double()
    p = lp.exp()
    return float(torch.where(p > 0, p * (lp - lq), torch.zeros_like(p)).sum())


def total_variation(lp: torch.Tensor, lq: torch.Tensor) -> float:
    """``0.5 * sum |p - q|``, between 0 and 1."""
    return float(0.5 * (lp.double().exp() - lq.double().exp()).abs().sum())


def entropy(lp: torch.Tensor) -> float:
    """Shannon entropy ``-sum p log p`` in nats."""
    lp = lp.double()
    p = lp.exp()
    return float(-torch.where(p > 0, p * lp, torch.zeros_like(lp)).sum())
