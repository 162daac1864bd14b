"""Checks that compare distributions or decode: divergences, direction, greedy continuation.

The evidence builders for :func:`~logitprobe.assertions.assert_close`,
``assert_prob_increases`` / ``decreases`` and ``assert_greedy_starts_with``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from . import divergence
from ._evidence import LogitAssertionError, better_spelling, join_hints, prompt_line, resolve, \
    short, table
from ._text import Table
from .results import NextToken

if TYPE_CHECKING:
    from .probe import Probe
    from .results import Candidate, Score

__all__ = ["close_report", "direction_report", "divergences", "greedy_failure"]


def divergences(p: NextToken, q: NextToken) -> tuple[float, float]:
    """``(KL(p || q), total variation)`` in nats, computed in float64 from log-probabilities."""
    # from the logits: divergence normalizes them in float64
    return (float(divergence.kl(p.logits, q.logits)),
            float(divergence.total_variation(p.logits, q.logits)))


def close_report(p: NextToken, q: NextToken, kl: float, tv: float, rows: int = 10) -> str:
    """Both prompts, the divergences, and the tokens whose probability moved most."""
    pa, pb = p.probs, q.probs
    diff = (pa - pb).abs()
    ids = torch.topk(diff, min(rows, diff.numel())).indices.tolist()
    table = Table(("token", "<20"), ("id", ">7"), ("p (nt)", ">9.4f"), ("p (other)", ">9.4f"),
                  ("change", ">+9.4f"), ("rank", ">11"))
    lines = [prompt_line(p, "nt"), prompt_line(q, "other"),
             f"KL(nt || other) = {kl:.4g} nats, total variation = {tv:.4g}",
             "tokens whose probability changed most:", *table.header()]
    for i in ids:
        a, b = p.candidate(i), q.candidate(i)
        lines.append(table.row(repr(a.token), i, a.prob, b.prob, b.prob - a.prob,
                               f"{a.rank} -> {b.rank}"))
    return "\n".join(lines)


def direction_report(before: NextToken, after: NextToken, cb: Candidate, ca: Candidate) -> str:
    """The token before and after, and the top 5 of each distribution with it marked."""
    rows = Table(("", "<7"), ("rank", ">6"), ("prob", ">9.4g"), ("logprob", ">9.3f"),
                 ("logit", ">9.3f"))
    lines = [prompt_line(before, "before"), prompt_line(after, "after"),
             f"token {ca.token!r}:", *rows.header()]
    for label, c in (("before", cb), ("after", ca)):
        lines.append(rows.row(label, c.rank, c.prob, c.logprob, c.logit))
    lines.append(table(before, k=5, marked=[cb.id], title="top 5 before:"))
    lines.append(table(after, k=5, marked=[ca.id], title="top 5 after:"))
    return "\n".join(lines)


AFTER = 3  # greedy steps decoded past the divergence, to show where the model was heading
BEFORE = 2  # agreeing steps shown before the divergence


def greedy_failure(probe: Probe, prompt: str, text: str, score: Score,
                   interventions: Any) -> LogitAssertionError | None:
    """Decode greedily from ``prompt``; None when the decoded text starts with ``text``.

    Teacher forcing already showed that ``text``'s own tokenization is not the
    greedy path; greedy decoding may still spell the same text with other
    tokens, so the decoded string decides. Decoding uses the KV-cached decoder
    of :meth:`~logitprobe.Probe.generate` (one prompt pass, then one token per
    forward) and stops :data:`AFTER` tokens past the divergence.
    """
    intervention = probe._compile_interventions(interventions)
    vocab = probe.vocab
    ids = vocab.encode(prompt)
    expected = [t.id for t in score.tokens]
    eos = getattr(probe.tokenizer, "eos_token_id", None)
    budget = len(expected) + 8  # greedy pieces may be shorter than text's own tokens
    if probe.n_ctx is not None:  # the last chosen token is never fed back
        budget = min(budget, probe.n_ctx - len(ids) + 1)
    generated: list[int] = []
    steps: list[tuple[Candidate, Candidate | None]] = []
    diverged_at = None
    first_nt = None
    decoding = probe._decode([prompt], [ids], n=1, max_new_tokens=budget, warpers=(),
                             do_sample=False, seed=0, stop=(), stop_at_eos=False,
                             intervention=intervention)
    try:
        for step in decoding:
            t = step.t
            nt = NextToken(step.logits[0].cpu(), vocab=vocab, prompt=prompt,
                           token_ids=ids + generated, position=len(ids) + t - 1)
            first_nt = nt if first_nt is None else first_nt
            best = nt._candidate(step.ids[0], step.ranks[0])
            aligned = diverged_at is None and t < len(expected) and generated == expected[:t]
            steps.append((best, nt.candidate(expected[t]) if aligned else None))
            generated.append(best.id)
            if diverged_at is None:
                out = vocab.decode(generated)
                if out.startswith(text):
                    return None
                if not text.startswith(out) and not out.endswith("\ufffd"):
                    diverged_at = t
            if best.id == eos:
                diverged_at = t if diverged_at is None else diverged_at
                break
            if diverged_at is not None and t >= diverged_at + AFTER or t == budget - 1:
                break  # (never resume the decoder past its last step: no fired-check, as score)
    finally:
        decoding.close()
    produced = vocab.decode(generated)
    matched = diverged_at if diverged_at is not None else len(generated)
    lines = [f"prompt: {short(prompt)}", f"greedy: {short(produced)}", f"wanted: {short(text)}",
             f"matched: {short(vocab.decode(generated[:matched]))} ({matched} greedy tokens "
             "agree with the wanted text)",
             _steps_table(steps, diverged_at)]
    hint = None
    if diverged_at == 0 and first_nt is not None:
        target = resolve(vocab, text)
        hint = better_spelling(first_nt, vocab, target, first_nt.rank(target.pieces[0]))
    exp = steps[diverged_at][1] if diverged_at is not None and diverged_at < len(steps) else None
    if exp is not None and exp.rank == 2:
        hint = join_hints(hint, f"near miss: at step {diverged_at} {exp.token!r} is rank 2")
    return LogitAssertionError(
        f"greedy continuation after {short(prompt, 80)} is {short(produced, 80)}, which does not "
        f"start with {short(text, 80)}", "\n".join(lines), hint)


def _steps_table(steps: list[tuple[Candidate, Candidate | None]], diverged_at: int | None) -> str:
    """The steps around the divergence (marked ``>``): greedy token vs the expected one."""
    table = Table(("step", ">4"), ("greedy token", "<20"), ("p", ">8.4f"), ("expected", "<20"),
                  ("its rank", ">8"), ("its p", ">8.4f"))
    lines = table.header()
    first = max(0, (diverged_at if diverged_at is not None else len(steps) - 1) - BEFORE)
    if first:
        agree = f"steps 0-{first - 1} agree" if first > 1 else "step 0 agrees"
        lines.append(f"  {'…':>4} | ({agree} with the wanted text)")
    for step in range(first, len(steps)):
        best, exp = steps[step]
        mark = ">" if step == diverged_at else " "
        expected = (repr(exp.token), exp.rank, exp.prob) if exp else ("", "", "")
        lines.append(table.row(step, repr(best.token), best.prob, *expected, mark=mark))
    return "\n".join(lines)

