"""Tests of gatelab.data.batching: padding, translation pair batches, text streams."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.data.batching import collate_pairs, pad_sequences, pair_batches, stream_batches
from gatelab.data.corpus import split_point
from gatelab.data.vocab import BOS_ID, EOS_ID, PAD_ID
from gatelab.errors import DataError

# --------------------------------------------------------------------------------------
# pad_sequences
# --------------------------------------------------------------------------------------

FAST = settings(max_examples=60, deadline=None)


def test_pad_sequences_values() -> None:
    padded, lengths = pad_sequences([[5, 6, 7], [8], torch.tensor([9, 10])], pad_value=-1)
    assert padded.dtype == torch.long and lengths.dtype == torch.long
    assert padded.tolist() == [[5, 6, 7], [8, -1, -1], [9, 10, -1]]
    assert lengths.tolist() == [3, 1, 2]
    padded, lengths = pad_sequences([[1, 2, 3, 4], [5]], max_len=2)
    assert padded.tolist() == [[1, 2], [5, 0]]
    assert lengths.tolist() == [2, 1]


def test_pad_sequences_errors() -> None:
    with pytest.raises(DataError, match=r"sequence 1 is empty"):
        pad_sequences([[1], [], [2]])
    with pytest.raises(DataError, match="no sequences"):
        pad_sequences([])
    with pytest.raises(DataError, match=r"sequence 0 holds 1\.5"):
        pad_sequences([[1.5]])
    with pytest.raises(DataError, match=r"sequence 0 has dtype torch.float32"):
        pad_sequences([torch.ones(2)])
    with pytest.raises(DataError, match=r"shape \(2, 2\); expected 1-D"):
        pad_sequences([torch.ones(2, 2, dtype=torch.long)])
    with pytest.raises(DataError, match="max_len must be an integer >= 1"):
        pad_sequences([[1]], max_len=0)


@FAST
@given(
    st.lists(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=12), min_size=1),
    st.one_of(st.none(), st.integers(1, 15)),
)
def test_pad_sequences_roundtrip(seqs: list[list[int]], max_len: int | None) -> None:
    padded, lengths = pad_sequences(seqs, pad_value=7, max_len=max_len)
    expected = [s[:max_len] if max_len else s for s in seqs]
    assert lengths.tolist() == [len(s) for s in expected]
    assert padded.shape == (len(seqs), max(len(s) for s in expected))
    for row, n, s in zip(padded.tolist(), lengths.tolist(), expected):
        assert row[:n] == s
        assert row[n:] == [7] * (len(row) - n)


# --------------------------------------------------------------------------------------
# Pairs, streams
# --------------------------------------------------------------------------------------


def test_collate_adds_eos_to_sources_and_shifts_targets():
    batch = collate_pairs([([5, 6], [7]), ([8], [9, 10])])
    assert batch["src"].tolist() == [[5, 6, EOS_ID], [8, EOS_ID, PAD_ID]]
    assert batch["src_lengths"].tolist() == [3, 2]
    assert batch["tgt_in"].tolist() == [[BOS_ID, 7, PAD_ID], [BOS_ID, 9, 10]]
    assert batch["tgt_out"].tolist() == [[7, EOS_ID, PAD_ID], [9, 10, EOS_ID]]
    sizes = sorted(len(b["src"]) for b in pair_batches([([1] * k, [2]) for k in range(7)], 3))
    assert sizes == [1, 3, 3]


def test_stream_batches_are_contiguous_streams_with_next_char_targets():
    ids = torch.arange(23)
    batches = list(stream_batches(ids, batch_size=3, seq_len=4))
    x = torch.cat([b[0] for b in batches], dim=1)  # (3, n)
    y = torch.cat([b[1] for b in batches], dim=1)
    n = (23 - 1) // 3
    assert torch.equal(x, torch.arange(3 * n).view(3, n))  # stream b = ids[b*n:(b+1)*n]
    assert torch.equal(y, x + 1)
    assert [b[0].shape[1] for b in batches] == [4, 3]  # the last window is shorter
    with pytest.raises(DataError, match="too short for 8 streams"):
        next(stream_batches(torch.arange(5), 8, 4))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan, True])
def test_split_point_refuses_a_fraction_outside_0_1_naming_it(fraction):
    with pytest.raises(ValueError, match=r"valid_fraction=.*0 < valid_fraction < 1"):
        split_point(10_000, fraction)
    assert split_point(10_000, 0.1) == 9000
