"""A tiny, safe expression grammar for logit values: ``"max+10"``, ``"min"``, ``"mean-2"``.

Never ``eval``: the text is tokenized and parsed by hand into a small tree of
tuples, and evaluated with torch on each row of logits. The grammar::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("-" | "+") unary | atom
    atom   := NUMBER | NAME | "(" expr ")"
    NAME   := max | min | mean | std | logit

``max``/``min``/``mean``/``std`` are taken over the row's vocabulary; ``logit``
is the edited token's own current logit. Importing this module does not import torch.

Only finite values are written: a number beyond float32 (``"1e309"``, ``"1e39"``),
``inf``, a division by a constant zero (``"0/0"``, ``"max/0"``) or a constant part
that overflows (``"1e38*10"``) fails here, pointing at the column. A value that
overflows only on some row (``"max/std"`` on a uniform row) is caught after the
forward by the finite-logits check, which names the spec.

>>> Expression("max+10").names
frozenset({'max'})
"""

from __future__ import annotations

import math
import re
from typing import Any

from .._text import short
from ..errors import InvalidArgument

__all__ = ["NAMES", "Expression"]

NAMES = ("max", "min", "mean", "std", "logit")
MAX_LENGTH = 200  # bounds the recursion depth of the parser too
FLOAT32_MAX = 3.4028234663852886e38  # logits are float32 (or narrower)

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
                    r"|(?P<op>[-+*/()]))")
_HELP = ("an expression combines numbers and max, min, mean, std, logit with + - * / and "
         "parentheses, e.g. 'max+10' or 'mean-2*std'")


class Expression:
    """A parsed logit expression; ``expr(logits, current)`` evaluates it per row."""

    def __init__(self, text: str, *, name: str = "to"):
        if not isinstance(text, str):
            raise InvalidArgument(f"{name}={short(text, 80)}: an expression must be a str; "
                                  f"{_HELP}")
        if len(text) > MAX_LENGTH:
            raise InvalidArgument(f"{name}={text[:40]!r}…: the expression is {len(text)} "
                                  f"characters, more than {MAX_LENGTH}; {_HELP}")
        self.text = text
        self._name = name
        self._tokens = _tokenize(text, name)
        self._i = 0
        if not self._tokens:
            raise InvalidArgument(f"{name}={text!r}: the expression is empty; {_HELP}")
        self.tree = self._expr()
        if self._i < len(self._tokens):
            kind, value, col = self._tokens[self._i]
            self._fail(f"unexpected {value!r}", col)
        self.names = frozenset(_names(self.tree))

    # -- parser (recursive descent) ----------------------------------------------------
    def _peek(self) -> tuple[str, str, int] | None:
        return self._tokens[self._i] if self._i < len(self._tokens) else None

    def _fail(self, problem: str, col: int) -> None:
        raise InvalidArgument(f"{self._name}={self.text!r}: {problem} at column {col + 1}; {_HELP}")

    def _expr(self) -> tuple:
        node = self._term()
        while (tok := self._peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self._i += 1
            node = self._folded(("bin", tok[1], node, self._term()), tok[2])
        return node

    def _term(self) -> tuple:
        node = self._unary()
        while (tok := self._peek()) is not None and tok[1] in "*/" and tok[0] == "op":
            self._i += 1
            node = self._folded(("bin", tok[1], node, self._unary()), tok[2])
        return node

    def _folded(self, node: tuple, col: int) -> tuple:
        """``node``, with a constant part folded (float64) into one finite float32 number."""
        op, a, b = node[1], _constant(node[2]), _constant(node[3])
        if op == "/" and b == 0:
            self._fail("division by zero", col)
        if a is None or b is None:
            return node
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else math.inf}[op]
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            self._fail(f"{_fmt(a)} {op} {_fmt(b)} overflows float32 (|x| <= 3.4e38)", col)
        return ("num", value)

    def _unary(self) -> tuple:
        tok = self._peek()
        if tok is not None and tok[0] == "op" and tok[1] in "+-":
            self._i += 1
            inner = self._unary()
            if tok[1] == "+":
                return inner
            return ("num", -inner[1]) if inner[0] == "num" else ("neg", inner)
        return self._atom()

    def _atom(self) -> tuple:
        tok = self._peek()
        if tok is None:
            self._fail("the expression ends too early", len(self.text))
        kind, value, col = tok  # type: ignore[misc]
        self._i += 1
        if kind == "num":
            number = float(value)
            if number > FLOAT32_MAX:
                self._fail(f"the number {value} is not a finite float32 value (|x| <= 3.4e38)",
                           col)
            return ("num", number)
        if kind == "name":
            if value.lower() in ("inf", "infinity", "nan"):
                self._fail(f"{value!r} is not allowed: an expression gives a finite logit (to "
                           "make a token impossible use BanTokens, or to=float('-inf'))", col)
            if value not in NAMES:
                self._fail(f"unknown name {value!r} (known: {', '.join(NAMES)})", col)
            return ("var", value)
        if value == "(":
            node = self._expr()
            close = self._peek()
            if close is None or close[1] != ")":
                self._fail("missing ')'", close[2] if close else len(self.text))
            self._i += 1
            return node
        self._fail(f"expected a number, a name or '(' but got {value!r}", col)
        raise AssertionError("unreachable")

    # -- evaluation --------------------------------------------------------------------
    def __call__(self, logits: Any, current: Any) -> Any:
        """Value per row: ``logits`` is ``[..., vocab]``, ``current`` (and the result) ``[...]``."""
        import torch

        env: dict[str, torch.Tensor] = {}

        def var(name: str) -> torch.Tensor:
            if name not in env:
                if name == "logit":
                    env[name] = current
                elif name == "max":
                    env[name] = logits.max(dim=-1).values
                elif name == "min":
                    env[name] = logits.min(dim=-1).values
                elif name == "mean":
                    env[name] = logits.mean(dim=-1)
                else:
                    env[name] = logits.std(dim=-1)
            return env[name]

        def ev(node: tuple) -> Any:
            op = node[0]
            if op == "num":
                return node[1]
            if op == "var":
                return var(node[1])
            if op == "neg":
                return -ev(node[1])
            a, b = ev(node[2]), ev(node[3])
            if node[1] == "+":
                return a + b
            if node[1] == "-":
                return a - b
            if node[1] == "*":
                return a * b
            if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
                return torch.tensor(a, dtype=logits.dtype) / b  # x/0 is inf, as for tensors
            return a / b

        value = ev(self.tree)
        if not isinstance(value, torch.Tensor) or value.shape != current.shape:
            value = torch.as_tensor(value, dtype=logits.dtype, device=logits.device).expand(
                current.shape)
        return value.to(logits.dtype)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _tokenize(text: str, name: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise InvalidArgument(f"{name}={text!r}: unexpected character {text[col]!r} at "
                                  f"column {col + 1}; {_HELP}")
        kind = m.lastgroup or "op"
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


def _constant(node: tuple) -> float | None:
    """The value of a folded constant node, else None."""
    return node[1] if node[0] == "num" else None


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _names(node: tuple) -> list[str]:
    if node[0] == "var":
        return [node[1]]
    if node[0] == "neg":
        return _names(node[1])
    if node[0] == "bin":
        return _names(node[2]) + _names(node[3])
    return []
