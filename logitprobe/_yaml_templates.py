"""Template entries of behavioural YAML files: one entry, many cases, expanded at collection.

An entry with a ``template:`` key instead of ``prompt:``::

    - template: "The capital of {country} is"
      name: "capital-{country}"          # case ids (default: the values, joined by -)
      capability: capitals               # the row of the suite summary matrix
      rows:                              # values that go together ...
        - {country: France, capital: " Paris"}
        - {country: Japan, capital: " Tokyo"}
      lexicons: {}                       # ... and/or every combination of these
      expect:                            # {capital} is taken from the row
        in_top: {token: "{capital}", k: 5}
      perturb: [typo, neutral_clause]    # perturbed copies (optional) ...
      expect_perturbed:                  # ... checked against their base case's prompt
        argmax_unchanged: {}
      pass_rate: {at_least: 0.9, confidence: 0.95}   # optional: one verdict for the group

becomes plain case mappings (what :func:`logitprobe._schema.parse_suite`
validates), each with its own id. ``{name}`` in any string of ``expect`` is
replaced by the row's value (other braces are left alone). In perturbed cases,
pair expectations without ``from:`` / ``prompt:`` compare with the base case.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ._evidence import short
from .errors import InvalidArgument
from .passrate import _check_args
from .perturbations import BUILTIN, SwapName, perturb
from .templates import TEST_TYPES, expand, placeholders

__all__ = ["TEMPLATE_FIELDS", "expand_entry", "group_severity"]

TEMPLATE_FIELDS = ("template", "name", "capability", "type", "rows", "lexicons", "expect",
                   "perturb", "seed", "expect_perturbed", "pass_rate", "group", "position",
                   "skip", "xfail")
_FIELD = re.compile(r"\{(\w+)\}")


def _fill(value: Any, row: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _FIELD.sub(lambda m: row.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, row) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, row) for k, v in value.items()}
    return value


def _perturbations(spec: Any, lexicons: Mapping[str, Any], where: str, error: type) -> list:
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        if isinstance(item, str):
            kind, args = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            kind, args = next(iter(item.items()))
            args = args or {}
        else:
            raise error(f"{where}: perturb: each entry is a name ({', '.join(BUILTIN)}) or a "
                        f"one-key mapping such as {{change_case: {{mode: lower}}}}, not "
                        f"{short(item, 60)}")
        if kind not in BUILTIN or not isinstance(args, dict):
            raise error(f"{where}: perturb: unknown perturbation {short(kind, 40)} (known: "
                        f"{', '.join(BUILTIN)})")
        if kind == "swap_name" and "names" not in args:
            lexicon = args.pop("lexicon", "name")
            if lexicon not in lexicons:
                raise error(f"{where}: perturb: swap_name needs `names: [...]` or a lexicon "
                            f"{lexicon!r} to draw them from")
            args = {**args, "names": tuple(lexicons[lexicon])}
        try:
            out.append(BUILTIN[kind](**args))
        except TypeError as exc:
            raise error(f"{where}: perturb: {kind}: {exc}") from None
        except InvalidArgument as exc:
            raise error(f"{where}: perturb: {kind}: {exc}") from None
    return out


def _with_base(expect: Any, base_prompt: str, specs: Mapping[str, Any]) -> Any:
    """Pair expectations compare with ``base_prompt`` unless they name another prompt."""
    items = list(expect.items()) if isinstance(expect, dict) else (
        [next(iter(e.items())) for e in expect] if isinstance(expect, list)
        and all(isinstance(e, dict) and len(e) == 1 for e in expect) else None)
    if items is None:
        return expect  # malformed: _schema reports it
    out = []
    for key, value in items:
        spec = specs.get(key)
        if spec is not None and spec.needs == "pair":
            names = [p.name for p in spec.params]
            other = "prompt" if key == "close_to" else "from"
            if isinstance(value, list):
                value = dict(zip(names, value))
            elif value is None:
                value = {}
            elif not isinstance(value, dict):
                value = {names[0]: value}
            if other in names and other not in value:
                value = {**value, other: base_prompt}
        out.append({key: value})
    return out


def expand_entry(raw: dict, index: int, source: str, error: type,
                 specs: Mapping[str, Any]) -> list[dict]:
    """The plain cases of template entry ``raw`` (case ``index`` of ``source``)."""
    where = f"{source}, case {index} (template)"
    unknown = sorted(set(map(str, raw)) - set(TEMPLATE_FIELDS))
    if unknown:
        raise error(f"{where}: unknown field {short(unknown[0], 40)} for a template entry "
                    f"(fields: {', '.join(TEMPLATE_FIELDS)})")
    template = raw.get("template")
    where = f"{source}, case {index} template {short(template, 60)}"
    if "expect" not in raw and "expect_perturbed" not in raw:
        raise error(f"{where}: give `expect` (for the cases) and/or `expect_perturbed` (for "
                    "their perturbed copies, with `perturb`)")
    if ("perturb" in raw) != ("expect_perturbed" in raw):
        raise error(f"{where}: `perturb` and `expect_perturbed` go together: the first makes "
                    "perturbed copies, the second says what they must do")
    test_type = raw.get("type", "MFT")
    if test_type not in TEST_TYPES:
        raise error(f"{where}: `type` must be one of {', '.join(TEST_TYPES)}, not "
                    f"{short(test_type, 30)}")
    capability = raw.get("capability")
    if capability is not None and (not isinstance(capability, str) or not capability):
        raise error(f"{where}: `capability` must be a non-empty string, not "
                    f"{short(capability, 40)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise error(f"{where}: `seed` must be an int, not {short(seed, 30)}")
    try:
        placeholders(template)
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidArgument(f"name={short(name, 40)}: give a pattern such as "
                                  "'capital-{country}'")
        cases = expand(template, rows=raw.get("rows"), lexicons=raw.get("lexicons"),
                       name=name, capability=capability, test_type=test_type)
    except InvalidArgument as exc:
        raise error(f"{where}: {exc}") from None
    group = None
    if "pass_rate" in raw:
        rate = raw["pass_rate"]
        if not isinstance(rate, dict) or "at_least" not in rate \
                or set(rate) - {"at_least", "confidence"}:
            raise error(f"{where}: `pass_rate` must be a mapping with `at_least` (and optional "
                        f"`confidence`), e.g. {{at_least: 0.9, confidence: 0.95}}, not "
                        f"{short(rate, 60)}")

        try:
            at_least, confidence = _check_args(rate["at_least"], rate.get("confidence"))
        except InvalidArgument as exc:
            raise error(f"{where}: pass_rate: {exc}") from None
        label = raw.get("group") or capability or f"template-{index}"
        if not isinstance(label, str):
            raise error(f"{where}: `group` must be a string, not {short(label, 40)}")
        group = (label, at_least, confidence)
    elif "group" in raw:
        raise error(f"{where}: `group` names a `pass_rate` group; add pass_rate: "
                    "{at_least: 0.9}")
    common = {k: raw[k] for k in ("position", "skip", "xfail") if k in raw}
    out = []
    if "expect" in raw:
        for c in cases:
            out.append({**common, "name": c.id, "prompt": c.prompt,
                        "expect": _fill(raw["expect"], c.row), "_capability": capability,
                        "_type": raw.get("type"), "_group": group})  # None: from `expect`
    if "perturb" in raw:
        ps = _perturbations(raw["perturb"], raw.get("lexicons") or {}, where, error)
        for c in perturb(cases, *ps, seed=seed):
            expect = _with_base(_fill(raw["expect_perturbed"], c.row), c.base.prompt, specs)
            out.append({**common, "name": c.id, "prompt": c.prompt, "expect": expect,
                        "_capability": capability, "_type": c.test_type, "_group": group,
                        "_base": c.base.id})
    if not out:
        raise error(f"{where}: the template made no cases (the perturbations changed none "
                    "of the prompts)")
    return out


def group_severity(probe: Any):
    """Severity of a failed YAML case for pass-rate reports: ``1 - p(its first token)``.

    Worst first then means the lowest probability of the expected token; the
    error's own ``severity`` (from :mod:`logitprobe.invariance`) when there is none.
    """
    def severity(case: Any, error: BaseException) -> float | None:
        token = next((e.get("token") for e in case.expectations if e.get("token") is not None),
                     None)
        try:
            nt = probe.next_token(case.prompt, position=case.position,
                                  interventions=None if case.interventions is None
                                  else list(case.interventions))  # cached: no new forward
            return 1.0 - nt.prob(token)
        except Exception:  # noqa: BLE001 - no single target token: the error's own severity
            return getattr(error, "severity", None)
    return severity
