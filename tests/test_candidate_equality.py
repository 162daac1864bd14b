"""Candidates compare as tokens, and a failed ``assert nt.argmax == token`` gets the same
compact evidence as ``assert token in nt.top(5)`` (issue 11, item 7)."""

from __future__ import annotations

import gc
import pickle

import pytest

# Imported here so pytester's in-process runs keep using one copy of each (see test_plugin.py).
import logitprobe._yaml_items  # noqa: F401
import logitprobe.assertions  # noqa: F401
from logitprobe import Candidate
from logitprobe._evidence import compact_equals
from logitprobe.interventions import AddLogit

pytest_plugins = ["pytester"]

FRANCE = "The capital of France is"
QUIET = ("--logitprobe-device=cpu", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
         "-p", "no:hypothesispytest")
PROMPT = "I like oat milk in my"


def test_same_token_is_equal_whatever_the_scores(tiny):
    base = tiny.next_token(PROMPT)
    best = base.argmax
    pushed = tiny.next_token(PROMPT, interventions=[AddLogit(best.id, amount=3.0)]).argmax
    assert (pushed.logit, pushed.prob) != (best.logit, best.prob)  # the scores differ ...
    assert pushed == best and not pushed != best  # ... it is the same token
    assert hash(pushed) == hash(best) == hash(best.id)
    assert len({best, pushed}) == 1
    assert best == best.token and best == best.id and best.token == best
    second = base.top(2)[1]
    assert second != best and second != best.token and second != best.id
    assert best != True and best != 1.0 * best.id + 0.5  # noqa: E712 - bool / float are no tokens
    worst = base.top(tiny.vocab_size)[-1]  # raising it a little changes every probability
    edited = tiny.next_token(PROMPT, interventions=[AddLogit(worst.id, amount=0.5)]).top(3)
    assert edited[0].prob != base.top(3)[0].prob and edited == base.top(3)  # same tokens, in order


def test_same_id_from_another_vocabulary_is_not_the_same_token():
    a = Candidate(token=" Paris", id=7, logit=1.0, prob=0.5, logprob=-0.69, rank=1)
    b = Candidate(token=" Rome", id=7, logit=1.0, prob=0.5, logprob=-0.69, rank=1)
    assert a != b


def test_candidates_pickle_and_do_not_keep_their_distribution_alive(tiny):
    nt = tiny.next_token(PROMPT)
    best = nt.argmax
    assert best.source is nt
    again = pickle.loads(pickle.dumps(best))
    assert again == best and again.source is None and again.prob == best.prob
    del nt
    gc.collect()
    assert best.source is None
    lines = compact_equals("==", best, " zzz")  # the fallback report, from the candidate alone
    assert lines == [f"{best.token!r} == ' zzz': the candidate is {best.token!r} (id {best.id}, "
                     f"rank 1, p={best.prob:.4g}, logit={best.logit:.3f})"]


def test_compact_equals_report_fits_pytest_default(smol):
    nt = smol.next_token(FRANCE)
    rome, paris = nt.candidate(" Rome"), nt.argmax
    lines = compact_equals("==", nt.argmax, " Rome")
    assert lines[0] == (f"' Paris' (rank 1) == ' Rome' after {FRANCE!r}: ' Rome' is rank "
                        f"{rome.rank}")
    assert lines[1].startswith("*     1 ' Paris'")
    assert lines[-1].startswith(f">{rome.rank:>6} ' Rome'")
    assert len(lines) <= 8 and sum(len(x) + 1 for x in lines) <= 640
    assert compact_equals("==", " Rome", nt.argmax) == lines  # either side
    long = smol.next_token("word " * 300)
    far = long.top(4000)[-1]  # far outside the top 5, with a hint and a long prompt
    lines = compact_equals("==", far, "Paris")
    assert len(lines) <= 8 and sum(len(x) + 1 for x in lines) <= 640
    both = compact_equals("==", paris, nt.candidate(" Rome"))
    assert both[0] == f"' Paris' == ' Rome': different tokens (ids {paris.id} and {rome.id})"


@pytest.fixture
def run_smol(pytester, smol):
    def run(*args):
        return pytester.runpytest("--logitprobe-model=smollm2", *QUIET, *args)
    return run


def test_plain_equality_shows_the_same_evidence_as_in(pytester, run_smol, smol):
    nt = smol.next_token(FRANCE)
    rome, paris = nt.candidate(" Rome"), nt.candidate(" Paris")
    pytester.makepyfile(f"""
        def test_rome(probe):
            nt = probe.next_token({FRANCE!r})
            assert nt.argmax == " Rome"

        def test_inline_no_space(probe):
            assert probe.next_token({FRANCE!r}).argmax == "Paris"

        def test_two_candidates(probe):
            nt = probe.next_token({FRANCE!r})
            assert nt.argmax == nt.candidate(" Rome")

        def test_in_for_comparison(probe):
            assert " Rome" in probe.next_token({FRANCE!r}).top(5)

        def test_passes(probe):
            nt = probe.next_token({FRANCE!r})
            assert nt.argmax == " Paris" and nt.argmax == nt.top(3)[0]
        """)
    result = run_smol()
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines([
        f"E       AssertionError: assert ' Paris' (rank 1) == ' Rome' after {FRANCE!r}: "
        f"' Rome' is rank {rome.rank}",
        f"E         *     1 ' Paris' * p={paris.prob:<9.4g} logit={paris.logit:.3f}",
        f"E         > {rome.rank:>5} ' Rome' *",
    ])
    result.stdout.fnmatch_lines([
        "E       AssertionError: assert ' Paris' (rank 1) == 'Paris' after *",
        "E         hint: did you mean ' Paris' (with a leading space)? It is rank 1 *",
    ])
    result.stdout.fnmatch_lines([
        f"E       AssertionError: assert ' Paris' == ' Rome': different tokens (ids {paris.id} "
        f"and {rome.id})",
        f"E         left: ' Paris' id {paris.id}, rank 1, *",
    ])
    result.stdout.fnmatch_lines([  # the `in` report, for the same rows
        f"E       AssertionError: assert ' Rome' in top 5 after {FRANCE!r}: it is rank {rome.rank}",
        f"E               1 ' Paris' * p={paris.prob:<9.4g} logit={paris.logit:.3f}",
    ])
    result.stdout.no_fnmatch_line("*truncated*")  # fits pytest's 8 lines / 640 characters
