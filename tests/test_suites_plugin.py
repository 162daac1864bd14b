"""Behaviour suites through pytest (pytester) and the CLI, on the tiny random GPT-2.

YAML template entries expand into one test per case; Python tests over template
cases get readable ids and one batched pass; the run ends with the capability x
test-type matrix, JUnit XML properties and (on request) the HTML report.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# Imported here so pytester's in-process runs keep using one copy of each module.
import logitprobe._suite_plugin  # noqa: F401
import logitprobe._yaml_items  # noqa: F401
import logitprobe.assertions  # noqa: F401
from logitprobe import cli
from logitprobe.behaviour import BehaviourFileError, parse_suite

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
QUIET = ("--logitprobe-device=cpu", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
         "-p", "no:hypothesispytest")
ANIMALS = ["cat", "dog", "bird"]
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture
def run_tiny(pytester, tiny_gpt2_dir, tiny):
    def run(*args):
        return pytester.runpytest(f"--logitprobe-model={tiny_gpt2_dir}", *QUIET, *args)
    return run


def _suite(tiny) -> str:
    """A template entry whose `cat` and `dog` rows hold and whose `bird` row fails."""
    rows = []
    for animal in ANIMALS:
        nt = tiny.next_token(f"The {animal} sat on the")
        words = [c for c in nt.top(200) if c.token.strip().isalpha()]  # plain YAML strings
        answer = words[0] if animal != "bird" else next(c for c in words if c.rank > 50)
        rows.append(f"    - {{animal: {animal}, answer: {answer.token!r}}}")
    return textwrap.dedent("""\
        - template: "The {animal} sat on the"
          name: "sat-{animal}"
          capability: animals
          rows:
        %s
          expect:
            in_top: {token: "{answer}", k: 50}
          perturb: [neutral_clause]
          expect_perturbed:
            close_to: {tv: 1.0}
        - template: "A {animal} is"
          capability: animals
          group: animals-rate
          pass_rate: {at_least: 0.5}
          lexicons: {animal: [cat, dog]}
          expect:
            rank_at_most: {token: " the", rank: 1000}
        """) % "\n".join(rows)


def test_yaml_templates_expand_into_cases_with_matrix_junit_and_html(pytester, run_tiny, tiny,
                                                                     tmp_path):
    pytester.makefile(".logit.yaml", test_animals=_suite(tiny))
    junit, html = tmp_path / "junit.xml", tmp_path / "out" / "report.html"
    result = run_tiny("-v", f"--junitxml={junit}", f"--logitprobe-html={html}")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines([
        "*test_animals.logit.yaml::sat-cat PASSED*",
        "*test_animals.logit.yaml::sat-bird FAILED*",
        "*test_animals.logit.yaml::sat-cat~neutral_clause PASSED*",
        "*test_animals.logit.yaml::animals-rate PASSED*",
        "*logitprobe suite: capability x test type*",
        "capability |      MFT      |      INV      |      DIR      |     total",
        "animals    | 5 / 1 fail    | 3 / 0 fail    |       -       | 8 / 1 fail",
        f"logitprobe: HTML report written to {html}",
    ])
    # JUnit XML: each case's properties (rank and probability of its target token).
    cases = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
             for c in ET.parse(junit).getroot().iter("testcase")}
    cat = cases["sat-cat"]
    nt = tiny.next_token("The cat sat on the")
    assert cat["logitprobe.capability"] == "animals" and cat["logitprobe.type"] == "MFT"
    answer = next(c for c in nt.top(200) if c.token.strip().isalpha())
    assert cat["logitprobe.target"] == answer.token
    assert cat["logitprobe.rank"] == str(answer.rank)
    assert float(cat["logitprobe.prob"]) == pytest.approx(answer.prob, abs=1e-6)
    assert json.loads(cat["logitprobe.top"])[0][0] == nt.argmax.token
    assert cases["sat-cat~neutral_clause"]["logitprobe.base"] == "sat-cat"
    assert int(cases["sat-bird"]["logitprobe.rank"]) > 50
    # The HTML page: parses, lists every case, embeds the failing case's chart.
    root = ET.parse(html).getroot()
    listed = ["".join(e.itertext()) for e in root.iter(f"{XHTML}span")
              if e.get("class") == "lp-case"]
    assert sorted(listed) == sorted(["sat-cat", "sat-dog", "sat-bird", "sat-cat~neutral_clause",
                                     "sat-dog~neutral_clause", "sat-bird~neutral_clause",
                                     "cat", "dog"])
    failures = [e for e in root.iter(f"{XHTML}div") if e.get("class") == "lp-failure"]
    assert len(failures) == 1
    assert failures[0].find(".//{http://www.w3.org/2000/svg}svg") is not None
    assert "'sat-bird', in_top" in "".join(failures[0].itertext())


def test_yaml_pass_rate_group_fails_with_how_many_had_to_pass(pytester, run_tiny, tiny):
    rows = _suite(tiny).split("  rows:\n", 1)[1].split("  expect:", 1)[0]  # cat, dog hold
    pytester.makefile(".logit.yaml", test_rate=(
        '- template: "The {animal} sat on the"\n  group: sitting\n'
        '  pass_rate: {at_least: 0.9}\n  rows:\n' + rows +
        '  expect:\n    in_top: {token: "{answer}", k: 50}\n'))
    result = run_tiny()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*sitting: 2 of 3 passed (66.7%), expected at least 90%; 3 had to pass (1 more)",
        "failing cases, worst first (1):",
        "- bird (severity *): *is not in the top 50*",  # worst first: 1 - p(expected)
    ])
    nt = tiny.next_token("The bird sat on the")
    bird = next(c for c in nt.top(200) if c.token.strip().isalpha() and c.rank > 50)
    result.stdout.fnmatch_lines([f"- bird (severity {1 - bird.prob:.4g}): *"])


def test_python_template_cases_get_ids_and_one_batched_pass(pytester, run_tiny, tiny):
    pytester.makepyfile(test_tpl="""
        import pytest
        from logitprobe.templates import expand
        from logitprobe.perturbations import NeutralClause, perturb

        CASES = expand("The {animal} sat on the {thing}", capability="animals",
                       lexicons={"animal": ["cat", "dog", "bird", "cow"],
                                 "thing": ["mat", "rug", "bed", "box", "sofa"]})

        @pytest.mark.parametrize("case", CASES + perturb(CASES, NeutralClause()))
        def test_case(probe, case):
            prompts = case.prompts
            for p in prompts:
                probe.next_token(p)
    """)
    from logitprobe.perturbations import NeutralClause, perturb
    from logitprobe.templates import expand

    cases = expand("The {animal} sat on the {thing}", lexicons={
        "animal": ["cat", "dog", "bird", "cow"], "thing": ["mat", "rug", "bed", "box", "sofa"]})
    prompts = list(dict.fromkeys(p for c in cases + perturb(cases, NeutralClause())
                                 for p in c.prompts))
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    tiny.next_token(prompts)
    batched = (tiny.stats - mark).forwards  # the engine's own batching of these prompts
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    result = run_tiny("-v")
    result.assert_outcomes(passed=40)
    result.stdout.fnmatch_lines(["*test_case[[]cat-mat[]] PASSED*",
                                 "*test_case[[]cow-sofa~neutral_clause[]] PASSED*",
                                 "animals    | 20 / 0 fail   | 20 / 0 fail*"])
    assert (tiny.stats - mark).forwards == batched < 40


def test_python_batches_stay_within_half_the_forward_cache(pytester, run_tiny, tiny,
                                                          monkeypatch):
    pytester.makepyfile(test_small="""
        import pytest
        from logitprobe.templates import expand

        @pytest.mark.parametrize("case", expand("The {a} sat", lexicons={"a": list("abcdefghij")}))
        def test_case(probe, case):
            probe.next_token(case.prompt)
    """)
    monkeypatch.setattr(tiny.engine, "cache_bytes", 2 * 8 * tiny.vocab_size * 3)  # 3 cases
    calls = []
    real = type(tiny).next_token

    def spy(self, prompt, **kwargs):
        if isinstance(prompt, list):
            calls.append(len(prompt))
        return real(self, prompt, **kwargs)

    monkeypatch.setattr(type(tiny), "next_token", spy)
    tiny.clear_cache()
    run_tiny().assert_outcomes(passed=10)
    assert calls == [3, 3, 3, 1]  # prefetches of at most 3 cases


def test_yaml_template_errors_name_the_entry():
    with pytest.raises(BehaviourFileError, match=r"case 1 template 'x \{a\} \{b\}': .*no values for \{b\}"):
        parse_suite("- template: 'x {a} {b}'\n  lexicons: {a: [1]}\n  expect: {argmax: ' y'}\n")
    with pytest.raises(BehaviourFileError, match="`perturb` and `expect_perturbed` go together"):
        parse_suite("- template: 'x {a}'\n  lexicons: {a: [1]}\n  perturb: [typo]\n"
                    "  expect: {argmax: ' y'}\n")
    with pytest.raises(BehaviourFileError, match="unknown perturbation 'tpyo'"):
        parse_suite("- template: 'x {a}'\n  lexicons: {a: [1]}\n  perturb: [tpyo]\n"
                    "  expect_perturbed: {argmax_unchanged: {}}\n")
    with pytest.raises(BehaviourFileError, match="`direction` must be 'up' or 'down'"):
        parse_suite("- prompt: x\n  expect: {rank_moves: {token: ' y', by: 2, direction: left,"
                    " from: z}}\n")
    with pytest.raises(BehaviourFileError, match="pass_rate: at_least=2"):
        parse_suite("- template: 'x {a}'\n  lexicons: {a: [1]}\n  pass_rate: {at_least: 2}\n"
                    "  expect: {argmax: ' y'}\n")


def test_yaml_expected_tokens_come_from_rows_and_perturbed_cases_compare_with_base():
    suite = parse_suite(textwrap.dedent("""\
        - template: "{name} went to {city}"
          capability: travel
          rows: [{city: Paris, want: " by"}]
          lexicons: {name: [Ann, Bob]}
          expect: {prob_close: {token: "{want}", value: 0.5, abs: 0.5}}
          perturb: [swap_name]
          expect_perturbed:
            prob_within: {token: "{want}", tol: 0.1}
            rank_moves: [" {city}", 1, up]
        """))
    names = [c.name for c in suite.cases]
    assert names == ["Ann-Paris", "Bob-Paris", "Ann-Paris~swap_name", "Bob-Paris~swap_name"]
    first, perturbed = suite.cases[0], suite.cases[2]
    assert first.expectations[0].get("token") == " by" and first.test_type == "MFT"
    assert perturbed.prompt == "Bob went to Paris" and perturbed.base == "Ann-Paris"
    assert perturbed.test_type == "INV" and perturbed.capability == "travel"
    assert [e.get("from") for e in perturbed.expectations] == ["Ann went to Paris"] * 2
    assert perturbed.expectations[1].get("token") == " Paris"


def test_cli_run_prints_the_matrix_and_json(tiny_gpt2_dir, tiny, tmp_path, capsys):
    path = tmp_path / "test_animals.logit.yaml"
    path.write_text(_suite(tiny))
    args = ["--model", str(tiny_gpt2_dir), "--device", "cpu"]
    assert cli.main(["run", str(path), *args]) == 1  # sat-bird fails
    out = capsys.readouterr()
    text = out.out + out.err
    assert "animals    | 5 / 1 fail    | 3 / 0 fail" in text
    assert "PASSED  " in text and "animals-rate (pass rate: 2 of 2)" in text
    assert cli.main(["run", str(path), "--json", *args]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["matrix"]["rows"]["animals"]["MFT"] == {"cases": 5, "failures": 1, "rate": 0.8}
    assert data["groups"][0]["group"] == "animals-rate" and data["groups"][0]["passed"] == 2
    assert data["summary"]["failed"] == 1
    html = tmp_path / "report.html"
    assert cli.main(["run", str(path), "--html", str(html), *args]) == 1
    capsys.readouterr()
    root = ET.parse(html).getroot()
    listed = ["".join(e.itertext()) for e in root.iter(f"{XHTML}span")
              if e.get("class") == "lp-case"]
    assert len(listed) == 8 and "sat-bird~neutral_clause" in listed
    failures = [e for e in root.iter(f"{XHTML}div") if e.get("class") == "lp-failure"]
    assert len(failures) == 1
    assert failures[0].find(".//{http://www.w3.org/2000/svg}svg") is not None


def test_matrix_survives_xdist(pytester, tiny_gpt2_dir, tiny):
    pytester.makefile(".logit.yaml", test_animals=_suite(tiny))
    result = pytester.runpytest_subprocess("-n", "2", f"--logitprobe-model={tiny_gpt2_dir}",
                                           *QUIET, timeout=240)
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*2 workers*", "animals    | 5 / 1 fail    | 3 / 0 fail*"])


def test_example_checklist_says_what_smollm2_does(smol, smol_hf, capsys):
    """The comments of examples/behaviour/test_checklist.logit.yaml are the model's behaviour."""
    import torch

    path = ROOT / "examples" / "behaviour" / "test_checklist.logit.yaml"
    assert cli.main(["run", str(path), "--model", "smollm2", "--device", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    groups = {g["group"]: (g["passed"], g["n"], g["status"]) for g in data["groups"]}
    assert groups == {"capitals-argmax": (10, 12, "passed"), "antonyms": (9, 10, "passed"),
                      "typo-robustness": (0, 4, "xfailed")}
    failing = sorted(r["case"] for r in data["results"] if r["status"] == "failed")
    assert failing == ["antonym-early", "capital-argmax-Egypt", "capital-argmax-Poland"]
    model, tok = smol_hf  # independently: Egypt's and Poland's argmax is " the"
    for country in ("Egypt", "Poland"):
        ids = tok(f"The capital of {country} is", return_tensors="pt").input_ids
        with torch.no_grad():
            top = int(model(ids).logits[0, -1].argmax())
        assert tok.decode([top]) == " the"
