"""Case templates and lexicons: many behavioural cases from one prompt with placeholders.

A template such as ``"{name} said the capital of {country} is"`` expands over
lexicons (every combination: names x countries) and/or rows (values that go
together: a country and its capital). Each expanded :class:`TemplateCase`
keeps its row, so the expected token comes from the data::

    >>> cases = expand("The capital of {country} is",
    ...                rows=[{"country": "France", "capital": " Paris"},
    ...                      {"country": "Japan", "capital": " Tokyo"}])
    >>> [(c.id, c.prompt, c["capital"]) for c in cases]
    [('France', 'The capital of France is', ' Paris'), ('Japan', 'The capital of Japan is', ' Tokyo')]

With ``@pytest.mark.parametrize("case", cases)`` each test is named by the
case's id (``test_capital[France]``), and the plugin computes the forwards of
every such test together before the first runs (one batched pass). Perturbed
copies (:func:`logitprobe.perturbations.perturb`) keep a link to their ``base`` case.
YAML test files take the same template as an entry (see
docs/behavioural-tests.md).
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ._evidence import short
from .errors import InvalidArgument

__all__ = ["TEST_TYPES", "TemplateCase", "expand", "placeholders"]

TEST_TYPES = ("MFT", "INV", "DIR")  # CheckList: minimum functionality, invariance, directional


@dataclass(frozen=True)
class TemplateCase:
    """One expanded case: a prompt, the row of values that made it, where it comes from.

    ``case["capital"]`` reads a value of the row. ``base`` is the case a
    perturbed copy was made from (None for a base case), ``perturbation`` the
    name of what changed it; ``test_type`` is ``"MFT"`` (a minimum
    functionality case), ``"INV"`` (should not change the answer) or ``"DIR"``
    (should move it in a stated direction).
    """

    id: str
    prompt: str
    values: tuple[tuple[str, str], ...] = ()
    capability: str | None = None
    test_type: str = "MFT"
    base: TemplateCase | None = field(default=None, repr=False)
    perturbation: str | None = None
    target: str | None = None  # the expected token (from the row), shown in reports

    @property
    def row(self) -> dict[str, str]:
        return dict(self.values)

    def __getitem__(self, key: str) -> str:
        row = self.row
        if key not in row:
            raise KeyError(f"{key!r}: case {self.id!r} has no such value (it has "
                           f"{', '.join(row) or 'none'})")
        return row[key]

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompts this case needs: its own, then its base case's (for pair checks)."""
        return (self.prompt,) if self.base is None else (self.prompt, self.base.prompt)

    def __str__(self) -> str:
        return self.id


def placeholders(template: str) -> list[str]:
    """The ``{names}`` in ``template``, in order, each once (``{{`` is a literal brace)."""
    if not isinstance(template, str) or not template:
        raise InvalidArgument(f"template={short(template, 60)}: give a non-empty string with "
                              "{placeholders}, e.g. 'The capital of {country} is'")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidArgument(f"template={short(template, 80)}: {exc} (write a literal brace "
                              "as {{ or }})") from None
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise InvalidArgument(f"template={short(template, 80)}: placeholder {{{name}"
                                  f"{'!' + conversion if conversion else ''}"
                                  f"{':' + spec if spec else ''}}} must be a plain name such "
                                  "as {country}")
        if name not in names:
            names.append(name)
    return names


def _slug(text: str) -> str:
    return re.sub(r"[^\w.+]+", "_", text.strip()).strip("_")[:40] or "x"


def _check_rows(rows: Any) -> list[dict[str, str]]:
    if rows is None:
        return [{}]
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise InvalidArgument(f"rows={short(rows, 60)}: give a list of mappings, e.g. "
                              "rows=[{'country': 'France', 'capital': ' Paris'}]")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not row:
            raise InvalidArgument(f"rows[{i}]={short(row, 60)}: each row must be a non-empty "
                                  "mapping of placeholder -> value")
        for key, value in row.items():
            if not isinstance(key, str) or not isinstance(value, (str, int, float)) \
                    or isinstance(value, bool):
                raise InvalidArgument(f"rows[{i}][{short(key, 30)}]={short(value, 60)}: row "
                                      "keys must be names and values strings (or numbers)")
        if out and set(row) != set(out[0]):
            raise InvalidArgument(f"rows[{i}] has keys {sorted(row)}, rows[0] has "
                                  f"{sorted(out[0])}: give every row the same keys")
        out.append({k: str(v) for k, v in row.items()})
    if not out:
        raise InvalidArgument("rows=[]: give at least one row (or leave rows out)")
    return out


def _check_lexicons(lexicons: Any) -> dict[str, list[str]]:
    if lexicons is None:
        return {}
    if not isinstance(lexicons, Mapping):
        raise InvalidArgument(f"lexicons={short(lexicons, 60)}: give a mapping of placeholder "
                              "-> list of values, e.g. lexicons={'name': ['Mary', 'John']}")
    out = {}
    for key, values in lexicons.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise InvalidArgument(f"lexicons[{short(key, 30)}]={short(values, 60)}: give a "
                                  "list of values (a string would be split into characters)")
        values = list(values)
        if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                 for v in values):
            raise InvalidArgument(f"lexicons[{short(key, 30)}]={short(values, 60)}: give a "
                                  "non-empty list of strings")
        out[str(key)] = [str(v) for v in values]
    return out


def expand(template: str, *, rows: Sequence[Mapping[str, Any]] | None = None,
           lexicons: Mapping[str, Sequence[Any]] | None = None, name: str | None = None,
           capability: str | None = None, test_type: str = "MFT",
           target: str | None = None) -> list[TemplateCase]:
    """Every case of ``template``: each row x every combination of the lexicons' values.

    ``rows`` are mappings whose values go together (keys not in the template,
    such as an expected token, are kept in the case's row); ``lexicons`` map a
    placeholder to the values it takes. ``name`` is a pattern for the case ids
    (``"capital-{country}"``); by default the id is the values used, joined by
    ``-``. Ids are unique (a repeat gets ``-2``, ``-3``, ...). ``target`` names
    the row key of the expected token (``case.target``: reports show its rank
    and probability); ``capability`` and ``test_type`` place the cases in the
    suite summary matrix.

    >>> [c.id for c in expand("{a} and {b}", lexicons={"a": ["x", "y"], "b": ["z"]})]
    ['x-z', 'y-z']
    """
    names = placeholders(template)
    row_list, lex = _check_rows(rows), _check_lexicons(lexicons)
    if test_type not in TEST_TYPES:
        raise InvalidArgument(f"test_type={test_type!r}: must be one of {', '.join(TEST_TYPES)}")
    both = sorted(set(lex) & set(row_list[0]))
    if both:
        raise InvalidArgument(f"{both[0]!r} is both a lexicon and a row key: give it once")
    given = set(lex) | set(row_list[0])
    missing = [n for n in names if n not in given]
    if missing:
        raise InvalidArgument(f"template={short(template, 80)}: no values for "
                              f"{{{missing[0]}}}; add it to `rows` or `lexicons`")
    unused = sorted(set(lex) - set(names))
    if unused:
        raise InvalidArgument(f"lexicons[{unused[0]!r}] is not a placeholder of template="
                              f"{short(template, 80)} (placeholders: {', '.join(names)})")
    if target is not None and target not in given:
        raise InvalidArgument(f"target={target!r}: not a row key or lexicon (keys: "
                              f"{', '.join(sorted(given))})")
    if name is not None:
        extra = [n for n in placeholders(name) if n not in given]
        if extra:
            raise InvalidArgument(f"name={name!r}: {{{extra[0]}}} is not a row key or lexicon")
    cases: list[TemplateCase] = []
    seen: dict[str, int] = {}
    keys = list(lex)
    for row in row_list:
        for combo in itertools.product(*(lex[k] for k in keys)):
            values = {**row, **dict(zip(keys, combo))}
            prompt = template.format(**values)
            case_id = (name.format(**values) if name is not None
                       else "-".join(_slug(values[n]) for n in names) or _slug(prompt))
            seen[case_id] = seen.get(case_id, 0) + 1
            if seen[case_id] > 1:
                case_id = f"{case_id}-{seen[case_id]}"
            cases.append(TemplateCase(case_id, prompt, tuple(values.items()), capability,
                                      test_type, target=None if target is None
                                      else values[target]))
    return cases

