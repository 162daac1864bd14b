"""NextToken.top(k): order and tie-aware ranks against a brute-force reference."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from logitprobe.results import NextToken


def brute_top(logits: torch.Tensor, k: int) -> list[tuple[int, float, int]]:
    """(id, logit, rank) of the k best, best first, ties by lower id; rank = 1 + #greater."""
    values = logits.tolist()
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    return [(i, values[i], 1 + sum(v > values[i] for v in values)) for i in order]


# A few distinct levels (and -inf) over the whole tiny vocabulary: many exact ties.
levels = st.lists(st.sampled_from([-math.inf, -3.0, -0.5, 0.0, 0.25, 2.0, 7.5]),
                  min_size=1, max_size=5, unique=True)


@settings(max_examples=40, deadline=None)
@given(levels=levels, seed=st.integers(0, 2**31 - 1), k=st.integers(1, 1000))
def test_top_matches_brute_force_with_ties(tiny, levels, seed, k):
    if all(v == -math.inf for v in levels):
        levels = levels + [0.0]  # a distribution needs one finite logit
    g = torch.Generator().manual_seed(seed)
    logits = torch.tensor(levels)[torch.randint(len(levels), (tiny.vocab_size,), generator=g)]
    nt = NextToken(logits, vocab=tiny.vocab, prompt="handmade", token_ids=[1], position=0)
    top = nt.top(k)
    assert [(c.id, c.logit, c.rank) for c in top] == brute_top(logits, k)
    for c in top[:20]:  # the same numbers as the one-token queries
        assert c == nt.candidate(c.id)
        assert c.rank == nt.rank(c.id)
        assert math.isclose(c.logprob, nt.logprob(c.id), abs_tol=1e-12)
        assert c.token == tiny.tokenizer.decode([c.id])


def test_full_vocabulary_top_decodes_every_token_like_the_tokenizer(tiny):
    nt = tiny.next_token("I like oat milk in my")
    top = nt.top(tiny.vocab_size)
    assert sorted(top.ids) == list(range(tiny.vocab_size))
    assert [c.token for c in top] == [tiny.tokenizer.decode([i]) for i in top.ids]
    logits = nt.logits
    assert [c.rank for c in top] == [int((logits > logits[i]).sum()) + 1 for i in top.ids]
