"""Evidence for failed checks: resolve the target token, build tables and hints.

Shared by :mod:`logitprobe.assertions` (full reports) and the pytest plugin's
``pytest_assertrepr_compare`` (a compact report that fits pytest's default
8 lines / 640 characters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ._text import Table, clip, short
from .errors import LogitAssertionError, TokenError

if TYPE_CHECKING:
    from .results import Candidate, NextToken, TopK
    from .tokens import Vocabulary

__all__ = ["LogitAssertionError", "Target", "compact_contains", "compact_equals", "resolve",
           "table"]



@dataclass(frozen=True)
class Target:
    """A token as the user gave it: one vocabulary id, or the several ids it splits into."""

    given: Any
    id: int | None  # None when ``given`` is several tokens
    pieces: tuple[int, ...]
    shown: str = ""  # the token's text, for ids

    @property
    def single(self) -> bool:
        return self.id is not None

    def label(self) -> str:
        return repr(self.given) if isinstance(self.given, str) else f"{self.shown!r} (id {self.id})"


def resolve(vocab: Vocabulary, token: Any, *, name: str = "token") -> Target:
    """The ids behind ``token`` (str, int id or Candidate); TokenError for unusable values."""
    if isinstance(token, str) and token:
        pieces = tuple(vocab.pieces(token, name=name))
        if len(pieces) != 1:
            return Target(token, None, pieces)
        return Target(token, pieces[0], pieces)
    tid = vocab.token_id(token, name=name)  # ints, Candidates, '' and wrong types
    shown = vocab.decode_one(tid)
    return Target(shown if hasattr(token, "id") else token, tid, (tid,), shown)


def require_single(vocab: Vocabulary, target: Target, check: str, name: str = "token") -> int:
    """The id of a single-token target; a negative check on several tokens would pass vacuously."""
    if target.id is None:
        shown = [vocab.decode_one(i) for i in target.pieces]
        raise TokenError(
            f"{name}={target.given!r} is {len(target.pieces)} tokens: {shown!r}, so {check} "
            f"would pass whatever the model predicts. Check one token, e.g. {shown[0]!r}")
    return target.id


def pieces_text(vocab: Vocabulary, target: Target) -> str:
    return repr([vocab.decode_one(i) for i in target.pieces])


# -- tables ------------------------------------------------------------------------------
CANDIDATES = Table(("rank", ">6"), ("token", "<20"), ("id", ">7"), ("logit", ">9.3f"),
                   ("prob", ">8.4f"), ("logprob", ">9.3f"))


def row(c: Candidate, mark: str = " ") -> str:
    return CANDIDATES.row(c.rank, repr(c.token), c.id, c.logit, c.prob, c.logprob, mark=mark)


def table(nt: NextToken, *, k: int, marked: Iterable[int] = (), title: str | None = None,
          cut: int | None = None) -> str:
    """The top ``k`` rows, then the ``marked`` ids outside it; marked rows start with ``>``.

    ``cut`` draws a line after that many rows (where a top-``cut`` check ends).
    """
    marked = list(dict.fromkeys(marked))
    lines = ([title] if title else []) + CANDIDATES.header()
    top = nt.top(min(k, nt.vocab_size))
    for i, c in enumerate(top, 1):
        lines.append(row(c, ">" if c.id in marked else " "))
        if cut is not None and i == cut and i < len(top):
            lines.append(f"  {'':>6} +-- top {cut} ends here")
    outside = sorted((nt.candidate(i) for i in marked if i not in top.ids), key=lambda c: c.rank)
    if outside:
        lines.append(f"  {'...':>6} |")
        lines += [row(c, ">") for c in outside]
    return "\n".join(lines)


def prompt_line(nt: NextToken, label: str = "prompt") -> str:
    where = "" if nt.position == len(nt.token_ids) - 1 else f" (read at token {nt.position})"
    return f"{label}: {short(nt.prompt)}{where}"


# -- hints -------------------------------------------------------------------------------
def variants(text: str) -> list[str]:
    """Spellings a user may have meant: leading space added/removed, first letter's case."""
    out = []
    core = text[1:] if text.startswith(" ") else text
    for base in (core,):
        for cased in {base, base[:1].upper() + base[1:], base[:1].lower() + base[1:]}:
            out += [" " + cased, cased]
    return [v for v in dict.fromkeys(out) if v and v != text]


def better_spelling(nt: NextToken, vocab: Vocabulary, target: Target,
                    rank: int | None) -> str | None:
    """'did you mean ' Paris' (rank 1)?' when another spelling is one token and ranks better."""
    if not isinstance(target.given, str):
        return None
    best = None
    for v in variants(target.given):
        ids = vocab.pieces(v)
        if len(ids) != 1:
            continue
        c = nt.candidate(ids[0])
        if (rank is None or c.rank < rank) and (best is None or c.rank < best.rank):
            best = c
    if best is None:
        return None
    why = ""
    if best.token.lstrip(" ") == str(target.given).lstrip(" "):
        why = (" (with a leading space)" if best.token.startswith(" ")
               else " (without the leading space)")
    return f"did you mean {best.token!r}{why}? It is rank {best.rank} (p={best.prob:.4g})"


def several_tokens_hint(nt: NextToken, vocab: Vocabulary, target: Target) -> str:
    first = nt.candidate(target.pieces[0])
    return (f"{target.given!r} is {len(target.pieces)} tokens {pieces_text(vocab, target)}; a "
            f"next-token check sees one token. Its first token {first.token!r} is rank "
            f"{first.rank} (p={first.prob:.4g}); for the whole string use "
            "assert_greedy_starts_with or probe.score")


def join_hints(*hints: str | None) -> str | None:
    hints = tuple(h for h in hints if h)
    return "; ".join(hints) if hints else None


# -- the compact report for `token in top` / `token not in top` --------------------------
def compact_contains(op: str, left: Any, right: TopK) -> list[str] | None:
    """Explanation lines for a failed ``left in right`` / ``left not in right`` (TopK right).

    At most 8 lines and 640 characters: pytest shows that much without ``-vv``.
    """
    nt = getattr(right, "source", None)
    k = len(right)
    prompt = short(right.prompt if right.prompt is not None else "?", 80)
    five = list(right)[:5]
    lines: list[str] = []
    cand, hint = None, None
    if nt is not None:
        try:
            target = resolve(nt.vocab, left)
        except TokenError as exc:
            return [f"{left!r} {op} top {k}: {exc}"[:600]]
        if target.single:
            cand = nt.candidate(target.id)
            if op == "in":
                near = (f"near miss, {cand.rank - k} place(s) outside the top {k}"
                        if cand.rank <= 2 * k else None)
                hint = join_hints(better_spelling(nt, nt.vocab, target, cand.rank), near)
        else:
            hint = several_tokens_hint(nt, nt.vocab, target)
    # pytest prints "assert " + the first line.
    label = repr(left) if not hasattr(left, "token") else repr(left.token)
    where = f": it is rank {cand.rank}" if cand else ""
    lines.append(f"{label} {op} top {k} after {prompt}{where}")
    mark = cand.id if cand else None
    for c in five:
        lines.append(_compact_row(c, ">" if c.id == mark else " "))
    if cand is not None and cand.id not in [c.id for c in five]:
        lines.append(_compact_row(cand, ">"))
    if hint:
        lines.append(f"hint: {hint}")
    return _fit(lines)


def _fit(lines: list[str]) -> list[str]:
    """At most 8 lines and 640 characters: what pytest shows without ``-vv``."""
    lines = lines[:8]
    while sum(len(line) + 1 for line in lines) > 640 and len(lines) > 1:
        longest = max(range(len(lines)), key=lambda i: len(lines[i]))
        lines[longest] = lines[longest][: max(40, len(lines[longest]) - 80)] + "…"
    return lines


# -- the compact report for `candidate == token` / `!=` ------------------------------------
def compact_equals(op: str, left: Any, right: Any) -> list[str] | None:
    """Explanation lines for a failed ``candidate == token`` (or ``!=``), either side a Candidate.

    The same evidence as a failed ``token in top``: the top rows of the distribution
    the candidate came from, the expected token's row marked ``>``, the candidate's
    ``*``, and a spelling hint. Two candidates: each one's token, rank and prompt.
    """
    from .results import Candidate

    if not isinstance(left, Candidate):
        left, right = right, left  # `" Rome" == nt.argmax`: the candidate is the subject
    if not isinstance(left, Candidate):
        return None
    if isinstance(right, Candidate):
        return _fit([f"{left.token!r} {op} {right.token!r}: "
                     + ("different tokens" if op == "==" else "the same token")
                     + f" (ids {left.id} and {right.id})",
                     _side("left", left), _side("right", right)])
    nt = left.source
    if nt is None:  # the distribution is gone: only what the candidate holds
        return [f"{left.token!r} {op} {right!r}: the candidate is {left.token!r} (id {left.id}, "
                f"{describe(left)})"[:600]]
    prompt = short(nt.prompt, 80)
    try:
        target = resolve(nt.vocab, right)
    except TokenError as exc:
        return [f"{left.token!r} {op} {right!r}: {exc}"[:600]]
    cand = nt.candidate(target.id) if target.single else None
    head = f"{left.token!r} (rank {left.rank}) {op} {_label(right, target)} after {prompt}"
    lines = [head + (f": {_label(right, target)} is rank {cand.rank}" if cand else "")]
    if target.single:
        hint = better_spelling(nt, nt.vocab, target, cand.rank) if op == "==" else None
    else:
        hint = several_tokens_hint(nt, nt.vocab, target)
    marks = {left.id: "*"}
    if cand is not None:
        marks[cand.id] = ">"
    extra = sorted({c.id: c for c in (left, cand) if c is not None}.values(), key=lambda c: c.rank)
    room = 7 - (1 if hint else 0)  # 8 lines: the verdict, rows, the hint
    top = list(nt.top(min(5, nt.vocab_size)))
    outside = [c for c in extra if c.id not in [t.id for t in top]]
    top = top[: max(1, room - len(outside))]
    outside = [c for c in extra if c.id not in [t.id for t in top]]
    lines += [_compact_row(c, marks.get(c.id, " ")) for c in top]
    lines += [_compact_row(c, marks[c.id]) for c in outside]
    if hint:
        lines.append(f"hint: {hint}")
    return _fit(lines)


def _label(given: Any, target: Target) -> str:
    return repr(given) if isinstance(given, str) else target.label()


def _side(name: str, c: Any) -> str:
    nt = c.source
    where = f" after {short(nt.prompt, 60)}" if nt is not None else ""
    return f"{name}: {c.token!r} id {c.id}, {describe(c)}{where}"


def _compact_row(c: Candidate, mark: str) -> str:
    token = clip(repr(c.token), 18)
    return f"{mark}{c.rank:>6} {token:<18} p={c.prob:<9.4g} logit={c.logit:.3f}"


def describe(c: Candidate) -> str:
    return f"rank {c.rank}, p={c.prob:.4g}, logit={c.logit:.3f}"


# -- the report of a failed assert_* helper -------------------------------------------------
ROWS = 10  # rows of the evidence table beyond what a check needs


def report(nt: NextToken, *, rows: int, marked: list[int], cut: int | None = None) -> str:
    """The prompt line, then the top ``max(rows, ROWS)`` rows (at most 25) with ``marked`` rows."""
    return prompt_line(nt) + "\n" + table(nt, k=min(max(rows, ROWS), 25), marked=marked, cut=cut)


def several_tokens_failure(nt: NextToken, target: Target, what: str) -> LogitAssertionError:
    """The failure of a positive check on a string of several tokens."""
    return LogitAssertionError(
        f"{target.label()} is {len(target.pieces)} tokens, so it cannot be {what} after "
        f"{short(nt.prompt, 80)}",
        report(nt, rows=ROWS, marked=[target.pieces[0]]),
        join_hints(better_spelling(nt, nt.vocab, target, None),
                   several_tokens_hint(nt, nt.vocab, target)))
