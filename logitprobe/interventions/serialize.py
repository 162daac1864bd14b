"""Specs as plain data: dict, JSON and YAML, losslessly and with errors that name the field.

>>> spec = SetLogit(" coffee", to="max+10")
>>> to_dict(spec)
{'kind': 'set_logit', 'token': ' coffee', 'to': 'max+10'}
>>> from_dict(to_dict(spec)) == spec
True

:func:`dump_specs` and :func:`load_specs` write and read a file of specs (named so they
are not mistaken for :func:`logitprobe.load`, which loads a model; the old names
``dump`` and ``load`` still work and warn). A YAML file holds a list of specs, or a
mapping with one key, ``interventions``::

    interventions:
      - kind: set_logit
        token: " coffee"
        to: max+10
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Iterable

import yaml

from .._deprecation import renamed
from .._safe_yaml import compose, construct, decode, duplicate_key
from .._text import short
from ..errors import InvalidArgument
from .specs import SPEC_TYPES, Spec, spec_fields

__all__ = ["coerce", "dump_specs", "from_dict", "from_json", "from_yaml", "load_specs", "to_dict",
           "to_json", "to_yaml"]


def to_dict(spec: Spec) -> dict[str, Any]:
    """``{"kind": ..., <fields that differ from their defaults>}``: JSON/YAML-ready."""
    if not isinstance(spec, Spec):
        raise InvalidArgument(f"spec={short(spec, 80)}: expected an intervention spec such as "
                              "SetLogit(' coffee', to='max+10')")
    return spec.to_dict()


def from_dict(data: Any, *, where: str | None = None) -> Spec:
    """The spec a :func:`to_dict` mapping describes; every field is checked.

    ``where`` prefixes error messages (e.g. ``"cases.yaml: interventions[2]"``).
    """
    at = f"{where}: " if where else ""
    if isinstance(data, Spec):
        return data
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{at}{short(data, 80)}: an intervention must be a mapping with a "
                              f"'kind' ({', '.join(SPEC_TYPES)}) and its fields")
    kind = data.get("kind")
    if kind is None:
        raise InvalidArgument(f"{at}{short(dict(data), 80)}: missing field 'kind'; one of "
                              f"{', '.join(SPEC_TYPES)}")
    cls = SPEC_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidArgument(f"{at}kind={short(kind, 80)}: unknown intervention kind"
                              f"{_did_you_mean(kind, SPEC_TYPES)}; known: {', '.join(SPEC_TYPES)}")
    known = {f.name: f for f in spec_fields(cls)}
    for name in data:
        if name != "kind" and name not in known:
            raise InvalidArgument(f"{at}{kind}: unknown field {short(name, 80)}"
                                  f"{_did_you_mean(name, known)};"
                                  f" {kind} takes {', '.join(known)}")
    missing = [n for n, f in known.items() if f.default is MISSING and n not in data]
    if missing:
        raise InvalidArgument(f"{at}{kind}: missing field {missing[0]!r}; {kind} needs "
                              f"{', '.join(n for n, f in known.items() if f.default is MISSING)}")
    kwargs = {k: v for k, v in data.items() if k != "kind"}
    try:
        return cls(**kwargs)
    except InvalidArgument as exc:
        if not where:
            raise
        raise type(exc)(f"{at}{exc}") from None


def coerce(interventions: Any) -> tuple[Spec, ...]:
    """Specs from None, a spec, a mapping, a path to a YAML/JSON file, or a list of those."""
    if interventions is None:
        return ()
    if isinstance(interventions, Spec):
        return (interventions,)
    if isinstance(interventions, Mapping):
        if set(interventions) == {"interventions"}:
            return coerce(list(interventions["interventions"] or []))
        return (from_dict(interventions, where="interventions"),)
    if isinstance(interventions, (str, os.PathLike)):
        path = Path(interventions)
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            raise InvalidArgument(f"interventions={str(interventions)!r}: a str must be the path "
                                  "of a .yaml or .json file of specs; pass specs as objects, "
                                  "e.g. [SetLogit(' coffee', to='max+10')]")
        return tuple(load_specs(path))
    if isinstance(interventions, (list, tuple)):
        out: list[Spec] = []
        for i, item in enumerate(interventions):
            if isinstance(item, (list, tuple)):
                out.extend(coerce(item))
            elif isinstance(item, Spec):
                out.append(item)
            else:
                out.append(from_dict(item, where=f"interventions[{i}]"))
        return tuple(out)
    raise InvalidArgument(f"interventions={short(interventions, 80)}: expected a spec (e.g. "
                          "SetLogit(' coffee', to='max+10')), a mapping, a list of them, or the "
                          "path of a YAML file")


# -- JSON / YAML -----------------------------------------------------------------------
def _as_list(specs: Spec | Iterable[Spec]) -> list[Spec]:
    return [specs] if isinstance(specs, Spec) else list(coerce(list(specs)))


def to_json(specs: Spec | Iterable[Spec], *, indent: int | None = None) -> str:
    """A JSON list of spec mappings (-inf is written as ``-Infinity``, as Python's json does)."""
    return json.dumps([to_dict(s) for s in _as_list(specs)], indent=indent, ensure_ascii=False)


def from_json(text: str, *, source: str = "<json>") -> list[Spec]:
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _unique(pairs, source))
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{source}: not valid JSON: {exc}") from None
    return _from_document(data, source)


def _unique(pairs: list[tuple[str, Any]], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidArgument(f"{source}: key {short(key, 60)} is given twice in "
                                  f"{short(dict(pairs), 80)}; JSON would silently keep only "
                                  "the last one: remove one")
        out[key] = value
    return out


def to_yaml(specs: Spec | Iterable[Spec]) -> str:
    return yaml.safe_dump({"interventions": [to_dict(s) for s in _as_list(specs)]},
                          sort_keys=False, allow_unicode=False)  # escapes NEL, LS, PS too


def from_yaml(text: str, *, source: str = "<yaml>") -> list[Spec]:
    """The specs of a YAML document (a list, or a mapping with ``interventions:``).

    Read like behavioural files (:mod:`logitprobe._safe_yaml`): C-accelerated safe
    loader, aliases bounded, a key given twice is an error.
    """
    node = compose(text, source, InvalidArgument)
    duplicate = duplicate_key(node)  # before construct(), which flattens `<<:` merges
    data = construct(node, source, InvalidArgument)
    if duplicate is not None:
        raise InvalidArgument(f"{_item_at(node, duplicate.index, source)}, line "
                              f"{duplicate.line}: key {short(duplicate.key, 60)} is given twice "
                              f"(first at line "
                              f"{duplicate.first_line}); YAML would silently keep only the last "
                              "one: remove one")
    return _from_document(data, source)


def _item_at(node: Any, index: int, source: str) -> str:
    """``"<source>: interventions[i]"`` for the spec holding character ``index`` (else source)."""
    items = node
    if isinstance(node, yaml.MappingNode):
        items = next((v for k, v in node.value if getattr(k, "value", None) == "interventions"),
                     None)
    if isinstance(items, yaml.SequenceNode):
        for i, item in enumerate(items.value):
            if item.start_mark.index <= index < item.end_mark.index:
                return f"{source}: interventions[{i}]"
    return source


def dump_specs(specs: Spec | Iterable[Spec], path: str | os.PathLike | None = None) -> str:
    """YAML text of ``specs`` (written to ``path`` too when given; ``.json`` writes JSON).

    Formerly ``dump`` (a deprecated alias now).
    """
    json_file = path is not None and Path(path).suffix.lower() == ".json"
    text = to_json(specs, indent=2) + "\n" if json_file else to_yaml(specs)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def load_specs(path: str | os.PathLike) -> list[Spec]:
    """The specs of a YAML (or ``.json``) file; errors name the file and the field.

    Formerly ``load`` (a deprecated alias now; :func:`logitprobe.load` loads a model).
    """
    path = Path(path)
    try:
        text = decode(path.read_bytes(), f"interventions file {str(path)!r}", InvalidArgument)
    except FileNotFoundError:
        raise InvalidArgument(f"interventions file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"interventions file {str(path)!r} cannot be read: {exc}") from None
    if path.suffix.lower() == ".json":
        return from_json(text, source=str(path))
    return from_yaml(text, source=str(path))


def _from_document(data: Any, source: str) -> list[Spec]:
    if isinstance(data, Mapping):
        extra = [k for k in data if k != "interventions"]
        if extra:
            raise InvalidArgument(f"{source}: unknown top-level field {short(extra[0], 80)}"
                                  f"{_did_you_mean(str(extra[0]), ['interventions'])}; the file "
                                  "holds a list of specs or a mapping with one key, 'interventions'")
        data = data.get("interventions")
    if data is None:
        return []
    if not isinstance(data, list):
        raise InvalidArgument(f"{source}: expected a list of intervention specs, got "
                              f"{type(data).__name__}")
    return [from_dict(item, where=f"{source}: interventions[{i}]") for i, item in enumerate(data)]


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_RENAMED = {"dump": "dump_specs", "load": "load_specs"}  # old name -> new; the old one warns


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return renamed(__name__, name, _RENAMED[name], globals()[_RENAMED[name]])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
