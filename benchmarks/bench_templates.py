"""Templated-suite benchmark (issue 14): 1,000 template cases vs the bare batched forwards.

One template (``"{name} {verb} the {thing} and"``, 10 x 10 x 10 lexicons) run
three ways, timed round-robin so they see the same load:

- YAML: a ``test_*.logit.yaml`` file with one template entry, read (expanded
  at load) and checked by ``behaviour.run_suite``: one batched pass;
- Python tests: ``pytest`` (in-process, model already loaded) on a module with
  ``@pytest.mark.parametrize("case", expand(...))``; the plugin computes every
  case's prompt in one batched pass before the first test, each test then runs
  ``probe.next_token(case.prompt)`` (a cache hit) and two checks;
- bare: the batched forwards over the same prompts (``probe.engine.logits``).

Targets: YAML suite / bare <= 1.3x; the Python-test path's ratio is reported
(pytest's own per-test cost, ~0.2 ms x 1,000 items, is most of its overhead).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import logitprobe
from common import Context, Result, interleaved, ratio, run_pytest
from subjects import gpt2_dir

NAMES = ["Mary", "John", "Anna", "Tom", "Lisa", "Mark", "Sara", "Paul", "Emma", "Jack"]
VERBS = ["put", "saw", "liked", "found", "moved", "cleaned", "bought", "sold", "kept", "lost"]
THINGS = ["cup", "book", "box", "chair", "lamp", "coat", "bag", "key", "pen", "hat"]
TEMPLATE = "{name} {verb} the {thing} and"


def _lexicons(n: int) -> dict[str, list[str]]:
    side = max(2, round(n ** (1 / 3)))
    return {"name": NAMES[:side], "verb": VERBS[:side], "thing": THINGS[:side]}


def _yaml(lex: dict[str, list[str]], vocab_size: int) -> str:
    return (f"- template: {TEMPLATE!r}\n  capability: bench\n"
            f"  lexicons: {{name: {lex['name']}, verb: {lex['verb']}, thing: {lex['thing']}}}\n"
            f"  expect:\n    rank_at_most: [' the', {vocab_size}]\n"
            f"    prob_at_least: [' a', 0.0]\n")


def _module(lex: dict[str, list[str]], vocab_size: int) -> str:
    return f'''
import pytest
from logitprobe import assert_prob_at_least, assert_rank_at_most
from logitprobe.templates import expand

CASES = expand({TEMPLATE!r}, lexicons={lex!r}, capability="bench")


@pytest.mark.parametrize("case", CASES)
def test_case(probe, case):
    nt = probe.next_token(case.prompt)
    assert_rank_at_most(nt, " the", {vocab_size})
    assert_prob_at_least(nt, " a", 0.0)
'''


def run(ctx: Context) -> None:
    from logitprobe import behaviour
    from logitprobe.templates import expand

    n = 64 if ctx.smoke else 1000
    lex = _lexicons(n)
    directory = gpt2_dir(ctx.smoke)
    probe = logitprobe.load(str(directory), device=ctx.device)
    prompts = [c.prompt for c in expand(TEMPLATE, lexicons=lex)]
    n = len(prompts)
    ids = [probe.encode(p) for p in prompts]
    work = Path(tempfile.mkdtemp(prefix="logitprobe-bench-templates-"))
    yaml_path = work / "test_templated.logit.yaml"
    yaml_path.write_text(_yaml(lex, probe.vocab_size))
    py_path = work / "test_templated.py"
    py_path.write_text(_module(lex, probe.vocab_size))

    def yaml_suite():
        outcome = behaviour.run_suite(probe, behaviour.load_suite(yaml_path))
        assert len(outcome) == n and all(e is None for _, e in outcome)

    def bare():
        probe.engine.logits(ids, 1)

    def python_tests():
        run_pytest(py_path, directory, ctx.device, work)

    probe.clear_cache()
    mark = probe.stats.snapshot()
    yaml_suite()
    forwards = (probe.stats - mark).forwards
    probe.clear_cache()
    mark = probe.stats.snapshot()
    with contextlib.redirect_stdout(io.StringIO()):
        python_tests()
    py_forwards = (probe.stats - mark).forwards
    with contextlib.redirect_stdout(io.StringIO()):  # pytest's own report
        res = interleaved({"bare": bare, "yaml": yaml_suite, "python": python_tests},
                          ctx.repeats, setup=probe.clear_cache)
    t_bare, t_yaml, t_py = (res[k][0] for k in ("bare", "yaml", "python"))

    g = "templates"
    ctx.add(Result(g, f"{n} template cases, YAML entry + run_suite", t_yaml.median, "s", t_yaml,
                   note=f"{forwards} batched forwards"))
    ctx.add(Result(g, f"{n} template cases, pytest parametrize", t_py.median, "s", t_py,
                   note=f"{py_forwards} batched forwards"))
    ctx.add(Result(g, f"bare batched forwards for {n} prompts", t_bare.median, "s", t_bare))
    ctx.add(ratio(g, "YAML template suite / bare forwards", t_yaml, t_bare, at_most=1.3))
    ctx.add(ratio(g, "pytest template tests / bare forwards", t_py, t_bare,
                  note="reported; pytest's per-item cost included"))
