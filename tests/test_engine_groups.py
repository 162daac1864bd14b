"""How the engine splits prompts into batched forwards (no model needed)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from logitprobe.engine import Engine, _Request


class _Shape:
    vocab_size = 1000


def engine(**kwargs) -> Engine:
    return Engine(_Shape(), pad_id=0, **kwargs)


def cost(eng: Engine, groups) -> int:
    return sum(len(g) * max(len(r.ids) for r in g) + eng.forward_cost_tokens for g in groups)


def requests(lengths, keep=1):
    return [_Request(tuple(range(n)), keep) for n in lengths]


def brute_force(eng: Engine, lengths) -> int:
    """The cheapest split of the length-sorted prompts into contiguous groups (no bounds hit)."""
    lengths = sorted(lengths, reverse=True)
    best = math.inf
    for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
        groups, start = [], 0
        for i, c in enumerate(cuts, 1):
            if c:
                groups.append(lengths[start:i])
                start = i
        groups.append(lengths[start:])
        best = min(best, sum(len(g) * g[0] + eng.forward_cost_tokens for g in groups))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_groups_are_the_cheapest_split(seed):
    rng = random.Random(seed)
    eng = engine(forward_cost_tokens=rng.choice([0, 5, 32, 200]))
    lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 9))]
    groups = list(eng._groups(requests(lengths)))
    assert sorted(len(r.ids) for g in groups for r in g) == sorted(lengths)  # each once
    assert cost(eng, groups) == brute_force(eng, lengths)


def test_groups_respect_the_token_and_logit_bounds():
    rng = random.Random(0)
    eng = engine(max_batch_tokens=256, max_batch_logits=8 * 1000)
    reqs = [_Request(tuple(range(rng.randint(1, 60))), rng.choice([1, 1, 3])) for _ in range(300)]
    groups = list(eng._groups(reqs))
    assert sum(len(g) for g in groups) == 300
    for g in groups:
        assert len(g) * max(len(r.ids) for r in g) <= 256
        assert len(g) * max(r.keep for r in g) * 1000 <= 8 * 1000


def test_a_forward_cost_trades_padding_for_fewer_forwards():
    lengths = [4, 5, 6, 7, 8, 9, 10, 11, 12] * 10
    padded = lambda gs: sum(len(g) * max(len(r.ids) for r in g) for g in gs) - sum(lengths)  # noqa: E731
    exact = list(engine(forward_cost_tokens=0)._groups(requests(lengths)))
    assert len(exact) == 9 and padded(exact) == 0  # one forward per length
    one = list(engine(forward_cost_tokens=10**6)._groups(requests(lengths)))
    assert len(one) == 1
    mid = list(engine()._groups(requests(lengths)))
    assert 1 < len(mid) < 9 and padded(mid) < padded(one)
