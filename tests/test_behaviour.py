"""Behavioural test files: schema validation, batching (counted forwards), checks vs HF."""

from __future__ import annotations

import textwrap

import pytest
import torch

from logitprobe import behaviour
from logitprobe.assertions import LogitAssertionError
from logitprobe.behaviour import BehaviourFileError, check_case, parse_suite, prefetch


def parse(text: str, source: str = "test_geo.logit.yaml") -> behaviour.Suite:
    return parse_suite(textwrap.dedent(text), source=source)


# -- schema ------------------------------------------------------------------------------
def test_parse_forms_names_and_lines():
    suite = parse("""\
        model: smollm2
        cases:
          - name: capital
            prompt: "The capital of France is"
            expect:
              in_top: " Paris"
              rank_at_most: [" Paris", 3]
              more_likely: {token: " Paris", than: " London", margin: 0.5}
          - prompt: "I like oat milk in my"
            position: -2
            expect:
              - not_in_top: {token: " Paris", k: 10}
              - not_in_top: {token: " Rome", k: 10}
          - prompt: "I like oat milk in my"
            xfail: known bug
            expect: {argmax: 42}
        """)
    assert suite.model == "smollm2" and suite.source == "test_geo.logit.yaml"
    a, b, c = suite.cases
    assert (a.name, a.index, a.line) == ("capital", 1, 3)
    assert [e.name for e in a.expectations] == ["in_top", "rank_at_most", "more_likely"]
    assert a.expectations[0].args == (("token", " Paris"),)
    assert a.expectations[1].args == (("token", " Paris"), ("rank", 3))
    assert dict(a.expectations[2].args) == {"token": " Paris", "than": " London", "margin": 0.5}
    assert (b.name, b.position, b.line) == ("I_like_oat_milk_in_my", -2, 9)
    assert [e.get("token") for e in b.expectations] == [" Paris", " Rome"]
    assert c.name == "I_like_oat_milk_in_my-3" and c.xfail == "known bug"


@pytest.mark.parametrize("body, message", [
    ("- {name: a, prompt: x, expect: {argmax: ' y'}}\n"
     "- {name: b, prompt: x, expect: {argmax: ' y'}}\n"
     "- name: capital\n  prompt: The capital of France is\n  expect:\n"
     "    in_topk: {token: ' Paris', k: 5}\n",
     "test_geo.logit.yaml, case 3 'capital': unknown expectation 'in_topk', "
     "did you mean 'in_top'?"),
    ("- prompt: x\n  expects: {argmax: ' y'}\n",
     "test_geo.logit.yaml, case 1 'x': unknown field 'expects', did you mean 'expect'?"),
    ("- name: a\n  expect: {argmax: ' y'}\n",
     "case 1 'a': `prompt` must be a non-empty string, not None"),
    ("- prompt: x\n  expect: argmax\n", "case 1 'x': `expect` must be a mapping of expectations"),
    ("- prompt: x\n  expect: {}\n", "case 1 'x': `expect` is empty"),
    ("- prompt: x\n  expect: {rank_at_most: ' y'}\n", "case 1 'x': rank_at_most: missing 'rank'"),
    ("- prompt: x\n  expect: {in_top: {token: ' y', k: 0}}\n",
     "case 1 'x': in_top: `k` must be an int >= 1, not 0"),
    ("- prompt: x\n  expect: {prob_at_least: [' y', 1.5]}\n",
     "prob_at_least: `p` must be a number between 0 and 1, not 1.5"),
    ("- prompt: x\n  expect: {in_top: {tokn: ' y'}}\n",
     "case 1 'x': in_top: unknown field 'tokn', did you mean 'token'?"),
    ("- prompt: x\n  expect: {argmax: [' y', 2]}\n",
     "argmax: got 2 values, it takes at most 1 (token)"),
    ("- prompt: x\n  expect: {argmax: ''}\n", "argmax: `token` must be a token string"),
    ("- prompt: x\n  interventions: {layer: 3}\n  expect: {argmax: ' y'}\n",
     "`interventions` must be a list of mappings"),
    ("- prompt: x\n  position: last\n  expect: {argmax: ' y'}\n", "`position` must be an int"),
    ("- {name: a, prompt: x, expect: {argmax: ' y'}}\n"
     "- {name: a, prompt: z, expect: {argmax: ' y'}}\n",
     "case 2 'a': duplicate case name (case 1 has it too)"),
    ("- prompt: x\n  expect: {argmax: ' y'\n", "test_geo.logit.yaml: invalid YAML (line"),
    ("prompt: x\n", "test_geo.logit.yaml: the file is one case; a file is a list of cases"),
    ("modle: gpt2\ncases: []\n", "unknown field 'modle', did you mean 'model'?"),
    ("cases: []\n", "expected a non-empty list of cases"),
    ("- prompt: x\n  expect: {close_to: {prompt: y}}\n", "close_to: give a bound, `kl`"),
    ("- prompt: x\n  expect: {prob_increases: ' y'}\n",
     "prob_increases would compare the case with itself; give `from:`"),
    ("- prompt: x\n  skip: 3\n  expect: {argmax: ' y'}\n",
     "`skip` must be true or a reason string"),
    ("- !!python/object/apply:os.system ['echo unsafe']\n", "invalid YAML"),
    ("- 42\n", "case 1: a case must be a mapping with `prompt` and `expect`, not int 42"),
])
def test_invalid_files_name_file_case_and_field(body, message):
    with pytest.raises(BehaviourFileError) as err:
        parse(body)
    assert message in str(err.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(BehaviourFileError, match=r"missing\.logit\.yaml: cannot read the file"):
        behaviour.load_suite(tmp_path / "missing.logit.yaml")


# -- batching ----------------------------------------------------------------------------
PROMPTS = [f"The {a} {b} sat on the" for a in ("cat", "dog", "bird", "fox", "log", "mat")
           for b in ("quick", "lazy", "brown", "purple", "red", "old", "tiny", "big", "wet", "dry")]


def many_cases(n: int) -> behaviour.Suite:
    lines = [f"- prompt: {p!r}\n  expect:\n    rank_at_most: [' the', 1000]\n"
             f"    entropy_at_most: 10.0\n" for p in PROMPTS[:n]]
    return parse("".join(lines))


def test_prefetch_batches_all_cases(tiny):
    suite = many_cases(60)
    tiny.clear_cache()
    before = tiny.stats.snapshot()
    results = prefetch(tiny, list(suite.cases))
    used = (tiny.stats - before).forwards
    # The same prompts in one direct batched call (cache cleared): what batching costs.
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    tiny.next_token(PROMPTS[:60])
    direct = (tiny.stats - mark).forwards
    assert used == direct and used <= 60 // 10
    # Every case then runs from the prefetched results: no more forwards, results released.
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    for case in suite.cases:
        check_case(tiny, case, results)
    assert (tiny.stats - mark).forwards == 0 and len(results) == 0


def test_prefetch_groups_scores_and_baselines(tiny):
    suite = parse("""\
        - prompt: "The cat sat on the"
          expect:
            greedy_starts_with: " mat."
            prob_increases: {token: " mat", from: "The dog sat on the", by: 0.0}
        - prompt: "The bird sang in the"
          expect:
            greedy_starts_with: " tree."
            close_to: {prompt: "A bird sang in the", kl: 100.0}
        """)
    queries = [q for c in suite.cases for q in behaviour.queries(c)]
    assert sorted(q[0] for q in queries) == ["next", "next", "next", "next", "score", "score"]
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    results = prefetch(tiny, list(suite.cases))
    # One forward for the 4 prompts, one for both scores (" mat." is two tokens: the score
    # runs prompt + " mat", a sequence of its own).
    assert (tiny.stats - mark).forwards == 2
    assert len(results) == 6


def test_a_failing_batch_leaves_each_case_its_own_error(tiny):
    long_prompt = "the " * (tiny.n_ctx + 5)
    suite = parse(f"""\
        - prompt: "The cat sat on the"
          expect: {{rank_at_most: [" the", 1000]}}
        - prompt: {long_prompt!r}
          expect: {{rank_at_most: [" the", 1000]}}
        """)
    results = prefetch(tiny, list(suite.cases))
    assert len(results) == 0  # the batch failed as a whole
    check_case(tiny, suite.cases[0], results)
    with pytest.raises(Exception, match="longer than the model's context"):
        check_case(tiny, suite.cases[1], results)


# -- checking, compared with a separate Hugging Face model -------------------------------
@pytest.fixture(scope="module")
def hf_ranked(tiny_hf):
    hf, tok = tiny_hf
    prompt = "I like oat milk in my"
    with torch.no_grad():
        logits = hf(torch.tensor([tok(prompt).input_ids])).logits[0, -1]
    order = logits.argsort(descending=True).tolist()
    return prompt, order


def test_check_case_passes_and_fails_like_hf(tiny, hf_ranked):
    prompt, order = hf_ranked
    suite = parse(f"""\
        - name: holds
          prompt: {prompt!r}
          expect:
            argmax: {order[0]}
            in_top: [{order[4]}, 5]
            not_in_top: [{order[5]}, 5]
        - name: one_fails
          prompt: {prompt!r}
          expect:
            argmax: {order[0]}
            in_top: [{order[5]}, 5]
        - name: two_fail
          prompt: {prompt!r}
          expect:
            argmax: {order[1]}
            rank_at_most: [{order[2]}, 2]
            entropy_at_least: 0.0
        """)
    ok, one, two = suite.cases
    check_case(tiny, ok)
    with pytest.raises(LogitAssertionError) as err:
        check_case(tiny, one)
    assert str(err.value).startswith("test_geo.logit.yaml, case 2 'one_fails', in_top: ")
    assert "it is rank 6" in err.value.verdict
    with pytest.raises(LogitAssertionError) as err:
        check_case(tiny, two)
    assert err.value.verdict == ("test_geo.logit.yaml, case 3 'two_fail': 2 of 3 expectations "
                                 "failed (argmax, rank_at_most)")
    assert "[expectation 1/3: argmax]" in err.value.evidence
    assert "[expectation 2/3: rank_at_most]" in err.value.evidence


def test_token_errors_are_reported_per_case(tiny, hf_ranked):
    prompt, _ = hf_ranked
    case = parse(f"- prompt: {prompt!r}\n  expect: {{not_in_top: ' oat milk'}}\n").cases[0]
    with pytest.raises(Exception) as err:
        check_case(tiny, case)
    assert "not_in_top: token=' oat milk' is 2 tokens" in str(err.value)


def test_interventions_are_passed_through(tiny):
    class Spy:
        """Delegates to the tiny probe, recording the interventions each query got."""

        def __init__(self, probe):
            self.probe, self.seen = probe, []

        def next_token(self, prompt, *, position=-1, interventions=None):
            self.seen.append(interventions)
            return self.probe.next_token(prompt, position=position)

    suite = parse("""\
        - prompt: "The cat sat on the"
          interventions: [{kind: zero_ablate, hook: blocks.0.hook_resid_post}]
          expect:
            entropy_at_most: 10.0
            close_to: {tv: 1.0}
        """)
    spy = Spy(tiny)
    check_case(spy, suite.cases[0], prefetch(spy, list(suite.cases)))
    ablate = {"kind": "zero_ablate", "hook": "blocks.0.hook_resid_post"}
    assert [ablate] in spy.seen and None in spy.seen


def test_cases_with_real_interventions(tiny, hf_ranked):
    prompt, order = hf_ranked
    low = order[500]  # a token far down the unedited distribution (ranked by Hugging Face)
    suite = parse(f"""\
        - name: steered
          prompt: {prompt!r}
          interventions: [{{kind: add_logit, token: {low}, amount: 50.0}}]
          expect:
            argmax: {low}
            prob_increases: {{token: {low}, by: 0.9}}
            close_to: {{tv: 0.5}}
        """)
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    results = prefetch(tiny, list(suite.cases))
    assert (tiny.stats - mark).forwards == 2  # the edited forward and the plain baseline
    with pytest.raises(LogitAssertionError) as err:
        check_case(tiny, suite.cases[0], results)
    # argmax and prob_increases hold; the distribution moved far, so close_to fails.
    assert err.value.verdict.startswith("test_geo.logit.yaml, case 1 'steered', close_to: ")
    assert "TV=" in err.value.verdict


def test_run_suite(tiny, hf_ranked, tmp_path):
    prompt, order = hf_ranked
    path = tmp_path / "test_x.logit.yaml"
    path.write_text(f"- prompt: {prompt!r}\n  expect: {{argmax: {order[0]}}}\n"
                    f"- prompt: {prompt!r}\n  expect: {{argmax: {order[1]}}}\n")
    (ok, none), (bad, err) = behaviour.run_suite(tiny, path)
    assert none is None and isinstance(err, LogitAssertionError)
    assert bad.index == 2 and "case 2" in str(err)
