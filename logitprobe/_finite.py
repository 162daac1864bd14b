"""Finite-logits guarantee: find NaN / +inf / all -inf rows cheaply, and name who made them.

Every forward's kept logits pass one check, :func:`find_nonfinite`: the max over
the vocabulary (one reduction; NaN propagates through ``amax``) must be finite for
every position a caller reads. ``-inf`` entries are fine (banned tokens); a row
whose max is NaN (a NaN somewhere), +inf, or -inf (every token banned) is not.

Only when the check fails is more work done (:func:`explain`): the forward is
re-run with no intervention, then with the first 1, 2, ... specs, and the first
run that fails names the culprit, so the hot path pays nothing for attribution.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import torch

from ._text import short
from .errors import NonFiniteLogitsError

__all__ = ["Bad", "explain", "find_nonfinite"]


class Bad(NamedTuple):
    row: int  # row of the batch
    column: int  # index among that row's kept positions
    what: str  # 'NaN', '+inf' or 'no finite logit'


def find_nonfinite(logits: torch.Tensor, keeps: Sequence[int] | None = None, *,
                   best: torch.Tensor | None = None) -> Bad | None:
    """The first bad position of ``logits`` (``Float[Tensor, "batch keep vocab"]``), or None.

    ``keeps[i]`` is how many trailing positions row ``i`` really uses (the others
    may be padding, whose logits nobody reads); None means all of them.
    ``best``: ``logits.amax(dim=-1)`` when the caller already has it (it reuses the
    max elsewhere, e.g. for a logsumexp), so the check costs no pass of its own.
    """
    if best is None:  # (B, keep): NaN if any NaN, +inf if any +inf, -inf if all -inf
        best = logits.amax(dim=-1)
    ok = torch.isfinite(best)
    if keeps is not None and min(keeps) < best.shape[1]:
        cols = torch.arange(best.shape[1], device=best.device)[None, :]
        ok = ok | (cols < best.shape[1] - torch.tensor(list(keeps), device=best.device)[:, None])
    if bool(ok.all()):
        return None
    row, col = (int(i) for i in (~ok).nonzero()[0])
    value = float(best[row, col])
    what = "NaN" if value != value else "+inf" if value > 0 else "no finite logit"
    return Bad(row, col, what)


def _prefixes(intervention: Any) -> list[tuple[Any, Any]]:
    """``(spec, the intervention cut after that spec)`` for each spec, in order."""
    plans = getattr(intervention, "plans", None)
    if not plans:
        return []
    return [(p.spec, type(intervention)(plans[:i + 1])) for i, p in enumerate(plans)]


def culprit(intervention: Any, fails: Callable[[Any], bool]) -> str:
    """Who produced the bad logits: re-run without, then with growing prefixes of the specs."""
    if intervention is None:
        return ("the model itself (no intervention was applied; hooks attached to probe.model "
                "directly count as the model)")
    plans = getattr(intervention, "plans", ())
    fired = [p.fired for p in plans]
    try:
        if fails(None):
            return "the model itself (its logits are not finite without the interventions too)"
        prefixes = _prefixes(intervention)
        for i, (spec, cut) in enumerate(prefixes):
            if fails(cut):
                return f"{short(spec, 160)} (intervention {i + 1} of {len(prefixes)})"
    finally:
        for p, n in zip(plans, fired):  # diagnosis runs do not count as fired
            p.fired = n
    return f"the interventions {short(intervention, 160)} together"


def explain(bad: Bad, *, position: int, n_tokens: int, prompt: str | None, intervention: Any,
            fails: Callable[[Any], bool]) -> NonFiniteLogitsError:
    """The error for ``bad`` at 0-based ``position`` of an ``n_tokens``-token sequence."""
    who = culprit(intervention, fails)
    text = short(prompt, 80) if prompt is not None else "the prompt"
    where = f"at position {position} of {text} ({n_tokens} tokens)"
    if bad.what == "no finite logit":
        found = "have no finite value: every token's logit is -inf (every token is banned)"
        fix = "ban fewer tokens: at least one must stay possible"
    else:
        found = f"contain {bad.what}"
        fix = ("a logit must be a finite number (or -inf for a banned token): check the spec's "
               "values (a division by zero, or a factor, coefficient or amount so large that "
               "float32 overflows)")
        if who.startswith("the model itself"):
            fix = ("check the weights (an edit that wrote NaN or inf?) and the dtype (float16 "
                   "overflows above 65504; try dtype=torch.float32)")
    return NonFiniteLogitsError(f"the logits {where} {found}; produced by {who}. Fix: {fix}")
