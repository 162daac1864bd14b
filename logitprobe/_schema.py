"""The schema of behavioural test files: cases, expectations and validation.

Pure data: nothing here needs a model, so a malformed file fails at collection
with the file, the case and the field named. The format is described in
:mod:`logitprobe.behaviour` and docs/behavioural-tests.md.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ._safe_yaml import compose, construct, decode, duplicate_key
from ._text import short
from ._yaml_templates import expand_entry
from .errors import BehaviourFileError, InvalidArgument
from .interventions.serialize import from_dict

__all__ = ["SPECS", "BehaviourFileError", "Case", "Expectation", "Suite", "load_suite",
           "parse_suite"]

CASE_FIELDS = ("name", "prompt", "expect", "interventions", "position", "skip", "xfail",
               "snapshot", "capability", "type")
SNAPSHOT_FIELDS = ("k", "atol", "rtol", "strict_ranks")
_EXPANDED = ("_capability", "_type", "_group", "_base")  # set by template entries
FILE_FIELDS = ("model", "cases")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # token | text | int | prob | logprob | nonneg | direction
    required: bool = True


@dataclass(frozen=True)
class ExpectationSpec:
    """What an expectation name (``in_top``) stands for: its helper and its parameters."""

    helper: str  # name of the function in logitprobe.assertions (or logitprobe.invariance)
    params: tuple[Param, ...]
    needs: str = "next"  # what the helper checks: next: one distribution; pair: two; score:
    #                      a greedy continuation


_T, _K = Param("token", "token"), Param("k", "int", False)
SPECS: dict[str, ExpectationSpec] = {
    "in_top": ExpectationSpec("assert_in_top", (_T, _K)),
    "not_in_top": ExpectationSpec("assert_not_in_top", (_T, _K)),
    "rank_at_most": ExpectationSpec("assert_rank_at_most", (_T, Param("rank", "int"))),
    "rank_at_least": ExpectationSpec("assert_rank_at_least", (_T, Param("rank", "int"))),
    "prob_at_least": ExpectationSpec("assert_prob_at_least", (_T, Param("p", "prob"))),
    "prob_at_most": ExpectationSpec("assert_prob_at_most", (_T, Param("p", "prob"))),
    "logprob_at_least": ExpectationSpec("assert_logprob_at_least",
                                        (_T, Param("logprob", "logprob"))),
    "logprob_at_most": ExpectationSpec("assert_logprob_at_most",
                                       (_T, Param("logprob", "logprob"))),
    "argmax": ExpectationSpec("assert_argmax", (_T,)),
    "more_likely": ExpectationSpec("assert_more_likely", (_T, Param("than", "token"),
                                                          Param("margin", "nonneg", False))),
    "entropy_at_most": ExpectationSpec("assert_entropy_at_most", (Param("nats", "nonneg"),)),
    "entropy_at_least": ExpectationSpec("assert_entropy_at_least", (Param("nats", "nonneg"),)),
    "close_to": ExpectationSpec("assert_close", (Param("prompt", "text", False),
                                                 Param("kl", "nonneg", False),
                                                 Param("tv", "prob", False)), "pair"),
    "prob_increases": ExpectationSpec("assert_prob_increases", (_T, Param("from", "text", False),
                                                                Param("by", "prob", False)),
                                      "pair"),
    "prob_decreases": ExpectationSpec("assert_prob_decreases", (_T, Param("from", "text", False),
                                                                Param("by", "prob", False)),
                                      "pair"),
    "greedy_starts_with": ExpectationSpec("assert_greedy_starts_with", (Param("text", "text"),),
                                          "score"),
    # logitprobe.invariance: against a base prompt (`from:`), and a tolerance on one prob
    "argmax_unchanged": ExpectationSpec("assert_argmax_unchanged",
                                        (Param("from", "text", False),), "pair"),
    "prob_within": ExpectationSpec("assert_prob_within", (_T, Param("tol", "prob"),
                                                          Param("from", "text", False)), "pair"),
    "rank_moves": ExpectationSpec("assert_rank_moves", (_T, Param("by", "int"),
                                                        Param("direction", "direction"),
                                                        Param("from", "text", False)), "pair"),
    "prob_close": ExpectationSpec("assert_prob_close", (_T, Param("value", "prob"),
                                                        Param("abs", "prob", False),
                                                        Param("rel", "nonneg", False))),
}


@dataclass(frozen=True)
class Expectation:
    name: str
    args: tuple[tuple[str, Any], ...]  # (param, value) in the helper's order, given ones only

    @property
    def spec(self) -> ExpectationSpec:
        return SPECS[self.name]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.args).get(key, default)


@dataclass(frozen=True)
class Case:
    name: str
    prompt: str
    expectations: tuple[Expectation, ...]
    interventions: tuple[Mapping[str, Any], ...] | None = None
    position: int = -1
    index: int = 1  # 1-based, as error messages count
    line: int | None = None  # 1-based line of the case in its file
    source: str = "<string>"
    skip: str | None = None
    xfail: str | None = None
    snapshot: tuple[tuple[str, Any], ...] | None = None  # `snapshot:` options; None: no snapshot
    capability: str | None = None  # the suite matrix's row (default: the file's name)
    test_type: str = "MFT"  # MFT, INV or DIR (CheckList): the matrix's column
    base: str | None = None  # the case a perturbed case was made from
    group: tuple | None = None  # (name, at_least, confidence): checked as one pass rate

    @property
    def where(self) -> str:
        return f"{self.source}, case {self.index} {short(self.name, 80)}"

    def baseline_prompt(self, exp: Expectation) -> str:
        """The other prompt of a pair check (default: this prompt, without interventions)."""
        return exp.get("prompt" if exp.name == "close_to" else "from") or self.prompt


@dataclass(frozen=True)
class Suite:
    source: str
    cases: tuple[Case, ...]
    model: str | None = None


# -- parsing -----------------------------------------------------------------------------
def load_suite(path: str | Path) -> Suite:
    """Read and validate a behavioural test file (YAML, safe loader)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BehaviourFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return parse_suite(decode(data, path.name, BehaviourFileError), source=path.name)


def parse_suite(text: str, source: str = "<string>") -> Suite:
    """Validate YAML text as a behavioural test suite; errors name source, case and field.

    Read with :mod:`logitprobe._safe_yaml`: safe constructors, aliases bounded,
    duplicate keys refused.
    """
    import yaml

    node = compose(text, source, BehaviourFileError)
    duplicate = duplicate_key(node)  # before construct(), which flattens `<<:` merges
    data = construct(node, source, BehaviourFileError)
    model = None
    cases_node = _mapping_value(node, "cases") if isinstance(data, dict) else node
    case_nodes = cases_node.value if isinstance(cases_node, yaml.SequenceNode) else []
    if duplicate is not None:
        _duplicate(duplicate, source, case_nodes, data)
    if isinstance(data, dict) and ("prompt" in data or "expect" in data):
        raise BehaviourFileError(f"{source}: the file is one case; a file is a list of cases, so "
                                 "start the case with '- ' (or put it under `cases:`)")
    if isinstance(data, dict):
        _unknown(set(data) - set(FILE_FIELDS), FILE_FIELDS, f"{source}", "field")
        model = data.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            raise BehaviourFileError(f"{source}: `model` must be a model name or path, "
                                     f"not {short(model, 80)}")
        data = data.get("cases")
    if not isinstance(data, list) or not data:
        raise BehaviourFileError(f"{source}: expected a non-empty list of cases (each with "
                                 "`prompt` and `expect`), or a mapping with `cases:`; got "
                                 f"{type(data).__name__ if data is not None else 'nothing'}")
    lines = [n.start_mark.line + 1 for n in case_nodes]
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, raw, line in _expanded(data, lines, source):
        case = _case(raw, i, line, source)
        if case.name in seen:
            if isinstance(raw, dict) and "name" in raw:
                raise BehaviourFileError(f"{case.where}: duplicate case name (case "
                                         f"{seen[case.name]} has it too); give each case its "
                                         "own `name`")
            case = _replace(case, name=f"{case.name}-{i}")
        seen[case.name] = i
        cases.append(case)
    return Suite(source=source, cases=tuple(cases), model=model)


def _expanded(data: list, lines: list[int], source: str):
    """``(index, raw case, line)`` for every case, template entries expanded in place."""
    for i, raw in enumerate(data, 1):
        line = lines[i - 1] if i - 1 < len(lines) else None
        if isinstance(raw, dict) and "template" in raw and "prompt" not in raw:
            for case in expand_entry(raw, i, source, BehaviourFileError, SPECS):
                yield i, case, line
        else:
            yield i, raw, line


def _duplicate(dup: Any, source: str, case_nodes: list, data: Any) -> None:
    """Raise for a key given twice, naming the case whose lines hold it."""
    where = source
    for i, n in enumerate(case_nodes, 1):
        if n.start_mark.index <= dup.index < n.end_mark.index:
            raw = data.get("cases") if isinstance(data, dict) else data
            label = _label(raw[i - 1]) if isinstance(raw, list) and len(raw) >= i else None
            where = f"{source}, case {i}" + (f" {short(label, 80)}" if label else "")
            break
    hint = ("; to check one expectation twice, write `expect` as a list of one-key mappings, "
            "e.g. expect: [{in_top: [' a', 5]}, {in_top: [' b', 5]}]" if dup.key in SPECS else "")
    raise BehaviourFileError(f"{where}, line {dup.line}: key {short(dup.key, 60)} is given "
                             f"twice (first at line {dup.first_line}); YAML would silently keep "
                             f"only the last one: remove one{hint}")


def _label(raw: Any) -> str | None:
    """A case's name, or a slug of its prompt (None when it has neither)."""
    if not isinstance(raw, dict):
        return None
    name, prompt = raw.get("name"), raw.get("prompt")
    return name if isinstance(name, str) and name else (
        _slug(prompt) if isinstance(prompt, str) else None)


def _mapping_value(node: Any, key: str) -> Any:
    for k, v in getattr(node, "value", []):
        if getattr(k, "value", None) == key:
            return v
    return None


def _replace(case: Case, **changes: Any) -> Case:
    from dataclasses import replace

    return replace(case, **changes)


def _unknown(keys: set, known: tuple[str, ...] | list[str], where: str, what: str) -> None:
    for key in sorted(map(str, keys)):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f", did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
        raise BehaviourFileError(f"{where}: unknown {what} {short(key, 80)}{hint}")


def _slug(prompt: str) -> str:
    return re.sub(r"\W+", "_", prompt).strip("_")[:40] or "case"


def _case(raw: Any, index: int, line: int | None, source: str) -> Case:
    if not isinstance(raw, dict):
        raise BehaviourFileError(f"{source}, case {index}: a case must be a mapping with "
                                 f"`prompt` and `expect`, not {type(raw).__name__} "
                                 f"{short(raw, 80)}")
    name = raw.get("name")
    prompt = raw.get("prompt")
    label = _label(raw)
    where = f"{source}, case {index}" + (f" {short(label, 80)}" if label else "")
    _unknown(set(raw) - set(CASE_FIELDS) - set(_EXPANDED), CASE_FIELDS, where, "field")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise BehaviourFileError(f"{where}: `name` must be a non-empty string, "
                                 f"not {short(name, 80)}")
    if not isinstance(prompt, str) or not prompt:
        raise BehaviourFileError(f"{where}: `prompt` must be a non-empty string, "
                                 f"not {short(prompt, 80)}")
    position = raw.get("position", -1)
    if isinstance(position, bool) or not isinstance(position, int):
        raise BehaviourFileError(f"{where}: `position` must be an int (-1 for the last token), "
                                 f"not {short(position, 80)}")
    interventions = raw.get("interventions")
    if interventions is not None:
        if not isinstance(interventions, list) or not all(isinstance(x, dict)
                                                          for x in interventions):
            raise BehaviourFileError(f"{where}: `interventions` must be a list of mappings "
                                     f"(one per intervention), not {short(interventions, 80)}")
        for i, item in enumerate(interventions):
            try:  # kind, fields, `to=` expressions, positions: all checked without a model
                from_dict(item, where=f"{where}: interventions[{i}]")
            except InvalidArgument as exc:
                raise BehaviourFileError(str(exc)) from None
        interventions = tuple(interventions) or None
    marks = {}
    for key in ("skip", "xfail"):
        value = raw.get(key)
        if value is None or value is False:
            marks[key] = None
        elif value is True or isinstance(value, str):
            marks[key] = value if isinstance(value, str) else f"marked {key} in {source}"
        else:
            raise BehaviourFileError(f"{where}: `{key}` must be true or a reason string, "
                                     f"not {short(value, 80)}")
    snapshot = _snapshot(raw.get("snapshot"), where)
    expect = raw.get("expect", {} if snapshot is not None else None)
    if isinstance(expect, dict):
        items = list(expect.items())
    elif isinstance(expect, list) and all(isinstance(e, dict) and len(e) == 1 for e in expect):
        items = [next(iter(e.items())) for e in expect]
    else:
        raise BehaviourFileError(f"{where}: `expect` must be a mapping of expectations (e.g. "
                                 "in_top: {token: ' Paris', k: 5}) or a list of one-key mappings, "
                                 f"not {short(expect, 80)}")
    if not items and snapshot is None:
        raise BehaviourFileError(f"{where}: `expect` is empty; give at least one expectation "
                                 "(or `snapshot: true`)")
    exps = tuple(_expectation(str(k), v, where) for k, v in items)
    for exp in exps:
        other = "prompt" if exp.name == "close_to" else "from"
        if exp.spec.needs == "pair" and interventions is None and exp.get(other) in (None, prompt):
            raise BehaviourFileError(f"{where}: {exp.name} would compare the case with itself; "
                                     f"give `{other}:` (another prompt) or `interventions`")
    capability = raw.get("_capability") or raw.get("capability")
    if capability is not None and (not isinstance(capability, str) or not capability):
        raise BehaviourFileError(f"{where}: `capability` must be a non-empty string, "
                                 f"not {short(capability, 80)}")
    test_type = raw.get("_type") or raw.get("type") or _test_type(exps)
    if test_type not in ("MFT", "INV", "DIR"):
        raise BehaviourFileError(f"{where}: `type` must be MFT, INV or DIR (CheckList's test "
                                 f"types), not {short(test_type, 80)}")
    return Case(name=label, prompt=prompt, expectations=exps, interventions=interventions,
                position=position, index=index, line=line, source=source, skip=marks["skip"],
                xfail=marks["xfail"], snapshot=snapshot, capability=capability, test_type=test_type,
                base=raw.get("_base"), group=raw.get("_group"))


def _test_type(exps: tuple[Expectation, ...]) -> str:
    """DIR for a case that checks a change, INV for one that checks closeness, else MFT."""
    names = {e.name for e in exps}
    if names & {"prob_increases", "prob_decreases", "rank_moves"}:
        return "DIR"
    if names & {"close_to", "argmax_unchanged", "prob_within"}:
        return "INV"
    return "MFT"


def _snapshot(value: Any, where: str) -> tuple[tuple[str, Any], ...] | None:
    """``snapshot: true`` or ``snapshot: {k: 20, atol: 0.01, rtol: 0, strict_ranks: true}``."""
    if value is None or value is False:
        return None
    if value is True:
        return ()
    if not isinstance(value, dict):
        raise BehaviourFileError(f"{where}: `snapshot` must be true or a mapping of options "
                                 f"({', '.join(SNAPSHOT_FIELDS)}), not {short(value, 80)}")
    _unknown(set(value) - set(SNAPSHOT_FIELDS), SNAPSHOT_FIELDS, f"{where}: snapshot", "option")
    for key in ("atol", "rtol"):
        if key in value:
            _check_value(Param(key, "nonneg"), value[key], f"{where}: snapshot")
    if "k" in value:
        _check_value(Param("k", "int"), value["k"], f"{where}: snapshot")
    if "strict_ranks" in value and not isinstance(value["strict_ranks"], bool):
        raise BehaviourFileError(f"{where}: snapshot: `strict_ranks` must be true or false, "
                                 f"not {short(value['strict_ranks'], 80)}")
    return tuple(sorted(value.items()))


def _expectation(name: str, value: Any, where: str) -> Expectation:
    if name not in SPECS:
        _unknown({name}, list(SPECS), where, "expectation")
    spec = SPECS[name]
    names = [p.name for p in spec.params]
    where = f"{where}: {name}"
    if isinstance(value, dict):
        _unknown(set(value) - set(names), names, where, "field")
        given = dict(value)
    elif isinstance(value, list):
        if len(value) > len(names):
            raise BehaviourFileError(f"{where}: got {len(value)} values, it takes at most "
                                     f"{len(names)} ({', '.join(names)})")
        given = dict(zip(names, value))
    else:
        given = {names[0]: value}
    for p in spec.params:
        if p.required and p.name not in given:
            raise BehaviourFileError(f"{where}: missing {p.name!r} (fields: {', '.join(names)}; "
                                     f"e.g. {name}: {{{', '.join(f'{n}: ...' for n in names)}}})")
        if p.name in given:
            _check_value(p, given[p.name], where)
    if name == "close_to" and "kl" not in given and "tv" not in given:
        raise BehaviourFileError(f"{where}: give a bound, `kl` (nats) and/or `tv` (0 to 1)")
    return Expectation(name, tuple((n, given[n]) for n in names if n in given))


def _check_value(p: Param, value: Any, where: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {
        "token": (isinstance(value, str) and value != "") or (isinstance(value, int)
                                                              and not isinstance(value, bool)),
        "text": isinstance(value, str) and value != "",
        "int": isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        "prob": number and 0 <= value <= 1,
        "logprob": number and value <= 0,
        "nonneg": number and value >= 0,
        "direction": value in ("up", "down"),
    }[p.kind]
    if not ok:
        want = {"token": "a token string such as \" Paris\" (quoted, to keep the space) or an id",
                "text": "a non-empty string", "int": "an int >= 1",
                "prob": "a number between 0 and 1", "logprob": "a number <= 0 (nats)",
                "nonneg": "a number >= 0", "direction": "'up' or 'down'"}[p.kind]
        raise BehaviourFileError(f"{where}: `{p.name}` must be {want}, not {short(value, 80)}")


