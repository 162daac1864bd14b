"""The shared YAML reader of behavioural and spec files: aliases, duplicate keys, encodings.

Also: values echoed in errors are bounded, interventions and token counts are checked
before a case runs, and run-time errors name the file and the case.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe import _safe_yaml
from logitprobe._evidence import short
from logitprobe.behaviour import (BehaviourFileError, check_case, load_suite, parse_suite,
                                  token_problem)
from logitprobe.errors import InvalidArgument, LogitProbeError, PromptError
from logitprobe.interventions import from_json, from_yaml, load_specs

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def parse(text: str):
    return parse_suite(textwrap.dedent(text), source="test_geo.logit.yaml")


# -- aliases -----------------------------------------------------------------------------
# Each load runs in a child process under a 1 GiB address-space limit: if the bound ever
# breaks, the child dies of MemoryError instead of taking the machine's memory.
_GUARDED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from logitprobe.behaviour import load_suite
from logitprobe.interventions import load_specs
try:
    (load_suite if sys.argv[1] == "suite" else load_specs)(sys.argv[2])
except BaseException as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("reader,error", [("suite", "BehaviourFileError"),
                                          ("spec", "InvalidArgument")])
@pytest.mark.parametrize("name", ["billion_laughs.yaml", "billion_laughs.logit.yaml"])
def test_billion_laughs_is_refused_before_it_expands(reader, error, name):
    out = subprocess.run([sys.executable, "-c", _GUARDED, reader, str(DATA / name)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT).stdout
    # Level a is a list of 9 strings (10 values); each next level is a list of 9 of the
    # previous (1 + 9 * previous). Both files hold 28 distinct nodes and 10 values besides
    # the lists (root, keys, ...), so the aliases add sum(levels) + 10 - 28 values.
    levels = [10]
    for _ in range(8):
        levels.append(1 + 9 * levels[-1])
    extra = sum(levels) + 10 - 28
    out = out.replace(f"{DATA}/", "")  # the spec loader names files by their full path
    assert out == (f"{error} {name}: its aliases (*name) expand to {extra:,} more values than "
                   "the file spells out, over the limit of 100,000 (a \"billion laughs\" "
                   "document?); write the values out or use fewer nested aliases\n")


@settings(max_examples=40, deadline=None)
@given(items=st.integers(0, 6), aliases=st.integers(0, 12), limit=st.integers(0, 60))
def test_alias_budget_counts_expanded_values(items, aliases, limit):
    # `&x [v1..vn]` used `aliases` more times adds aliases * (n + 1) values (the list + items).
    text = "base: &x [" + ", ".join(f"v{i}" for i in range(items)) + "]\n"
    text += "".join(f"k{i}: *x\n" for i in range(aliases))
    extra = aliases * (items + 1)
    old = _safe_yaml.MAX_ALIAS_VALUES
    _safe_yaml.MAX_ALIAS_VALUES = limit
    try:
        if extra > limit:
            with pytest.raises(InvalidArgument, match=f"expand to {extra:,} more values"):
                _safe_yaml.compose(text, "f.yaml", InvalidArgument)
        else:
            node = _safe_yaml.compose(text, "f.yaml", InvalidArgument)
            data = _safe_yaml.construct(node, "f.yaml", InvalidArgument)
            assert data == yaml.safe_load(text)
    finally:
        _safe_yaml.MAX_ALIAS_VALUES = old


def test_small_anchors_and_merge_keys_still_work():
    suite = parse("""\
        - name: base
          prompt: &p "The capital of France is"
          interventions: &iv [{kind: set_logit, token: " Paris", to: max+1}]
          expect: &e {argmax: " Paris"}
        - name: again
          prompt: *p
          interventions: *iv
          expect: {<<: *e, in_top: [" Paris", 3]}
        """)
    assert suite.cases[1].prompt == suite.cases[0].prompt
    assert suite.cases[1].interventions == suite.cases[0].interventions
    assert [e.name for e in suite.cases[1].expectations] == ["argmax", "in_top"]


def test_recursive_alias_is_refused():
    with pytest.raises(BehaviourFileError, match="line 1 contains an alias of itself"):
        parse("- &c {prompt: x, expect: {argmax: ' y'}, name: [*c]}\n")
    with pytest.raises(InvalidArgument, match="alias of itself"):
        from_yaml("interventions: &l [*l]\n", source="s.yaml")


# -- duplicate keys ----------------------------------------------------------------------
@pytest.mark.parametrize("body,where,key,lines", [
    ("""\
     - name: ok
       prompt: x
       expect: {argmax: ' y'}
     - name: capital
       prompt: "The capital of France is"
       expect:
         argmax: " Paris"
         in_top: [" Paris", 5]
         argmax: " London"
     """, "case 2 'capital'", "argmax", (7, 9)),
    ("""\
     - prompt: one
       expect: {argmax: ' y'}
       prompt: two
     """, "case 1 'two'", "prompt", (1, 3)),
    ("""\
     model: gpt2
     cases: [{prompt: x, expect: {argmax: ' y'}}]
     model: smollm2
     """, "", "model", (1, 3)),
    ("""\
     cases:
     - name: a
       prompt: x
       expect: {argmax: ' y'}
     cases: []
     """, "", "cases", (1, 5)),
])
def test_duplicate_keys_name_file_case_key_and_lines(body, where, key, lines):
    with pytest.raises(BehaviourFileError) as info:
        parse(body)
    prefix = "test_geo.logit.yaml" + (f", case {where.split('case ')[1]}" if where else "")
    assert str(info.value).startswith(f"{prefix}, line {lines[1]}: key {key!r} is given twice "
                                      f"(first at line {lines[0]}); YAML would silently keep "
                                      "only the last one")


@settings(max_examples=80, deadline=None)
@given(keys=st.lists(st.sampled_from(["a", "b", "1", "'1'", "<<"]), min_size=1, max_size=6),
       flow=st.booleans())
def test_a_duplicate_is_found_exactly_when_a_key_repeats(keys, flow):
    # `1` is an int and `'1'` a str: different keys. `<<` merges may repeat.
    values = ["{}" if k == "<<" else "0" for k in keys]
    pairs = [f"{k}: {v}" for k, v in zip(keys, values)]
    text = "{" + ", ".join(pairs) + "}\n" if flow else "".join(p + "\n" for p in pairs)
    dup = _safe_yaml.duplicate_key(_safe_yaml.compose(text, "f.yaml", InvalidArgument))
    seen: dict[str, int] = {}
    expected = None
    for i, k in enumerate(keys):
        if k != "<<" and k in seen and expected is None:
            expected = (k.strip("'"), seen[k] + 1, i + 1)
        seen.setdefault(k, i)
    if expected is None:
        assert dup is None
    else:
        key, first, line = expected
        assert (dup.key, dup.first_line, dup.line) == ((key, 1, 1) if flow else expected)


def test_duplicate_key_in_a_spec_file_names_the_spec(tmp_path):
    path = tmp_path / "specs.yaml"
    path.write_text("interventions:\n  - {kind: ban_tokens, tokens: [' a']}\n"
                    "  - kind: set_logit\n    token: ' b'\n    to: max+1\n    to: min\n")
    with pytest.raises(InvalidArgument, match=r"specs.yaml: interventions\[1\], line 6: key 'to' "
                                              r"is given twice \(first at line 5\)"):
        load_specs(path)
    with pytest.raises(InvalidArgument, match="key 'to' is given twice"):
        from_json('[{"kind": "set_logit", "token": " b", "to": "max", "to": "min"}]')


# -- encodings ---------------------------------------------------------------------------
@pytest.mark.parametrize("data,offset,line", [(b"- prompt: caf\xe9\n", 13, 1),
                                              (b"- name: a\n  prompt: \xff\xfe x\n", 20, 2)])
def test_non_utf8_bytes_name_the_file_and_byte(tmp_path, data, offset, line):
    assert data[offset] >= 0x80  # the first byte that is not UTF-8, found by hand
    path = tmp_path / "test_x.logit.yaml"
    path.write_bytes(data)
    with pytest.raises(BehaviourFileError, match=f"test_x.logit.yaml: not UTF-8 text: byte "
                                                 f"{offset} \\(line {line}, "):
        load_suite(path)
    spec = tmp_path / "specs.yaml"
    spec.write_bytes(data)
    with pytest.raises(InvalidArgument, match=f"specs.yaml'?: not UTF-8 text: byte {offset} "):
        load_specs(spec)


def test_non_utf8_file_is_a_usage_error_in_the_cli(tmp_path, capsys):
    from logitprobe.cli import main

    path = tmp_path / "test_x.logit.yaml"
    path.write_bytes(b"- prompt: caf\xe9\n  expect: {argmax: ' y'}\n")
    assert main(["run", str(path), "--model", "/no/such/model"]) == 2
    captured = capsys.readouterr()
    assert "test_x.logit.yaml: not UTF-8 text: byte 13" in captured.out + captured.err


def test_other_unloadable_values_are_named_errors():
    for body, match in [("- {prompt: x, expect: {argmax: a}, ? [1]: 2}\n", "unhashable key"),
                        ("- {prompt: x, expect: {argmax: " + "1" * 5000 + "}}\n", "digits"),
                        ("- {prompt: x, expect: {argmax: 2001-13-45}}\n", "month")]:
        with pytest.raises(BehaviourFileError, match=f"test_geo.logit.yaml: invalid YAML value.*"
                                                     f"{match}"):
            parse(body)


# -- bounded echoes ----------------------------------------------------------------------
def test_short_is_bounded_for_values_that_share_structure():
    value: list = ["lol"] * 9
    for _ in range(8):
        value = [value] * 9  # repr() would be 3 GB
    for width in (20, 80, 300):
        shown = short(value, width)
        assert len(shown) <= width and shown.startswith("[[[")
    assert short("The capital", 80) == repr("The capital")
    long = "x" * 10 ** 6
    assert short(long, 30) == repr(long)[:28] + "…'"


def test_echoed_values_are_shortened():
    items = ", ".join(str(i) for i in range(50_000))
    with pytest.raises(BehaviourFileError) as info:
        parse(f"- prompt: [{items}]\n  expect: {{argmax: ' y'}}\n")
    assert "`prompt` must be a non-empty string, not [0, 1, 2, 3, 4, 5, ...]" in str(info.value)
    assert len(str(info.value)) < 300
    with pytest.raises(InvalidArgument) as info:
        from_yaml(f"- {{kind: set_logit, token: [{items}], to: max}}\n")
    assert len(str(info.value)) < 300 and "token=[0, 1, 2, 3, 4, 5, ...]" in str(info.value)


# -- interventions at parse time ---------------------------------------------------------
@pytest.mark.parametrize("spec,match", [
    ("{kind: ablate, hook: blocks.0.hook_resid_post}", r"kind='ablate': unknown intervention kind"
                                                       r" \(did you mean 'zero_ablate'\?\)"),
    ("{kind: set_logit, token: ' a', to: max+}", "SetLogit: to='max\\+': the expression ends"),
    ("{kind: set_logit, token: ' a', to: max, amount: 3}", "set_logit: unknown field 'amount'"),
    ("{kind: scale, hook: blocks.0.hook_resid_post, factor: 2, positions: banana}",
     "positions='banana'"),
])
def test_interventions_are_checked_when_the_file_is_read(spec, match):
    with pytest.raises(BehaviourFileError, match="test_geo.logit.yaml, case 2 'capital': "
                                                 rf"interventions\[1\]: .*{match}"):
        parse(f"""\
            - {{prompt: x, expect: {{argmax: ' y'}}}}
            - name: capital
              prompt: "The capital of France is"
              interventions: [{{kind: ban_tokens, tokens: [' a']}}, {spec}]
              expect: {{argmax: " Paris"}}
            """)


# -- checks with the tokenizer alone -----------------------------------------------------
class Counter:
    """Words as tokens; ``bos`` adds one token when special tokens are on."""

    def __init__(self, n_ctx, bos=False):
        self.n_ctx, self.bos = n_ctx, bos

    def count(self, text):
        n = len(text.split())
        return n, n + (self.bos and n > 0)

    def pieces(self, text):
        return len(text.split())


def one_case(body: str):
    return parse(body).cases[0]


def test_token_problems_found_without_weights():
    long = " ".join(["w"] * 11)
    case = one_case(f"- {{name: c, prompt: {long!r}, expect: {{argmax: ' y'}}}}\n")
    assert token_problem(case, Counter(10)) == (
        f"test_geo.logit.yaml, case 1 'c': prompt {short(long, 80)} is 11 tokens, longer than "
        "the model's context of 10; shorten it")
    assert token_problem(case, Counter(11)) is None and token_problem(case, Counter(None)) is None
    case = one_case("- {name: c, prompt: 'a b c', position: 4, expect: {argmax: ' y'}}\n")
    assert token_problem(case, Counter(10, bos=True)) == (
        "test_geo.logit.yaml, case 1 'c': position=4: prompt 'a b c' has 4 tokens, so "
        "`position` must be in [-4, 3]")
    case = one_case("- {name: c, prompt: 'a b c', position: 3, expect: {argmax: ' y'}}\n")
    # The tokenizer adds no BOS (3 tokens), but the model might add one: not reported.
    assert token_problem(case, Counter(10)) is None
    case = one_case("- {name: c, prompt: 'a b c', position: -5, expect: {argmax: ' y'}}\n")
    assert "position=-5: prompt 'a b c' has 3 tokens, so `position` must be in [-3, 2]" in (
        token_problem(case, Counter(10)))
    case = one_case("- {name: c, prompt: ' ', expect: {argmax: ' y'}}\n")
    assert "prompt ' ' is 0 tokens" in token_problem(case, Counter(10))
    case = one_case("- {name: c, prompt: 'a b',\n"
                    "   expect: {close_to: {prompt: 'a b c d e', tv: 1}}}\n")
    assert "close_to: `prompt` 'a b c d e' is 5 tokens, longer than the model's context of 4" in (
        token_problem(case, Counter(4)))
    case = one_case("- {name: c, prompt: 'a b', expect: {greedy_starts_with: 'c d e'}}\n")
    assert token_problem(case, Counter(5)) is None  # 2 + 3 tokens, the last is never input
    assert ("greedy_starts_with: the prompt and 'c d e' are 5 tokens, longer than the model's "
            "context of 3") in token_problem(case, Counter(3))


def test_token_counter_matches_hugging_face(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    from logitprobe._yaml_items import TokenCounter

    counter = TokenCounter.for_model(str(tiny_gpt2_dir))
    hf = AutoTokenizer.from_pretrained(str(tiny_gpt2_dir))
    assert counter.n_ctx == json.loads((tiny_gpt2_dir / "config.json").read_text())["n_positions"]
    for text in ["The cat sat on the", " hello", "", "a\n\nb  c", "ünï 日本", "x" * 300]:
        assert counter.count(text)[1] == len(hf(text)["input_ids"])
        assert counter.pieces(text) == len(hf(text, add_special_tokens=False)["input_ids"])
    assert TokenCounter.for_model("/no/such/model") is None
    assert TokenCounter.for_model("no-such-org/no-such-model") is None


# -- run-time errors name the file and the case ------------------------------------------
def test_run_time_errors_name_file_and_case(tiny):
    long = " ".join(["cat"] * 300)
    case = one_case(f"- {{name: long, prompt: {long!r}, expect: {{argmax: ' y'}}}}\n")
    with pytest.raises(PromptError, match="test_geo.logit.yaml, case 1 'long': prompt="):
        check_case(tiny, case)
    case = one_case("""\
        - name: hook
          prompt: The cat sat on the
          interventions: [{kind: zero_ablate, hook: blocks.7.hook_resid_post}]
          expect: {entropy_at_most: 100}
        """)
    with pytest.raises(LogitProbeError, match="test_geo.logit.yaml, case 1 'hook': .*blocks.7"):
        check_case(tiny, case)


def test_both_loaders_use_the_c_parser_when_present():
    assert _safe_yaml._Loader is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- fuzzing -----------------------------------------------------------------------------
_YAML_CHARS = st.sampled_from(list("-:{}[]&*!|>'\"#?,.% \n\tab0123") + ["\ud800", "é", "\x16"])


@settings(max_examples=150, deadline=None)
@given(text=st.text(_YAML_CHARS, max_size=120))
def test_any_document_gives_a_suite_or_a_named_error(text):
    try:
        parse_suite(text, source="f.logit.yaml")
    except BehaviourFileError as exc:
        assert str(exc).startswith("f.logit.yaml") and len(str(exc)) < 1000
    try:
        from_yaml(text, source="s.yaml")
    except InvalidArgument as exc:
        assert str(exc).startswith("s.yaml") and len(str(exc)) < 1000


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=60))
def test_any_bytes_give_a_suite_or_a_named_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "test_f.logit.yaml"
    path.write_bytes(b"- prompt: x\n  expect: {argmax: ' y'}\n  name: " + data)
    try:
        load_suite(path)
    except BehaviourFileError as exc:
        assert str(exc).startswith("test_f.logit.yaml")
