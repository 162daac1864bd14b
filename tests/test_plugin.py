"""The pytest plugin, through pytester: evidence on failure, options, marker, YAML files, xdist.

Inner runs are in-process (``runpytest``), so they share this session's loaded
models; the xdist and import checks run in subprocesses.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# Imported here so pytester's in-process runs (which forget modules first imported inside
# them) keep using one copy of each.
import logitprobe._yaml_items  # noqa: F401
import logitprobe.assertions  # noqa: F401

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
FRANCE = "The capital of France is"
# Inner runs: no cache files, no unraisable-exception plugin (its gc passes over this
# process's loaded models), no hypothesis plugin (re-imported and assertion-rewritten on
# every in-process run: ~1 s each).
QUIET = ("--logitprobe-device=cpu", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
         "-p", "no:hypothesispytest")


@pytest.fixture
def run_tiny(pytester, tiny_gpt2_dir, tiny):
    """runpytest with the tiny GPT-2 as the default model (already loaded in this process)."""
    def run(*args):
        # --opt=value: a separate path argument would move pytest's rootdir.
        return pytester.runpytest(f"--logitprobe-model={tiny_gpt2_dir}", *QUIET, *args)
    return run


@pytest.fixture
def run_smol(pytester, smol):
    def run(*args):
        return pytester.runpytest("--logitprobe-model=smollm2", *QUIET, *args)
    return run


# -- plain assert and helpers ------------------------------------------------------------
def test_plain_in_shows_compact_evidence(pytester, run_smol, smol):
    nt = smol.next_token(FRANCE)
    rome, paris = nt.candidate(" Rome"), nt.candidate(" Paris")
    pytester.makepyfile(f"""
        def test_rome(probe):
            assert " Rome" in probe.next_token({FRANCE!r}).top(5)

        def test_no_space(probe):
            assert "Paris" in probe.next_token({FRANCE!r}).top(5)

        def test_not_in(probe):
            assert " Paris" not in probe.next_token({FRANCE!r}).top(5)

        def test_passes(probe):
            assert " Paris" in probe.next_token({FRANCE!r}).top(5)
        """)
    result = run_smol()
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([
        f"E       AssertionError: assert ' Rome' in top 5 after {FRANCE!r}: it is rank {rome.rank}",
        f"E               1 ' Paris' * p={paris.prob:<9.4g} logit={paris.logit:.3f}",
        f"E         > {rome.rank:>5} ' Rome' *",
    ])
    result.stdout.fnmatch_lines([
        "E       AssertionError: assert 'Paris' in top 5 after *",
        "E         hint: did you mean ' Paris' (with a leading space)? It is rank 1 *",
    ])
    result.stdout.fnmatch_lines([
        f"E       AssertionError: assert ' Paris' not in top 5 after {FRANCE!r}: it is rank 1",
        "E         >     1 ' Paris' *",
    ])
    result.stdout.no_fnmatch_line("*truncated*")  # fits pytest's 8 lines / 640 characters


def test_helper_failure_shows_full_table_and_hides_library_frames(pytester, run_smol, smol):
    rank = smol.next_token(FRANCE).rank(" Rome")
    pytester.makepyfile(f"""
        from logitprobe.assertions import assert_in_top

        def test_rome(probe):
            nt = probe.next_token({FRANCE!r})
            assert_in_top(nt, " Rome", k=5)
        """)
    result = run_smol()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        ">       assert_in_top(nt, \" Rome\", k=5)",
        f"E       logitprobe.LogitAssertionError: ' Rome' is not in the top 5 after {FRANCE!r}: "
        f"it is rank {rank} *",
        "E           rank | token *logprob",
        "E                +-- top 5 ends here",
        f"E       > {rank:>6} | ' Rome' *",
    ])
    result.stdout.no_fnmatch_line("*logitprobe/assertions.py*")
    result.stdout.no_fnmatch_line("*logitprobe/_evidence.py*")


# -- options, header, marker -------------------------------------------------------------
def test_header_names_model_device_and_versions(run_tiny, tiny_gpt2_dir, pytester):
    import torch

    pytester.makepyfile("def test_nothing(): pass")
    result = run_tiny("--logitprobe-dtype", "float32")
    result.stdout.fnmatch_lines([f"logitprobe: model={tiny_gpt2_dir}, device=cpu, dtype=float32; "
                                 f"logitprobe *, torch {torch.__version__}, transformers *"])


def test_ini_options_and_command_line_precedence(pytester, tiny_gpt2_dir, tiny):
    pytester.makeini(f"""
        [pytest]
        logitprobe_model = {tiny_gpt2_dir}
        logitprobe_device = cpu
        """)
    pytester.makepyfile(f"""
        def test_model(probe):
            assert probe.vocab_size == {tiny.vocab_size} and str(probe.device) == "cpu"
        """)
    pytester.runpytest(*QUIET[1:]).assert_outcomes(passed=1)
    result = pytester.runpytest(*QUIET[1:], "--logitprobe-model=/no/such/model")
    result.assert_outcomes(errors=1)  # the command line beats the ini file


@pytest.mark.parametrize("args, message", [
    (("--logitprobe-dtype", "fp33"), "--logitprobe-dtype='fp33': must be one of float32, float16"),
    (("--logitprobe-device", "gpu"), "--logitprobe-device='gpu': must be auto, cpu, cuda"),
])
def test_bad_options_are_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*QUIET[1:], *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_marker_selects_a_model_loaded_once(pytester, run_tiny, tiny, smol):
    pytester.makepyfile(test_default=f"""
        import pytest

        SEEN = []

        def test_default(probe):
            assert probe.vocab_size == {tiny.vocab_size}

        @pytest.mark.logitprobe(model="smollm2")
        def test_marked(probe):
            SEEN.append(probe)
            assert probe.vocab_size == {smol.vocab_size}

        @pytest.mark.logitprobe("smollm2", device="cpu")
        def test_marked_again(probe):
            assert probe is SEEN[0]

        @pytest.mark.logitprobe(modle="smollm2")
        def test_typo(probe):
            pass
        """)
    pytester.makepyfile(test_module=f"""
        import pytest

        pytestmark = pytest.mark.logitprobe(model="smollm2")

        def test_module_marker(probe):
            assert probe.vocab_size == {smol.vocab_size}
        """)
    result = run_tiny()
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.logitprobe: unknown argument(s) modle; it takes "
                                 "model, device, dtype"])


def test_unavailable_model_fails_once_or_skips(pytester):
    pytester.makepyfile("""
        def test_a(probe): pass
        def test_b(probe): pass
        def test_c(probe): pass
        def test_unrelated(): pass
        """)
    result = pytester.runpytest(*QUIET[1:], "--logitprobe-model=/no/such/model")
    result.assert_outcomes(passed=1, errors=3)
    # The ERRORS section only: on CI (env CI set) pytest repeats whole messages in the
    # short summary instead of cutting them to the terminal width.
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count("no such file or directory") == 1
    assert out.count("could not be loaded (the first test that needed it shows why)") == 2
    result.stdout.fnmatch_lines(["logitprobe: cannot load model '/no/such/model':",
                                 "model='/no/such/model': no such file or directory.*",
                                 "(--logitprobe-skip-unavailable skips the tests that need it *"])
    result.stdout.no_fnmatch_line("*Traceback*")
    skipped = pytester.runpytest(*QUIET[1:], "-rs", "--logitprobe-model=/no/such/model",
                                 "--logitprobe-skip-unavailable")
    skipped.assert_outcomes(passed=1, skipped=3)
    skipped.stdout.fnmatch_lines([f"SKIPPED *:{i}: logitprobe: model '/no/such/model' is "
                                  "unavailable: model='/no/such/model': no such file*"
                                  for i in (1, 2, 3)])


def test_hooks_left_by_a_test_are_removed(pytester, run_tiny):
    pytester.makepyfile("""
        def count(model):
            points = {id(hp): hp for hp in model.hook_dict.values()}
            return sum(len(hp.fwd_hooks) for hp in points.values())

        def test_leaks(probe):
            probe.model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: x * 0)
            assert count(probe.model) == 1

        def test_next_is_clean(probe):
            assert count(probe.model) == 0
        """)
    result = run_tiny("-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*logitprobe: test_leaks left 1 hook(s) on probe.model; they "
                                 "were removed and the forward cache cleared*"])


def test_an_open_intervene_block_is_closed(pytester, run_tiny, tiny):
    argmax = tiny.next_token("The cat sat on the").argmax
    other = tiny.next_token("The cat sat on the").top(5)[4]
    pytester.makepyfile(f"""
        OPEN = []

        def test_leaks(probe):
            OPEN.append(probe.intervene({{"kind": "add_logit", "token": {other.id}, "amount": 50}}))
            OPEN[0].__enter__()
            assert probe.next_token("The cat sat on the").argmax.id == {other.id}

        def test_next_is_clean(probe):
            assert probe.next_token("The cat sat on the").argmax.id == {argmax.id}
        """)
    result = run_tiny("-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*test_leaks left a probe.intervene(...) block open; it was "
                                 "closed*"])


# -- YAML files --------------------------------------------------------------------------
def yaml_cases(tiny, prompts: list[str]) -> tuple[str, list]:
    """One passing case per prompt (its argmax and 2nd-best token), plus one failing case."""
    nts = tiny.next_token(prompts)
    body = ""
    for i, nt in enumerate(nts):
        top = nt.top(6)
        body += (f"- name: case{i}\n  prompt: {nt.prompt!r}\n  expect:\n"
                 f"    argmax: {top[0].id}\n    in_top: [{top[1].id}, 2]\n")
    return body, nts


def test_yaml_cases_are_items_with_evidence(pytester, run_tiny, tiny):
    body, (nt,) = yaml_cases(tiny, ["The cat sat on the"])
    sixth = nt.top(6)[5]
    body += (f"- name: capital\n  prompt: {nt.prompt!r}\n  expect:\n"
             f"    in_top: [{sixth.id}, 5]\n")
    pytester.makefile(".logit.yaml", test_geo=body)
    result = run_tiny("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "test_geo.logit.yaml::case0 PASSED*",
        "test_geo.logit.yaml::capital FAILED*",
        f"test_geo.logit.yaml, case 2 'capital', in_top: {sixth.token!r} (id {sixth.id}) is not "
        f"in the top 5 after 'The cat sat on the': it is rank {sixth.rank} *",
        f">  {sixth.rank:>5} | {sixth.token!r} *",
        "hint: near miss: 1 place(s) outside the top 5",
    ])
    selected = run_tiny("-k", "capital")
    selected.assert_outcomes(failed=1, deselected=1)


def test_yaml_errors_name_file_case_and_field(pytester, run_tiny):
    pytester.makefile(".logit.yaml", test_geo=textwrap.dedent("""\
        - {name: a, prompt: x, expect: {argmax: ' y'}}
        - {name: b, prompt: x, expect: {argmax: ' y'}}
        - name: capital
          prompt: "The capital of France is"
          expect:
            in_topk: {token: " Paris", k: 5}
        """))
    result = run_tiny()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_geo.logit.yaml*",
                                 "test_geo.logit.yaml, case 3 'capital': unknown expectation "
                                 "'in_topk', did you mean 'in_top'?"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_yaml_suite_is_batched(pytester, run_tiny, tiny):
    prompts = [f"{a} {b} {c}" for a in ("The cat", "A dog", "My friend", "The bird", "She")
               for b in ("sat on", "likes", "drinks", "saw", "wants")
               for c in ("the mat", "coffee", "tea", "the log", "a tree", "the softmax", "Paris",
                         "the lazy dog")][:200]
    body, _ = yaml_cases(tiny, prompts)
    pytester.makefile(".logit.yaml", test_many=body)
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    run_tiny().assert_outcomes(passed=200)
    used = tiny.stats - mark
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    tiny.next_token(prompts)  # the bare batched forwards the suite needs
    bare = tiny.stats - mark
    assert used.forwards == bare.forwards <= 10 and used.sequences == 200
    chosen = [i for i in range(200) if "case7" in f"case{i}" or "case8" in f"case{i}"]
    tiny.clear_cache()
    mark = tiny.stats.snapshot()
    selected = run_tiny("-k", "case7 or case8")
    selected.assert_outcomes(passed=len(chosen), deselected=200 - len(chosen))
    assert (tiny.stats - mark).sequences == len(chosen)  # only the selected cases are computed


def test_yaml_file_model_and_skip_xfail(pytester, run_tiny, smol):
    pytester.makefile(".logit.yaml", test_smol=textwrap.dedent(f"""\
        model: smollm2
        cases:
          - name: paris
            prompt: {FRANCE!r}
            expect: {{argmax: " Paris"}}
          - name: known_wrong
            prompt: {FRANCE!r}
            xfail: SmolLM2 says Paris
            expect: {{argmax: " London"}}
          - name: later
            prompt: {FRANCE!r}
            skip: not today
            expect: {{argmax: " Paris"}}
        """))
    run_tiny().assert_outcomes(passed=1, xfailed=1, skipped=1)


# -- processes ---------------------------------------------------------------------------
def test_importing_the_plugin_does_not_import_torch():
    code = "import logitprobe.pytest_plugin, sys; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_is_harmless_when_unused(pytester):
    pytester.makepyfile("""
        import sys

        def test_torch_not_imported():
            assert "torch" not in sys.modules
        """)
    result = pytester.runpytest_subprocess(*QUIET[1:], timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*plugins:*logitprobe*"])


def test_collecting_behavioural_files_imports_no_torch(tmp_path, tiny_gpt2_dir):
    # Collection (validation, template expansion, tokenizer-only checks) needs no weights: a
    # `pytest --collect-only` of a suite must stay fast, so it must not import torch.
    suite = ROOT / "examples" / "behaviour" / "test_geo.logit.yaml"
    code = ("import sys, pytest; "
            f"code = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', {str(suite)!r}, "
            f"'--logitprobe-model={tiny_gpt2_dir}']); "
            "assert code == 0, code; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_xdist_two_workers(pytester, tiny_gpt2_dir, tiny):
    body, _ = yaml_cases(tiny, ["The cat sat on the", "A dog saw the log", "She drinks tea"])
    pytester.makefile(".logit.yaml", test_cases=body)
    pytester.makepyfile(test_py="""
        def test_a(probe):
            assert probe.vocab_size == 1000

        def test_b(probe):
            assert probe.next_token("The cat").argmax.token in probe.next_token("The cat").top(1)
        """)
    result = pytester.runpytest_subprocess(
        "-n", "2", f"--logitprobe-model={tiny_gpt2_dir}", *QUIET, timeout=240)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*2 workers*"])


def test_example_suite_passes_on_smollm2(pytester, smol):
    result = pytester.runpytest(str(ROOT / "examples" / "behaviour"), "--logitprobe-model=smollm2",
                                *QUIET)
    result.assert_outcomes(passed=86, xfailed=1)


def test_raw_hooks_left_by_a_test_are_removed(pytester, run_tiny, tiny):
    clean = tiny.next_token(FRANCE).logits
    torch_path = Path(pytester.path) / "clean.pt"
    torch.save(clean, torch_path)
    pytester.makepyfile(f"""
        import torch

        def test_leaks(probe):
            probe.model.blocks[0].mlp.register_forward_hook(lambda m, i, o: o * 0)
            torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: None)
            assert not torch.allclose(probe.next_token({FRANCE!r}).logits,
                                      torch.load({str(torch_path)!r}), atol=1e-4)

        def test_next_is_clean(probe):
            assert not torch.nn.modules.module._global_forward_pre_hooks
            torch.testing.assert_close(probe.next_token({FRANCE!r}).logits,
                                       torch.load({str(torch_path)!r}), atol=1e-4, rtol=1e-4)
        """)
    result = run_tiny("-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*logitprobe: test_leaks left 2 torch hook(s) "
                                 "(register_forward_hook, *) on probe.model; they were removed*"])


def test_weights_edited_by_a_test_are_reloaded(pytester, run_tiny):
    # float64: a probe of the inner run's own (the session's float32 `tiny` stays untouched).
    pytester.makepyfile(f"""
        import torch

        SEEN = []

        def test_edits(probe):
            SEEN.append((probe, probe.next_token({FRANCE!r}).logits))
            with torch.no_grad():
                probe.model.original_model.lm_head.weight.mul_(0)

        def test_restores(probe):
            with torch.no_grad():  # any in-place op counts, even one that keeps the values
                probe.model.original_model.lm_head.weight.mul_(1)

        def test_next_is_fresh(probe):
            edited, before = SEEN[0]
            assert probe is not edited
            torch.testing.assert_close(probe.next_token({FRANCE!r}).logits, before)
        """)
    result = run_tiny("-p", "no:randomly", "--logitprobe-dtype=float64")
    result.assert_outcomes(passed=3, warnings=2)
    result.stdout.fnmatch_lines(["*logitprobe: test_edits changed the weights of probe.model "
                                 "(an in-place edit, *); the model is reloaded for the next test*",
                                 "*logitprobe: test_restores changed the weights*"])
