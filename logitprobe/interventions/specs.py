"""Intervention specs: small frozen dataclasses that say what to edit, never how.

Logit edits act on the unembedding output (``unembed.hook_out``): :class:`SetLogit`,
:class:`AddLogit`, :class:`ScaleLogit`, :class:`BanTokens`. Activation edits act
on any TransformerLens hook point: :class:`ZeroAblate`, :class:`MeanAblate`,
:class:`Scale`, :class:`Steer`, :class:`Patch`.

Arguments that do not need the model (types, the expression grammar, position
selectors) are checked when a spec is made; hook names, head/neuron ranges,
vector widths and tokens are checked against the model when the spec is
compiled. Importing this module does not import torch.

>>> SetLogit(" coffee", to="max+10")
SetLogit(token=' coffee', to='max+10', positions='all')
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Union

from .._text import short
from ..errors import InvalidArgument
from .grammar import Expression

__all__ = [
    "AddLogit", "BanTokens", "LOGITS_HOOK", "Match", "MeanAblate", "Patch", "Scale", "ScaleLogit",
    "SetLogit", "Spec", "Steer", "TokenLogitEdit", "ZeroAblate", "is_stable",
]

LOGITS_HOOK = "unembed.hook_out"
TokenLike = Union[str, int]


@dataclass(frozen=True)
class Match:
    """Position selector: every position whose input token is ``token``."""

    token: TokenLike

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", _token(self.token, "positions={'token': ...}"))


Positions = Union[str, tuple, Match]


class Spec:
    """Base of every intervention spec: a frozen dataclass with a ``kind`` name."""

    kind: ClassVar[str] = ""
    hook: str
    positions: Positions

    @property
    def is_logit_edit(self) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML-ready) that :func:`from_dict` turns back into this spec."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in spec_fields(type(self)):
            value = getattr(self, f.name)
            if f.default is not MISSING and value == f.default:
                continue
            out[f.name] = _plain(value)
        return out


# -- argument checks (model-independent) -----------------------------------------------
def _where(spec: Any) -> str:
    return type(spec).__name__


FLOAT32_MAX = 3.4028234663852886e38  # logits and activations are float32 (or narrower)


def _number(value: Any, name: str, where: str, *, allow_neg_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{where}: {name}={short(value, 80)}: `{name}` must be a number")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float64
        value = math.inf if value > 0 else -math.inf
    if allow_neg_inf and value == -math.inf:
        return value
    if math.isnan(value) or abs(value) > FLOAT32_MAX:
        extra = " or -inf" if allow_neg_inf else ""
        raise InvalidArgument(f"{where}: {name}={_shown(value)}: `{name}` must be a finite number"
                              f"{extra} within float32 range (|{name}| <= 3.4e38): a larger "
                              "value becomes inf or NaN in the model's tensors")
    return value


def _shown(value: float) -> str:
    return repr(value) if math.isnan(value) or math.isinf(value) else f"{value:.6g}"


def _token(value: Any, where: str, name: str = "token") -> TokenLike:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgument(f"{where}: {name}={short(value, 80)}: "
                              f"`{name}` must be a token string "
                              "(e.g. ' coffee') or an int id")
    if isinstance(value, str) and value == "":
        raise InvalidArgument(f"{where}: {name}='': the empty string is not a token; give one "
                              "such as ' coffee' (note the leading space)")
    if isinstance(value, int) and value < 0:
        raise InvalidArgument(f"{where}: {name}={short(value, 80)}: token ids are >= 0")
    return value


def _positions(value: Any, where: str) -> Positions:
    if isinstance(value, str):
        if value in ("all", "last"):
            return value
        raise InvalidArgument(f"{where}: positions={short(value, 80)}: "
                              f"use 'all', 'last', an index, a list "
                              "of indices or {'token': ' milk'}")
    if isinstance(value, Match):
        return value
    if isinstance(value, dict):
        if set(value) != {"token"}:
            raise InvalidArgument(f"{where}: positions={short(value, 80)}: "
                                  f"a token match is written "
                                  "{'token': ' milk'} (one key, 'token')")
        return Match(value["token"])
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (list, tuple)) and value:
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgument(f"{where}: positions={short(value, 80)}: "
                                      f"every index must be an int "
                                      "(0 is the first token, -1 the last)")
        return tuple(value)
    raise InvalidArgument(f"{where}: positions={short(value, 80)}: use 'all', 'last', an index, a "
                          "non-empty list of indices or {'token': ' milk'}")


def is_stable(positions: Positions) -> bool:
    """Whether the selected positions of a prefix stay selected as the sequence grows.

    'last' and negative indices move with the end of the sequence; a KV cache
    cannot un-apply an edit made to a position that was last one step earlier.
    """
    if positions == "last":
        return False
    if isinstance(positions, tuple):
        return all(p >= 0 for p in positions)
    return True


def _indices(value: Any, name: str, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return tuple(value)
    raise InvalidArgument(f"{where}: {name}={short(value, 80)}: "
                          f"`{name}` must be None (all), an index or "
                          f"a non-empty list of indices >= 0, e.g. {name}=[0, 3]")


def _hook(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{where}: hook={short(value, 80)}: "
                              f"`hook` must be a hook point name such "
                              "as 'blocks.3.hook_resid_pre' (see probe.model.hook_dict)")
    return value


def _prompt(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{where}: {name}={short(value, 80)}: "
                              f"`{name}` must be a non-empty prompt str")
    return value


# -- logit edits -----------------------------------------------------------------------
class _LogitEdit(Spec):
    @property
    def is_logit_edit(self) -> bool:
        return True


class TokenLogitEdit(_LogitEdit):
    """Base of the edits of one token's logit: SetLogit, AddLogit, ScaleLogit."""

    token: TokenLike


@dataclass(frozen=True)
class SetLogit(TokenLogitEdit):
    """Set ``token``'s logit to a number or an expression of the row (``"max+10"``)."""

    kind: ClassVar[str] = "set_logit"
    token: TokenLike
    to: Union[float, str]
    positions: Positions = "all"

    def __post_init__(self) -> None:
        w = _where(self)
        object.__setattr__(self, "token", _token(self.token, w))
        if isinstance(self.to, str):
            Expression(self.to, name=f"{w}: to")
        else:
            object.__setattr__(self, "to", _number(self.to, "to", w, allow_neg_inf=True))
        object.__setattr__(self, "positions", _positions(self.positions, w))


@dataclass(frozen=True)
class AddLogit(TokenLogitEdit):
    """Add ``amount`` to ``token``'s logit."""

    kind: ClassVar[str] = "add_logit"
    token: TokenLike
    amount: float
    positions: Positions = "all"

    def __post_init__(self) -> None:
        w = _where(self)
        object.__setattr__(self, "token", _token(self.token, w))
        object.__setattr__(self, "amount", _number(self.amount, "amount", w))
        object.__setattr__(self, "positions", _positions(self.positions, w))


@dataclass(frozen=True)
class ScaleLogit(TokenLogitEdit):
    """Multiply ``token``'s logit by ``factor``."""

    kind: ClassVar[str] = "scale_logit"
    token: TokenLike
    factor: float
    positions: Positions = "all"

    def __post_init__(self) -> None:
        w = _where(self)
        object.__setattr__(self, "token", _token(self.token, w))
        object.__setattr__(self, "factor", _number(self.factor, "factor", w))
        object.__setattr__(self, "positions", _positions(self.positions, w))


@dataclass(frozen=True)
class BanTokens(_LogitEdit):
    """Set the logits of ``tokens`` to -inf: the model can never predict them."""

    kind: ClassVar[str] = "ban_tokens"
    tokens: tuple
    positions: Positions = "all"

    def __post_init__(self) -> None:
        w = _where(self)
        toks = self.tokens
        if isinstance(toks, (str, int)) and not isinstance(toks, bool):
            toks = (toks,)
        if not isinstance(toks, (list, tuple)) or not toks:
            raise InvalidArgument(f"{w}: tokens={short(self.tokens, 80)}: "
                                  f"`tokens` must be a token or a "
                                  "non-empty list of tokens, e.g. [' coffee', ' tea']")
        object.__setattr__(self, "tokens", tuple(_token(t, w, f"tokens[{i}]")
                                                 for i, t in enumerate(toks)))
        object.__setattr__(self, "positions", _positions(self.positions, w))


# -- activation edits ------------------------------------------------------------------
class _ActivationEdit(Spec):
    def _check_common(self) -> None:
        w = _where(self)
        object.__setattr__(self, "hook", _hook(self.hook, w))
        object.__setattr__(self, "positions", _positions(self.positions, w))
        for name in ("heads", "neurons"):
            if hasattr(self, name):
                object.__setattr__(self, name, _indices(getattr(self, name), name, w))


@dataclass(frozen=True)
class ZeroAblate(_ActivationEdit):
    """Replace the activation (or some heads / neurons / positions of it) by zeros."""

    kind: ClassVar[str] = "zero_ablate"
    hook: str
    positions: Positions = "all"
    heads: tuple | None = None
    neurons: tuple | None = None

    def __post_init__(self) -> None:
        self._check_common()


@dataclass(frozen=True)
class MeanAblate(_ActivationEdit):
    """Replace the activation by its mean over every token of the ``reference`` prompts."""

    kind: ClassVar[str] = "mean_ablate"
    hook: str
    reference: tuple
    positions: Positions = "all"
    heads: tuple | None = None
    neurons: tuple | None = None

    def __post_init__(self) -> None:
        self._check_common()
        ref = self.reference
        if isinstance(ref, str):
            ref = (ref,)
        if not isinstance(ref, (list, tuple)) or not ref:
            raise InvalidArgument(f"MeanAblate: reference={self.reference!r}: give a non-empty "
                                  "list of prompts to average over")
        object.__setattr__(self, "reference", tuple(
            _prompt(p, f"reference[{i}]", "MeanAblate") for i, p in enumerate(ref)))


@dataclass(frozen=True)
class Scale(_ActivationEdit):
    """Multiply the activation (or some heads / neurons / positions of it) by ``factor``."""

    kind: ClassVar[str] = "scale"
    hook: str
    factor: float
    positions: Positions = "all"
    heads: tuple | None = None
    neurons: tuple | None = None

    def __post_init__(self) -> None:
        self._check_common()
        object.__setattr__(self, "factor", _number(self.factor, "factor", "Scale"))


@dataclass(frozen=True)
class Steer(_ActivationEdit):
    """Add ``coefficient * vector`` to the activation.

    The vector is given (one value per feature of the hook), or built from two
    prompts: activation(``positive``) - activation(``negative``) at their last tokens.
    """

    kind: ClassVar[str] = "steer"
    hook: str
    coefficient: float = 1.0
    vector: tuple | None = None
    positive: str | None = None
    negative: str | None = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        self._check_common()
        object.__setattr__(self, "coefficient", _number(self.coefficient, "coefficient", "Steer"))
        pair = (self.positive, self.negative)
        if self.vector is not None:
            if pair != (None, None):
                raise InvalidArgument("Steer: give either vector=... or positive=/negative= "
                                      "prompts, not both")
            vec = self.vector
            if hasattr(vec, "tolist"):  # a tensor or an array
                vec = vec.tolist()
            if not isinstance(vec, (list, tuple)) or not vec:
                raise InvalidArgument(f"Steer: vector of type {type(self.vector).__name__}: "
                                      "`vector` must be a non-empty list of numbers")
            object.__setattr__(self, "vector", tuple(
                _number(v, f"vector[{i}]", "Steer") for i, v in enumerate(vec)))
        elif None in pair:
            raise InvalidArgument(f"Steer: positive={self.positive!r}, negative={self.negative!r}: "
                                  "give vector=[...] or both positive= and negative= prompts")
        else:
            _prompt(self.positive, "positive", "Steer")
            _prompt(self.negative, "negative", "Steer")


@dataclass(frozen=True)
class Patch(_ActivationEdit):
    """Activation patching: copy the activation a ``source`` prompt has at the same positions.

    Positions are matched by absolute index ('all', indices >= 0, token matches)
    or from the end ('last', negative indices); a position the source does not
    have is left alone.
    """

    kind: ClassVar[str] = "patch"
    hook: str
    source: str
    positions: Positions = "all"
    heads: tuple | None = None
    neurons: tuple | None = None

    def __post_init__(self) -> None:
        self._check_common()
        object.__setattr__(self, "source", _prompt(self.source, "source", "Patch"))


SPEC_TYPES: dict[str, type] = {cls.kind: cls for cls in (
    SetLogit, AddLogit, ScaleLogit, BanTokens, ZeroAblate, MeanAblate, Scale, Steer, Patch)}


def spec_fields(cls: type) -> list[Any]:
    return [f for f in fields(cls) if f.init]


def _plain(value: Any) -> Any:
    """A field value as plain data: a :class:`Match` as ``{"token": ...}``, tuples as lists."""
    if isinstance(value, Match):
        return {"token": value.token}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value

