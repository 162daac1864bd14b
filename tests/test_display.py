"""Rich display (``_repr_html_``), data out (``to_records`` / ``to_pandas``) and ``progress=``.

The HTML of every result parses as strict XML, shows hostile token text only
escaped (as the text tables show it, ``repr(token)``), carries the text table's
numbers, and highlights the target rows. Records carry the table's values.
Hand-built results with hostile tokens for the HTML; the tiny random GPT-2 for
records (checked against plain torch) and progress bars.
"""

from __future__ import annotations

import functools
import html
import math
import re
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe import display, records
from logitprobe._evidence import LogitAssertionError
from logitprobe.errors import InvalidArgument
from logitprobe.generation_results import Generation, GenerationStep, SampleFrequencies
from logitprobe.interventions.compare import Comparison
from logitprobe.interventions.patching import PatchSweep
from logitprobe.lens_results import Attribution, LensResult
from logitprobe.records import OptionalDependencyError
from logitprobe.results import Candidate, NextToken, Score, TokenScore, TopK

HOSTILE = ["<script>alert(1)</script>", "&amp; &lt;", "\"q'uote", "nul\x00\x1b[31mred",
           "\u202eevil\u202c", "\u05e9\u05dc\u05d5\u05dd", "lone\ud800", "tab\tnew\nline",
           "</td></tr></table>", " Paris", " Rome", "]]>", "\x7f\x85", "plain"]


class FakeVocab:
    """The Vocabulary methods results use, over a hand-made token list."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def decode_one(self, tid):
        return self.tokens[tid]

    def decode_each(self, ids):
        return [self.tokens[i] for i in ids]

    def token_id(self, token, name="token"):
        return token if isinstance(token, int) else self.tokens.index(token)


VOCAB = FakeVocab(HOSTILE)
PROMPT = "<b>bold</b> & \u202e\x00"


def _next_token(shift: float = 0.0) -> NextToken:
    logits = torch.linspace(3.0, -2.0, len(HOSTILE))
    logits[10] += shift
    return NextToken(logits, vocab=VOCAB, prompt=PROMPT, token_ids=[0, 1], position=1)


def results():
    """One of each result type, built by hand over the hostile vocabulary."""
    nt = _next_token()
    yield nt
    yield nt.top(5)
    yield Score(prompt=PROMPT, continuation=HOSTILE[0], tokens=tuple(
        TokenScore(token=t, id=i, logprob=-0.5 * i, rank=i + 1, greedy=i == 0)
        for i, t in enumerate(HOSTILE[:4])))
    yield Generation(prompt=PROMPT, text="".join(HOSTILE[:3]), token_ids=(0, 1, 2),
                     steps=tuple(GenerationStep(token=HOSTILE[i], id=i, logprob=-0.25 * i,
                                                rank=i + 1, warped_prob=0.5) for i in range(3)),
                     stop_reason="stop", stop_string=HOSTILE[1])
    probs = torch.softmax(torch.linspace(2.0, -2.0, len(HOSTILE)), -1)
    yield SampleFrequencies({i: 20 - i for i in range(12)}, 174, probs=probs, vocab=VOCAB,
                            prompt=PROMPT, seed=3)
    yield Comparison(prompt=PROMPT, before=nt, after=_next_token(10.0), token_ids=(10, 0), k=4,
                     specs=("spec",))
    logits = torch.stack([torch.linspace(1.0, -1.0, len(HOSTILE)).roll(i) for i in range(3)])
    yield LensResult(logits, vocab=VOCAB, prompt=PROMPT, token_ids=[0, 1], position=1,
                     labels=["embed", "block 0", "block 1"], depths=[0, 1, 2], tracked=[10, 3],
                     k=3)
    yield Attribution(prompt=PROMPT, position=1, vocab=VOCAB, token_id=0, versus_id=4,
                      labels=["embed", "L0 attn", "L0 mlp"], values=torch.tensor([0.5, -1.25, 2.0]),
                      heads=torch.zeros(1, 2), bias=0.125, logit=1.375)
    yield PatchSweep(values=torch.tensor([[0.5, -1.0, 2.25], [0.0, 1.5, -0.75]]),
                     axes=("layer", "pos"), activation="resid_pre", metric="logit diff",
                     clean=PROMPT, corrupted=HOSTILE[0], clean_tokens=tuple(HOSTILE[:3]),
                     corrupted_tokens=tuple(HOSTILE[3:6]), clean_value=2.5, corrupted_value=-1.0)
    yield LogitAssertionError(f"{HOSTILE[0]!r} is not in the top 3",
                              "  rank | token | prob\n> 7 | " + repr(HOSTILE[4]) + " | 0.0123\n  1 | 'a' | 0.9000",
                              hint=f"did you mean {HOSTILE[1]!r}?")


RESULTS = list(results())
IDS = [type(r).__name__ for r in RESULTS]
NUMBER = re.compile(r"[-+]?\d+\.\d+(?:e[-+]\d+)?")


def parse(fragment: str) -> ET.Element:
    return ET.fromstring(fragment)  # strict: any unescaped '<' or '&', any bad tag, fails


def text_of(root: ET.Element) -> str:
    return " ".join(root.itertext())


@pytest.mark.parametrize("result", RESULTS, ids=IDS)
def test_html_parses_and_escapes_hostile_tokens(result):
    fragment = result._repr_html_()
    root = parse(fragment)
    assert root.tag == "div" and root.get("class") == "logitprobe"
    assert "<script" not in fragment and "</td></tr></table>" not in fragment
    for raw in ("\x00", "\x1b", "\u202e", "\u202c", "\ud800", "\x7f", "\x85"):
        assert raw not in fragment
    assert not root.findall(".//script") and not root.findall(".//link")
    assert "http" not in fragment  # nothing fetched from the network


@pytest.mark.parametrize("result", RESULTS, ids=IDS)
def test_html_shows_the_text_tables_numbers(result):
    text_numbers = set(NUMBER.findall(str(result)))
    html_numbers = set(NUMBER.findall(text_of(parse(result._repr_html_()))))
    assert text_numbers, "the text table should have numbers"
    assert text_numbers <= html_numbers, text_numbers - html_numbers


@pytest.mark.parametrize("result", RESULTS[:2], ids=IDS[:2])
def test_html_token_cells_show_the_tokens_repr_isolated(result):
    cells = [b.text for b in parse(result._repr_html_()).iter("bdi")]
    tops = result.top(10) if isinstance(result, NextToken) else result
    assert [c for c in cells if c not in ("rank", "token", "id", "logit", "prob")] == \
        [repr(c.token) for c in tops]


def test_target_rows_are_highlighted():
    cmp = RESULTS[5]  # named tokens: ids 10 and 0
    marked = parse(cmp._repr_html_()).findall(".//tr[@class='lp-marked']")
    tops = [(b.id, a.id) for b, a in zip(cmp.top_before, cmp.top_after)]
    n_named_rows = sum(1 for b, a in tops if {b, a} & {10, 0})
    assert len(marked) == n_named_rows + len(cmp.changes)
    err = RESULTS[-1]
    lines = parse(err._repr_html_()).findall(".//span[@class='lp-marked']")
    assert [s.text for s in lines] == [f"> 7 | {HOSTILE[4]!r} | 0.0123"]
    lens = RESULTS[6]  # tracks ids 10 and 3
    highlighted = {span.find("bdi").text for span in parse(lens._repr_html_()).iter("span")
                   if span.find("bdi") is not None}
    in_tops = {repr(c.token) for top in lens.top() for c in top if c.id in (10, 3)}
    assert in_tops and highlighted == in_tops
    nt_html = parse(display.next_token(RESULTS[0], marked=[3]))
    (row,) = nt_html.findall(".//tr[@class='lp-marked']")
    assert repr(HOSTILE[3]) in text_of(row)


def test_probability_bars_are_proportional():
    top = RESULTS[1]
    bars = [s for s in parse(top._repr_html_()).iter("span") if "width:" in s.get("style", "")]
    widths = [float(re.search(r"width:([\d.]+)px", b.get("style")).group(1)) for b in bars]
    assert widths == pytest.approx([c.prob * display.BAR_PX for c in top], abs=0.06)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6))
def test_any_token_text_renders_as_its_repr(tokens):
    cands = [Candidate(token=t, id=i, logit=1.0 - i, prob=0.1, logprob=-2.3, rank=i + 1)
             for i, t in enumerate(tokens)]
    root = parse(TopK(cands, prompt="".join(tokens))._repr_html_())
    cells = [b.text for b in root.find("table").find("tbody").iter("bdi")]
    assert cells == [repr(t) for t in tokens]


# -- records ---------------------------------------------------------------------------
def _table_rows(text: str) -> list[list[str]]:
    """Cells of the rows of a ``|`` table (marker and spaces stripped)."""
    return [[c.strip().lstrip(">").strip() for c in line.split(" | ")]
            for line in text.splitlines() if " | " in line][1:]


def test_topk_records_equal_the_table_and_plain_torch(tiny):
    nt = tiny.next_token("hello world")
    rows = nt.to_records(k=10)
    table = _table_rows(str(nt.top(10)))
    assert [[str(r["rank"]), repr(r["token"]), str(r["id"]), f"{r['logit']:.3f}",
             f"{r['prob']:.4f}"] for r in rows] == table
    probs = torch.softmax(nt.logits.double(), -1)
    order = torch.argsort(nt.logits, descending=True, stable=True)[:10].tolist()
    assert [r["id"] for r in rows] == order
    assert [r["prob"] for r in rows] == pytest.approx(probs[order].tolist(), rel=1e-5)
    assert nt.top(10).to_records() == rows
    assert all(r["prompt"] == "hello world" for r in rows)


def test_score_and_generation_records_equal_their_tables(tiny):
    sc = tiny.score("hello", " world again")
    table = _table_rows(str(sc))
    assert [[repr(r["token"]), f"{r['logprob']:.4f}", f"{r['prob']:.4f}", str(r["rank"])]
            for r in sc.to_records()] == table
    assert sum(r["logprob"] for r in sc.to_records()) == pytest.approx(sc.logprob)
    gen = tiny.generate("hello", max_new_tokens=4, stop_at_eos=False)
    assert [[str(r["step"]), repr(r["token"]), str(r["id"]), f"{r['prob']:.4f}", str(r["rank"]),
             f"{r['warped_prob']:.4f}"] for r in gen.to_records()] == _table_rows(str(gen))
    assert [r["id"] for r in gen.to_records()] == list(gen.token_ids)


def test_frequencies_records_equal_the_table(tiny):
    freq = tiny.sample_frequencies("hello", 300, seed=1)
    rows = freq.to_records()
    assert sum(r["count"] for r in rows) == 300 and len(rows) == len(freq)
    shown = [[repr(r["token"]), str(r["count"]), f"{r['freq']:.4f}", f"{r['p']:.4f}",
              f"[{r['low']:.4f}, {r['high']:.4f}]"] for r in rows[:10]]
    assert shown == [row for row in _table_rows(freq.__str__()) if len(row) == 5]


def test_comparison_lens_attribution_sweep_records():
    cmp, lens, attr, sweep = RESULTS[5], RESULTS[6], RESULTS[7], RESULTS[8]
    top = cmp.to_records()
    assert [(r["before_id"], r["after_id"]) for r in top] == \
        [(b.id, a.id) for b, a in zip(cmp.top_before, cmp.top_after)]
    changes = cmp.to_records("changes")
    assert [(r["id"], r["rank_before"], r["rank_after"]) for r in changes] == \
        [(c.id, c.rank_before, c.rank_after) for c in cmp.changes]
    with pytest.raises(InvalidArgument, match="table="):
        cmp.to_records("nope")
    lrows = lens.to_records()
    assert [r["layer"] for r in lrows] == lens.labels
    assert [r[f"rank {HOSTILE[10]!r}"] for r in lrows] == lens.rank(10)
    assert [r[f"prob {HOSTILE[3]!r}"] for r in lrows] == pytest.approx(lens.prob(3))
    arows = attr.to_records()
    assert [(r["part"], r["attribution"]) for r in arows] == \
        [("embed", 0.5), ("L0 attn", -1.25), ("L0 mlp", 2.0), ("bias", 0.125)]
    srows = sweep.to_records()
    assert [(r["layer"], r["pos"], r["token"], r["value"]) for r in srows][:2] == \
        [(0, 0, HOSTILE[3], 0.5), (0, 1, HOSTILE[4], -1.0)]
    assert len(srows) == sweep.values.numel()


def test_to_pandas_matches_records_and_pandas_stays_optional(monkeypatch):
    pandas = pytest.importorskip("pandas")
    nt = RESULTS[0]
    frame = nt.to_pandas(k=4)
    assert isinstance(frame, pandas.DataFrame)
    assert frame.to_dict("records") == nt.to_records(k=4)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(OptionalDependencyError, match="pip install pandas") as info:
        nt.to_pandas()
    assert isinstance(info.value, ImportError)
    assert records.candidates([], None) == []


# -- progress --------------------------------------------------------------------------
class Recorder:
    """A tqdm-like callable that records what it was told."""

    def __init__(self):
        self.bars = []

    def __call__(self, *, total, desc):
        self.bars.append({"total": total, "desc": desc, "done": 0, "closed": False})
        return self

    def update(self, n=1):
        self.bars[-1]["done"] += n

    def close(self):
        self.bars[-1]["closed"] = True


def _long_calls(probe, progress):
    yield lambda: probe.generate("hello", max_new_tokens=5, stop_at_eos=False, progress=progress)
    yield lambda: probe.next_token(["hello", "a b c", "world"] * 4, progress=progress)
    yield lambda: probe.sample_frequencies("hello", 50, seed=0, progress=progress)
    yield lambda: probe.patch_sweep("the cat", "the dog", metric=lambda lg: lg[0],
                                    per_position=False, progress=progress)


def test_default_is_silent(tiny, capsys):
    for call in _long_calls(tiny, False):
        call()
    for call in _long_calls(tiny, None):
        call()
    tiny.patch_sweep("the cat", "the dog", metric=lambda lg: lg[0])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_true_writes_a_bar(tiny, capsys):
    for call in _long_calls(tiny, True):
        call()
        err = capsys.readouterr().err
        assert re.search(r"\d+/\d+", err), err  # tqdm's "n/total"


def test_progress_callable_gets_every_step(tiny, capsys):
    rec = Recorder()
    for call in _long_calls(tiny, rec):
        call()
    assert [b["desc"] for b in rec.bars] == ["generate", "next_token", "sample_frequencies",
                                             "patch_sweep resid_pre"]
    assert all(b["closed"] and b["done"] == b["total"] for b in rec.bars), rec.bars
    assert rec.bars[0]["total"] == 5 and rec.bars[1]["total"] == 12
    assert rec.bars[3]["total"] == tiny.n_layers
    assert capsys.readouterr().err == ""
    bar = functools.partial(__import__("tqdm").tqdm, file=sys.stdout)
    tiny.generate("hello", max_new_tokens=3, progress=bar)
    assert "3/3" in capsys.readouterr().out


def test_progress_does_not_change_results(tiny, monkeypatch):
    import logitprobe.generation as generation

    prompts = ["hello", "a b c", "world wide", "x"] * 3
    plain = tiny.next_token(prompts)
    monkeypatch.setattr(tiny.engine, "max_batch_tokens", 8)  # chunks of a few prompts
    tiny.clear_cache()
    chunked = tiny.next_token(prompts, progress=Recorder())
    # batched forwards of other shapes may differ in the last float bits
    assert all(torch.allclose(a.logits, b.logits, atol=1e-5) for a, b in zip(plain, chunked))
    assert len(chunked) == len(prompts) and [c.prompt for c in chunked] == prompts
    whole = tiny.sample_frequencies("hello", 500, seed=7)
    monkeypatch.setattr(generation, "SAMPLE_CHUNK", 64)
    rec = Recorder()
    parts = tiny.sample_frequencies("hello", 500, seed=7, progress=rec)
    assert parts.counts == whole.counts and rec.bars[0]["total"] == math.ceil(500 / 64)
    gen = tiny.generate("hello", max_new_tokens=4, progress=Recorder())
    assert gen.token_ids == tiny.generate("hello", max_new_tokens=4).token_ids


def test_run_suite_progress(tiny, capsys):
    from logitprobe.behaviour import parse_suite, run_suite

    suite = parse_suite('- {prompt: "hello", expect: {in_top: {token: 0, k: 1000}}}\n'
                        '- {prompt: "world", expect: {in_top: {token: 0, k: 1000}}}\n')
    rec = Recorder()
    outcome = run_suite(tiny, suite, progress=rec)
    assert [err for _, err in outcome] == [None, None]
    assert rec.bars == [{"total": 2, "desc": "run_suite", "done": 2, "closed": True}]
    run_suite(tiny, suite)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", ["yes", 1, 0.5, [True]])
def test_progress_must_be_a_bool_or_callable(tiny, bad):
    with pytest.raises(InvalidArgument, match="progress="):
        tiny.generate("hello", max_new_tokens=2, progress=bad)
    with pytest.raises(InvalidArgument, match="progress="):
        tiny.next_token(["hello"], progress=bad)


def test_token_cell_is_the_escaped_repr():
    text = "<&>\"'\u202e"
    assert display.token(text) == f"<bdi>{html.escape(repr(text), quote=True)}</bdi>"
    assert "\u202e" not in display.token(text)
