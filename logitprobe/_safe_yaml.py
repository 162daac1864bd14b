"""The one YAML reader of logitprobe's files: safe, C-accelerated, bounded.

Behavioural test files (:mod:`logitprobe._schema`) and intervention spec files
(:mod:`logitprobe.interventions.serialize`) are read through here, so both get:

- the bytes decoded as UTF-8, or an error naming the file and the byte offset;
- PyYAML's safe constructors on libyaml's C parser (``yaml.CSafeLoader``, ~15x
  faster than the pure-Python one) when PyYAML has it;
- anchors and aliases (``&base`` / ``*base``) allowed, but a document whose
  aliases expand to more than :data:`MAX_ALIAS_VALUES` values beyond the ones
  it spells out (a "billion laughs": 400 bytes that expand to 10^9 strings) or
  that refers to itself is refused before anything is constructed;
- duplicate keys in a mapping reported (YAML would keep only the last one).

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml

__all__ = ["MAX_ALIAS_VALUES", "Duplicate", "compose", "construct", "decode", "duplicate_key"]

MAX_ALIAS_VALUES = 100_000  # values aliases may add to a document (beyond its own nodes)
_MERGE = "tag:yaml.org,2002:merge"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Duplicate(NamedTuple):
    """A key given twice in one mapping (lines are 1-based; ``index``: its character offset)."""

    key: str
    first_line: int
    line: int
    index: int


def decode(data: bytes, source: str, error: type[Exception]) -> str:
    """``data`` as UTF-8 text; ``error`` names ``source`` and the first bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(f"{source}: not UTF-8 text: byte {exc.start} (line {line}, column {column}) "
                    f"is {data[exc.start:exc.start + 1]!r}; save the file as UTF-8 (your "
                    "editor's encoding setting, or iconv -f <encoding> -t utf-8)") from None


def compose(text: str, source: str, error: type[Exception]) -> Any:
    """The YAML node graph of ``text`` (None for an empty document), aliases bounded.

    Syntax errors, several documents, recursive aliases and alias bombs raise ``error``
    with ``source`` and (where known) the line.
    """
    try:
        loader = _Loader(text)
    except UnicodeEncodeError as exc:  # a str that no file holds: a lone surrogate
        raise error(f"{source}: character {exc.start} is {text[exc.start]!r}, half of a "
                    "surrogate pair, which is not text; remove it") from None
    try:
        node = loader.get_single_node()
    except RecursionError:  # the pure-Python parser on deep nesting (libyaml stops at 1000)
        raise error(f"{source}: invalid YAML: values nested too deeply") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: invalid YAML{_located(exc)}") from None
    finally:
        loader.dispose()
    if node is not None and "&" in text:  # no anchor, no alias: nothing to expand
        _check_aliases(node, source, error)
    return node


def construct(node: Any, source: str, error: type[Exception]) -> Any:
    """The Python value of a node from :func:`compose` (safe constructors only)."""
    if node is None:
        return None
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    except (yaml.YAMLError, ValueError) as exc:  # unhashable key, a 5000-digit int, a bad date
        raise error(f"{source}: invalid YAML value{_located(exc)}") from None
    finally:
        loader.dispose()


def _located(exc: Exception) -> str:
    """`` (line L, column C): problem`` of a PyYAML error (no position when it has none)."""
    mark = getattr(exc, "problem_mark", None)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"{at}: {getattr(exc, 'problem', None) or exc}"


def _children(node: Any) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return node.value
    return []


def _check_aliases(root: Any, source: str, error: type[Exception]) -> None:
    # An alias is the same node object as its anchor, so the graph is a DAG of distinct
    # nodes (or has a cycle, for an alias inside its own anchor). Count, without building
    # it, how many values the document expands to: each node is 1 + its children.
    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted (the DFS path)
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            line = node.start_mark.line + 1
            raise error(f"{source}: the value anchored at line {line} contains an alias of "
                        "itself (a recursive value); logitprobe files hold plain trees: "
                        "write the value out")
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))
    extra = size[id(root)] - len(size)
    if extra > MAX_ALIAS_VALUES:
        raise error(f"{source}: its aliases (*name) expand to {extra:,} more values than the "
                    f"file spells out, over the limit of {MAX_ALIAS_VALUES:,} (a \"billion "
                    "laughs\" document?); write the values out or use fewer nested aliases")


def duplicate_key(root: Any) -> Duplicate | None:
    """The first (by line) key that a mapping of the node graph gives twice, or None.

    Merge keys (``<<: *base``) may be overridden and are not duplicates.
    Call before :func:`construct`, which flattens merges into the mappings.
    """
    found: Duplicate | None = None
    seen: set[int] = set()  # mappings and lists already checked (aliases share them)
    stack = [root] if root is not None else []
    scalar, mapping = yaml.ScalarNode, yaml.MappingNode
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if type(node) is mapping:
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if type(value) is not scalar:
                    stack.append(value)
                if type(key) is not scalar:
                    stack.append(key)
                elif key.tag != _MERGE:
                    ident, line = (key.tag, key.value), key.start_mark.line + 1
                    if ident not in lines:
                        lines[ident] = line
                    elif found is None or line < found.line:
                        found = Duplicate(key.value, lines[ident], line, key.start_mark.index)
        elif type(node) is yaml.SequenceNode:
            stack.extend(c for c in node.value if type(c) is not scalar)
    return found
