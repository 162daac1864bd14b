"""Seeded text perturbations for invariance (INV) and directional (DIR) tests.

Each perturbation is a small pure function object: ``p(text, rng) -> text``,
where ``rng`` is a :class:`random.Random` the caller seeds; the same text and
seed always give the same result, and nothing else is read or changed. A
perturbation that does not apply to a text (no name to swap, no verb to negate)
returns it unchanged. Write your own as any callable with that signature (a
``name`` and a ``test_type`` attribute are used when present).

>>> import random
>>> Typo()("The capital of France is", random.Random(0))
'The capital of Frnace is'

:func:`perturb` applies perturbations to template cases; each perturbed case
keeps a link to its base case (``case.base``) so a test compares the two.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

from ._evidence import short
from .errors import InvalidArgument
from .templates import TEST_TYPES, TemplateCase

__all__ = ["ChangeCase", "Negate", "NeutralClause", "Punctuation", "SwapName", "Typo",
           "perturb", "BUILTIN"]

NEUTRAL_CLAUSES = ("Here is a simple fact.", "This is a short sentence.",
                   "It was a sunny day.", "Read the following.")
_WORD = re.compile(r"[A-Za-z]{4,}")


def _is_texts(values: Any) -> bool:
    return (not isinstance(values, (str, bytes)) and isinstance(values, Iterable))


@dataclass(frozen=True)
class SwapName:
    """Replace a name from ``names`` found in the text by another one of them (INV).

    >>> SwapName(("Mary", "John"))("Mary is here", random.Random(0))
    'John is here'
    """

    names: tuple[str, ...]
    name: str = "swap_name"
    test_type: str = "INV"

    def __post_init__(self) -> None:
        if not _is_texts(self.names) or len(set(self.names)) < 2 \
                or not all(isinstance(n, str) and n for n in self.names):
            raise InvalidArgument(f"names={short(self.names, 60)}: give at least two distinct "
                                  "names, e.g. SwapName(('Mary', 'John'))")
        object.__setattr__(self, "names", tuple(self.names))

    def __call__(self, text: str, rng: random.Random) -> str:
        found = [n for n in self.names if re.search(rf"\b{re.escape(n)}\b", text)]
        if not found:
            return text
        old = found[0]
        new = rng.choice([n for n in self.names if n != old])
        return re.sub(rf"\b{re.escape(old)}\b", new, text)


@dataclass(frozen=True)
class NeutralClause:
    """Put a neutral sentence before the text (INV): the answer should not change."""

    clauses: tuple[str, ...] = NEUTRAL_CLAUSES
    name: str = "neutral_clause"
    test_type: str = "INV"

    def __post_init__(self) -> None:
        if not _is_texts(self.clauses) or not self.clauses \
                or not all(isinstance(c, str) and c.strip() for c in self.clauses):
            raise InvalidArgument(f"clauses={short(self.clauses, 60)}: give a non-empty list "
                                  "of sentences")
        object.__setattr__(self, "clauses", tuple(self.clauses))

    def __call__(self, text: str, rng: random.Random) -> str:
        return f"{rng.choice(self.clauses).strip()} {text}"


@dataclass(frozen=True)
class Typo:
    """Swap two adjacent inner letters of one word of 4+ letters (INV).

    The first and last letters stay, as in the typos people make and read past.
    """

    name: str = "typo"
    test_type: str = "INV"

    def __call__(self, text: str, rng: random.Random) -> str:
        words = [m for m in _WORD.finditer(text)
                 if len(set(m.group()[1:-1])) > 1]  # inner letters that differ
        if not words:
            return text
        m = rng.choice(words)
        word = m.group()
        spots = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
        i = rng.choice(spots)
        word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        return text[:m.start()] + word + text[m.end():]


@dataclass(frozen=True)
class ChangeCase:
    """Change the letter case of the whole text: ``lower``, ``upper`` or ``title`` (INV)."""

    mode: str = "lower"
    name: str = "change_case"
    test_type: str = "INV"

    def __post_init__(self) -> None:
        if self.mode not in ("lower", "upper", "title"):
            raise InvalidArgument(f"mode={self.mode!r}: must be 'lower', 'upper' or 'title'")

    def __call__(self, text: str, rng: random.Random) -> str:
        return getattr(text, self.mode)()


@dataclass(frozen=True)
class Punctuation:
    """Remove one punctuation mark inside the text, or add a comma after a word if none (INV).

    The last character is left alone: it is where the next token is read.
    """

    name: str = "punctuation"
    test_type: str = "INV"

    def __call__(self, text: str, rng: random.Random) -> str:
        marks = [i for i, ch in enumerate(text[:-1]) if ch in ",;:!?."]
        if marks:
            i = rng.choice(marks)
            return text[:i] + text[i + 1:]
        spaces = [i for i, ch in enumerate(text[:-1]) if ch == " " and i > 0
                  and text[i - 1].isalnum()]
        if not spaces:
            return text
        i = rng.choice(spaces)
        return text[:i] + "," + text[i:]


_AUX = re.compile(r"\b(is|are|was|were|can|will|does|do|did|has|have|should|could|would)\b")


@dataclass(frozen=True)
class Negate:
    """Add ``not`` after the first auxiliary verb (is, was, can, does, ...): a DIR test.

    >>> Negate()("A cat is a kind of", random.Random(0))
    'A cat is not a kind of'
    """

    name: str = "negate"
    test_type: str = "DIR"

    def __call__(self, text: str, rng: random.Random) -> str:
        m = _AUX.search(text)
        if m is None or text[m.end():].startswith(" not"):
            return text
        return text[:m.end()] + " not" + text[m.end():]


BUILTIN: dict[str, Callable[..., Any]] = {
    "swap_name": SwapName, "neutral_clause": NeutralClause, "typo": Typo,
    "change_case": ChangeCase, "punctuation": Punctuation, "negate": Negate,
}


def perturb(cases: Sequence[TemplateCase] | TemplateCase,
            *perturbations: Callable[[str, random.Random], str], seed: int = 0,
            copies: int = 1) -> list[TemplateCase]:
    """Perturbed copies of ``cases``: ``copies`` per case and perturbation, each linked to its base.

    Copies whose text the perturbation left unchanged (nothing to apply it to)
    are dropped. Ids are ``<base id>~<perturbation name>`` (``~2``... for more
    copies); the test type is the perturbation's (``INV`` unless it says
    ``DIR``). Deterministic: the rng of each copy is seeded from ``seed``, the
    base id, the perturbation name and the copy number.

    >>> from logitprobe.templates import expand
    >>> base = expand("{name} is a doctor", lexicons={"name": ["Mary", "John"]})
    >>> [(c.id, c.prompt, c.base.id) for c in perturb(base, SwapName(("Mary", "John")))]
    [('Mary~swap_name', 'John is a doctor', 'Mary'), ('John~swap_name', 'Mary is a doctor', 'John')]
    """
    if isinstance(cases, TemplateCase):
        cases = [cases]
    if not perturbations:
        raise InvalidArgument("perturb(cases): give at least one perturbation, e.g. "
                              "perturb(cases, Typo(), NeutralClause())")
    for p in perturbations:
        if not callable(p):
            raise InvalidArgument(f"perturbation {short(repr(p), 60)} is not callable; give "
                                  "a function (text, rng) -> text such as Typo()")
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise InvalidArgument(f"copies={copies!r}: `copies` must be an int >= 1")
    out: list[TemplateCase] = []
    for case in cases:
        if not isinstance(case, TemplateCase):
            raise InvalidArgument(f"cases: {short(repr(case), 60)} is not a TemplateCase (make "
                                  "cases with logitprobe.templates.expand)")
        for p in perturbations:
            name = getattr(p, "name", None) or getattr(p, "__name__", "perturbed")
            test_type = getattr(p, "test_type", "INV")
            if test_type not in TEST_TYPES:
                test_type = "INV"
            seen = {case.prompt}
            for j in range(copies):
                rng = random.Random(f"{seed}:{case.id}:{name}:{j}")
                text = p(case.prompt, rng)
                if not isinstance(text, str):
                    raise InvalidArgument(f"perturbation {name!r} returned "
                                          f"{type(text).__name__}, not str")
                if text in seen:
                    continue
                seen.add(text)
                suffix = f"~{name}" + (f"~{j + 1}" if j else "")
                out.append(replace(case, id=case.id + suffix, prompt=text, base=case,
                                   perturbation=name, test_type=test_type))
    return out
