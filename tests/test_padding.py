"""The one padded-batch helper (engine.left_pad) that the engine, the KV decoder and the lens share."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from logitprobe.engine import Stats, left_pad, position_ids

seqs_st = st.lists(st.lists(st.integers(0, 999), min_size=1, max_size=9), min_size=1, max_size=6)


@given(seqs_st, st.integers(0, 999))
def test_rows_are_left_padded(seqs, pad_id):
    batch = left_pad(seqs, pad_id)
    T = max(len(s) for s in seqs)
    assert batch.tokens.shape == batch.mask.shape == (len(seqs), T)
    assert batch.tokens.dtype == batch.mask.dtype == torch.long
    for row, ids in enumerate(seqs):
        pad = T - len(ids)
        assert batch.tokens[row].tolist() == [pad_id] * pad + ids
        assert batch.mask[row].tolist() == [0] * pad + [1] * len(ids)
        # real tokens count 0..n-1 whatever the padding before them
        assert batch.position_ids()[row, pad:].tolist() == list(range(len(ids)))
    assert batch.padded == (min(len(s) for s in seqs) != T)
    assert batch.pad_tokens == sum(T - len(s) for s in seqs)
    layout = batch.layout(keep=2)
    assert (layout.lengths, layout.seq_len, layout.keep) == (tuple(map(len, seqs)), T, 2)


def test_stats_count_one_forward():
    stats = Stats()
    stats.count(left_pad([[1, 2, 3], [4]], pad_id=0))
    assert (stats.forwards, stats.sequences, stats.tokens, stats.padded_tokens) == (1, 2, 4, 2)


def test_position_ids_of_a_handmade_mask():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
