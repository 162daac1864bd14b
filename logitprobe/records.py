"""Results as plain records (a list of dicts) and, when pandas is installed, DataFrames.

Each result's ``to_records()`` has one dict per row of its text table, with the
same columns (plus ``prompt`` and ids, so records of many results concatenate
into one table); the values are plain Python ``str`` / ``int`` / ``float``.
``to_pandas()`` is ``pandas.DataFrame(to_records())``; pandas is optional and
imported only then.

>>> rows = probe.next_token("I like oat milk in my").to_records(k=3)   # doctest: +SKIP
>>> rows[0]                                                             # doctest: +SKIP
{'prompt': 'I like oat milk in my', 'rank': 1, 'token': ' coffee', 'id': 2944, ...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, OptionalDependencyError
from .sampling_stats import binomial_interval

if TYPE_CHECKING:
    import pandas

__all__ = ["OptionalDependencyError", "attribution", "candidates", "comparison", "frequencies",
           "generation", "lens", "next_token", "patch_sweep", "score", "to_pandas"]

Record = dict[str, Any]


def to_pandas(records: list[Record]) -> "pandas.DataFrame":
    """``pandas.DataFrame(records)``; OptionalDependencyError when pandas is missing."""
    try:
        import pandas  # lazy: pandas is optional
    except ImportError as exc:
        raise OptionalDependencyError(
            "to_pandas() needs pandas, which is not installed: `pip install pandas`, or use "
            "to_records() (a list of dicts)") from exc
    return pandas.DataFrame.from_records(records)


def candidates(cands: Any, prompt: str | None) -> list[Record]:
    """``rank | token | id | logit | prob`` rows (and ``logprob``) of Candidates."""
    return [{"prompt": prompt, "rank": c.rank, "token": c.token, "id": c.id, "logit": c.logit,
             "prob": c.prob, "logprob": c.logprob} for c in cands]


def next_token(nt: Any, k: int = 10) -> list[Record]:
    """The top ``k`` rows of a NextToken (its text table shows k=10)."""
    return candidates(nt.top(k), nt.prompt)


def score(sc: Any) -> list[Record]:
    return [{"prompt": sc.prompt, "continuation": sc.continuation, "position": j,
             "token": t.token, "id": t.id, "logprob": t.logprob, "prob": t.prob, "rank": t.rank,
             "greedy": t.greedy} for j, t in enumerate(sc.tokens)]


def generation(gen: Any) -> list[Record]:
    return [{"prompt": gen.prompt, "index": gen.index, "step": i, "token": s.token, "id": s.id,
             "prob": s.prob, "logprob": s.logprob, "rank": s.rank, "warped_prob": s.warped_prob}
            for i, s in enumerate(gen.steps)]


def frequencies(freq: Any, rows: int | None = None, confidence: float = 0.99) -> list[Record]:
    """Every sampled token (or the ``rows`` most frequent), with its ``confidence`` interval."""
    out = []
    items = freq._sorted()
    for tid, count in items if rows is None else items[:rows]:
        lo, hi = binomial_interval(count, freq.n, confidence=confidence)
        out.append({"prompt": freq.prompt, "token": freq.vocab.decode_one(tid), "id": tid,
                    "count": count, "freq": count / freq.n, "p": float(freq._probs[tid]),
                    "low": lo, "high": hi})
    return out


def comparison(cmp: Any, table: str = "top") -> list[Record]:
    """``table="top"``: the top-k before and after, rank by rank; ``"changes"``: named tokens."""
    if table == "top":
        return [{"prompt": cmp.prompt, "rank": i, "before": b.token, "before_id": b.id,
                 "before_prob": b.prob, "after": a.token, "after_id": a.id, "after_prob": a.prob}
                for i, (b, a) in enumerate(zip(cmp.top_before, cmp.top_after), start=1)]
    if table == "changes":
        return [{"prompt": cmp.prompt, "token": c.token, "id": c.id,
                 "rank_before": c.rank_before, "rank_after": c.rank_after,
                 "prob_before": c.prob_before, "prob_after": c.prob_after,
                 "logit_before": c.logit_before, "logit_after": c.logit_after}
                for c in cmp.changes]
    raise InvalidArgument(f"table={str(table)[:40]!r}: `table` must be 'top' (the top-k before "
                          "and after) or 'changes' (the tokens named in compare(tokens=...))")


def lens(result: Any) -> list[Record]:
    """One row per layer: its top-k, p(top1), and each tracked token's rank and prob."""
    tracked = result.tracked
    ids = list(result.tracked_ids)
    ranks = result.ranks.tolist() if ids else [[] for _ in range(len(result))]
    probs = result._logprobs[:, ids].exp().tolist() if ids else ranks
    out = []
    for i, (label, depth, top) in enumerate(zip(result.labels, result.depths, result.top())):
        row: Record = {"prompt": result.prompt, "layer": label, "depth": depth,
                       "top": top.tokens, "p_top1": top[0].prob}
        for tok, r, p in zip(tracked, ranks[i], probs[i]):
            row[f"rank {tok!r}"] = r
            row[f"prob {tok!r}"] = p
        out.append(row)
    return out


def attribution(attr: Any) -> list[Record]:
    """One row per part (embeddings, each layer's attn and mlp) and the bias row."""
    rows = [*zip(attr.labels, attr._values.tolist()), ("bias", attr.bias)]
    return [{"prompt": attr.prompt, "quantity": attr.quantity, "part": label,
             "attribution": value} for label, value in rows]


def patch_sweep(sw: Any) -> list[Record]:
    """One row per cell: layer, position (with its corrupted token) or head, value."""
    out = []
    values = sw.values.tolist()
    for layer, row in enumerate(values):
        if sw.axes == ("layer",):
            out.append({"layer": layer, "value": row})
            continue
        for j, v in enumerate(row):
            cell: Record = {"layer": layer, sw.axes[1]: j}
            if sw.axes[1] == "pos":
                cell["token"] = sw.corrupted_tokens[j]
            cell["value"] = v
            out.append(cell)
    return out
