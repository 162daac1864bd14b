"""Logit warpers: small composable transforms of next-token logits.

Each one computes exactly what the Hugging Face logits processor of the same name
computes with its defaults (``filter_value=-inf``, ``min_tokens_to_keep=1``),
including ties and boundaries, so ``probabilities(logits, build_warpers(...))`` is
the distribution ``generate(do_sample=True, ...)`` samples from (HF casts logits to
float32 first; so does :func:`probabilities`).

The top-k warper is :class:`TopKWarper`, so that it is not mistaken for the top-k
candidate list a query returns (:class:`logitprobe.TopK`). Its old name here,
``logitprobe.warpers.TopK``, still works and warns (``DeprecationWarning``).

>>> chain = build_warpers(temperature=0.5, top_k=2)
>>> chain
Chain(Temperature(t=0.5), TopKWarper(k=2))
>>> chain(torch.tensor([1.0, 3.0, 2.0]))
tensor([-inf, 6., 4.])
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._deprecation import renamed
from ._finite import find_nonfinite
from .errors import EmptyDistributionError, InvalidArgument

__all__ = ["Chain", "Greedy", "MinP", "Temperature", "TopKWarper", "TopP", "Warper",
           "build_warpers", "probabilities", "sample_from"]

_NEG_INF = -float("inf")  # HF's default filter_value


# -- argument checks (shared by the classes and build_warpers, which name them differently) --
def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"<tensor shape={tuple(value.shape)} dtype={value.dtype}>"
    return repr(value)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


# kind -> (accepts, rule, suggested value)
_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "temperature": (lambda v: _real(v) and math.isfinite(v) and v > 0, "a finite number > 0",
                    "0.7; lower is greedier, and its limit 0 is Greedy() / do_sample=False"),
    "top_k": (_is_positive_int, "a positive int", "5"),
    "top_p": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]",
              "0.9; 1.0 keeps every token"),
    "min_p": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]",
              "0.05; 0 keeps every token"),
    "n": (_is_positive_int, "a positive int", "1"),
}


def _checked(kind: str, value: Any, name: str | None = None) -> Any:
    """``value`` as int/float if it obeys ``_RULES[kind]``; else an error naming ``name``."""
    name = name or kind
    accepts, rule, hint = _RULES[kind]
    if not accepts(value):
        off = f"; {name}=None turns it off" if name in ("top_k", "top_p", "min_p") else ""
        raise InvalidArgument(f"{name}={value!r}: `{name}` must be {rule} (try {name}={hint}{off})")
    return int(value) if kind in ("top_k", "n") else float(value)


def _check_logits(logits: Any, name: str = "logits", max_ndim: int | None = None) -> None:
    shape = "[vocab] or [batch, vocab]" if max_ndim == 2 else "[..., vocab] (e.g. [batch, vocab])"
    if not (isinstance(logits, Tensor) and logits.is_floating_point() and logits.ndim >= 1
            and logits.shape[-1] >= 1 and logits.ndim <= (max_ndim or logits.ndim)):
        raise InvalidArgument(
            f"{name}={_describe(logits)}: `{name}` must be a float tensor shaped {shape} with "
            "vocab >= 1 (call .float() on an int tensor)")


def _rows(logits: Tensor) -> Tensor:
    """(..., vocab) -> (rows, vocab): HF's 2-D layout, so 1-D input breaks ties as a batch of 1."""
    _check_logits(logits)
    return logits.reshape(-1, logits.shape[-1])


# -- the warpers ---------------------------------------------------------------------------
class Warper(abc.ABC):
    """A transform of logits shaped [..., vocab]; returns a new tensor, never edits its input."""

    _fields: tuple[str, ...] = ()

    @abc.abstractmethod
    def __call__(self, logits: Tensor) -> Tensor: ...

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]  # equal by value, but attributes can be rebound


class Temperature(Warper):
    """Divide logits by ``t`` (HF ``TemperatureLogitsWarper``): t < 1 sharpens, t > 1 flattens.

    >>> Temperature(0.5)(torch.tensor([1.0, 2.0]))
    tensor([2., 4.])
    """

    _fields = ("t",)

    def __init__(self, t: float) -> None:
        self.t = _checked("temperature", t, "t")

    def __call__(self, logits: Tensor) -> Tensor:
        _check_logits(logits)
        return logits / self.t


class TopKWarper(Warper):
    """Keep the ``k`` largest logits and every logit tied with the k-th (HF ``TopKLogitsWarper``).

    Formerly ``logitprobe.warpers.TopK`` (a deprecated alias now); :class:`logitprobe.TopK`
    is the top-k candidate list of a query.

    >>> TopKWarper(2)(torch.tensor([1.0, 3.0, 2.0, 2.0]))
    tensor([-inf, 3., 2., 2.])
    """

    _fields = ("k",)

    def __init__(self, k: int) -> None:
        self.k = _checked("top_k", k, "k")

    def __call__(self, logits: Tensor) -> Tensor:
        rows = _rows(logits)
        k = min(self.k, rows.shape[-1])  # k >= vocab keeps everything
        kth = torch.topk(rows, k)[0][..., -1, None]  # (rows, 1)
        return rows.masked_fill(rows < kth, _NEG_INF).reshape(logits.shape)


class TopP(Warper):
    """Keep the most likely tokens whose probabilities sum to ``p`` (HF ``TopPLogitsWarper``).

    >>> TopP(0.7)(torch.tensor([0.0, 1.0, 2.0]))
    tensor([-inf, 1., 2.])
    """

    _fields = ("p",)

    def __init__(self, p: float) -> None:
        self.p = _checked("top_p", p, "p")

    def __call__(self, logits: Tensor) -> Tensor:
        rows = _rows(logits)
        # HF's exact steps: ascending (unstable) sort, so exact ties break as in HF.
        sorted_logits, sorted_idx = torch.sort(rows, descending=False)  # (rows, vocab)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1 - self.p)
        drop_sorted[..., -1:] = False  # min_tokens_to_keep=1: the most likely token stays
        drop = drop_sorted.scatter(1, sorted_idx, drop_sorted)
        return rows.masked_fill(drop, _NEG_INF).reshape(logits.shape)


class MinP(Warper):
    """Drop tokens less likely than ``p`` times the top token's (HF ``MinPLogitsWarper``).

    >>> MinP(0.3)(torch.tensor([0.0, 2.0, 1.0]))
    tensor([-inf, 2., 1.])
    """

    _fields = ("p",)

    def __init__(self, p: float) -> None:
        self.p = _checked("min_p", p, "p")

    def __call__(self, logits: Tensor) -> Tensor:
        rows = _rows(logits)
        probs = torch.softmax(rows, dim=-1)
        drop = probs < self.p * probs.amax(dim=-1, keepdim=True)
        drop.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)  # fresh mask; keep 1 token
        return rows.masked_fill(drop, _NEG_INF).reshape(logits.shape)


class Greedy(Warper):
    """Keep only the argmax (the temperature -> 0 limit); exact ties keep the first, as ``argmax``.

    >>> Greedy()(torch.tensor([1.0, 3.0, 3.0]))
    tensor([-inf, 3., -inf])
    """

    def __call__(self, logits: Tensor) -> Tensor:
        _check_logits(logits)
        best = logits.argmax(dim=-1, keepdim=True)  # (..., 1)
        return torch.full_like(logits, _NEG_INF).scatter(-1, best, logits.gather(-1, best))


class Chain(Warper):
    """Apply warpers left to right; ``Chain()`` is the identity (it returns a copy).

    >>> Chain(Temperature(2.0), TopKWarper(1))(torch.tensor([2.0, 4.0]))
    tensor([-inf, 2.])
    """

    _fields = ("warpers",)

    def __init__(self, *warpers: Warper) -> None:
        for i, w in enumerate(warpers):
            if not isinstance(w, Warper):
                raise InvalidArgument(
                    f"warpers[{i}]={w!r}: each argument of Chain must be a Warper instance, "
                    "e.g. Chain(Temperature(0.7), TopKWarper(50)) (did you pass a class or a "
                    "number?)")
        self.warpers: tuple[Warper, ...] = tuple(warpers)

    def __call__(self, logits: Tensor) -> Tensor:
        _check_logits(logits)
        out = logits.clone() if not self.warpers else logits
        for warper in self.warpers:
            out = warper(out)
        return out

    def __repr__(self) -> str:
        return f"Chain({', '.join(map(repr, self.warpers))})"


def build_warpers(*, temperature: float | None = 1.0, top_k: int | None = None,
                  top_p: float | None = None, min_p: float | None = None,
                  do_sample: bool = True) -> Chain:
    """The warpers HF ``generate`` applies, in its order: temperature, top-k, top-p, min-p.

    No-ops are left out (temperature 1.0, top_p 1.0, min_p 0, None). With
    ``do_sample=False`` the chain is ``Chain(Greedy())`` (HF ignores warpers when not
    sampling); the other arguments are still checked.

    >>> build_warpers(temperature=0.7, top_p=0.9, min_p=0.0)
    Chain(Temperature(t=0.7), TopP(p=0.9))
    """
    if not isinstance(do_sample, bool):
        raise InvalidArgument(f"do_sample={do_sample!r}: `do_sample` must be True or False")
    chain: list[Warper] = []
    if temperature is not None and _checked("temperature", temperature) != 1.0:
        chain.append(Temperature(temperature))
    if top_k is not None:
        chain.append(TopKWarper(_checked("top_k", top_k)))
    if top_p is not None and _checked("top_p", top_p) < 1.0:
        chain.append(TopP(top_p))
    if min_p is not None and _checked("min_p", min_p) > 0.0:
        chain.append(MinP(min_p))
    return Chain(*chain) if do_sample else Chain(Greedy())


def probabilities(logits: Tensor, warpers: Warper | Iterable[Warper]) -> Tensor:
    """Softmax (float32) of the logits after the warpers; filtered tokens get probability 0.

    >>> probabilities(torch.tensor([0.0, 0.0, -1.0]), [TopKWarper(2)])
    tensor([0.5000, 0.5000, 0.0000])
    """
    _check_logits(logits)
    chain = warpers if isinstance(warpers, Warper) else Chain(*warpers)
    return _probabilities(logits, chain)


# Warpers that keep a finite row finite: they only set logits to -inf, and keep at least one.
_MASKING = (TopKWarper, TopP, MinP, Greedy)


def _probabilities(logits: Tensor, chain: Warper, *, finite: bool = False) -> Tensor:
    """:func:`probabilities` without the argument checks, for the generation loop.

    ``finite``: the caller has checked that every row of ``logits`` has a finite max.
    The check after the warpers is then skipped when none of them can break that (only
    a temperature can overflow float32), and an empty chain skips its copy, so the
    result is the same tensor with fewer passes over ``rows x vocab``.
    """
    x = logits.float()
    inner = chain.warpers if isinstance(chain, Chain) else (chain,)
    warped = chain(x) if inner else x  # softmax never writes its input
    if not (finite and all(type(w) in _MASKING for w in inner)):
        bad = find_nonfinite(warped.reshape(-1, 1, warped.shape[-1]))  # one reduction
        if bad is not None:
            raise _empty(bad.what, logits, chain)
    return warped.softmax(dim=-1)


def _empty(what: str, logits: Tensor, chain: Warper) -> EmptyDistributionError:
    """No distribution to sample from: say why (the input or a warper's overflow) and the fix."""
    before = find_nonfinite(logits.float().reshape(-1, 1, logits.shape[-1]))
    if before is not None:
        return EmptyDistributionError(
            f"logits={_describe(logits)}: some row has {_what(before.what)} before any warper, so "
            "it has no distribution to sample from; pass finite logits (-inf only for tokens "
            "that must never be drawn)")
    temps = [w for w in getattr(chain, "warpers", (chain,)) if isinstance(w, Temperature)]
    if temps:
        t = temps[0].t
        peak = float(logits.float().abs().max())
        return EmptyDistributionError(
            f"temperature={t!r}: logits / temperature overflows float32 (the largest |logit| is "
            f"{peak:.4g}), so after the warpers {chain!r} some row has {_what(what)} and no "
            f"distribution to sample from; use temperature >= {max(peak / 3e38, 1e-30):.1g} or "
            "do_sample=False for greedy decoding (the temperature -> 0 limit)")
    return EmptyDistributionError(
        f"warpers={chain!r}: after the warpers some row has {_what(what)}, so it has no "
        "distribution to sample from; check the warpers keep at least one finite logit")


def _what(what: str) -> str:
    return "no finite logit (all -inf)" if what == "no finite logit" else f"a {what} logit"


def sample_from(logits_2d: Tensor, generator: torch.Generator, n: int = 1) -> Tensor:
    """Draw ``n`` token ids per row from softmax(logits) with ``generator`` (global RNG untouched).

    Returns a LongTensor shaped [batch, n] (or [n] for 1-D logits); draws are with
    replacement. Warp first: ``sample_from(chain(logits), generator)``.

    >>> sample_from(torch.tensor([[0.0, -float("inf")]]), torch.Generator().manual_seed(0), n=3)
    tensor([[0, 0, 0]])
    """
    _check_logits(logits_2d, "logits_2d", max_ndim=2)
    if not isinstance(generator, torch.Generator):
        raise InvalidArgument(f"generator={generator!r}: `generator` must be a torch.Generator "
                              "(try generator=torch.Generator().manual_seed(0))")
    if generator.device.type != logits_2d.device.type:
        raise InvalidArgument(
            f"generator={generator!r}: the generator is on {generator.device} but the logits are "
            f"on {logits_2d.device} (try torch.Generator(device={str(logits_2d.device)!r}))")
    n = _checked("n", n)
    probs = logits_2d.float().softmax(dim=-1)
    if torch.isnan(probs).any():
        raise EmptyDistributionError(
            f"logits_2d={_describe(logits_2d)}: some row has no finite logit (all -inf or NaN), "
            "so it has no distribution to sample from; check the warpers keep at least one token")
    return torch.multinomial(probs, n, replacement=True, generator=generator)


_RENAMED = {"TopK": "TopKWarper"}  # old name -> new name; the old one warns on use


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return renamed(__name__, name, _RENAMED[name], globals()[_RENAMED[name]])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
