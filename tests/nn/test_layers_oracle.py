"""gatelab.LSTM / GRU / RNN against their torch.nn peers with the same weights (float64)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import gatelab
from tests.helpers import (
    assert_close,
    assert_same_snapshots,
    forward_backward,
    make_hx,
    make_input,
    make_packed,
)

DT = torch.float64
BACKENDS = ("reference", "native")


def pair(kind, I, H, *, proj_size=0, seed=0, backend="reference", **kw):
    """A gatelab module and its torch.nn peer with the same weights."""
    torch.manual_seed(seed)
    if kind == "lstm":
        ours = gatelab.LSTM(I, H, proj_size=proj_size, backend=backend, dtype=DT, **kw)
        theirs = nn.LSTM(I, H, proj_size=proj_size, dtype=DT, **kw)
    elif kind == "gru":
        ours = gatelab.GRU(I, H, backend=backend, dtype=DT, **kw)
        theirs = nn.GRU(I, H, dtype=DT, **kw)
    else:
        ours = gatelab.RNN(I, H, backend=backend, dtype=DT, **kw)
        theirs = nn.RNN(I, H, dtype=DT, **kw)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def repack(padded, lengths):
    return pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=False)


configs = st.fixed_dictionaries(
    {
        "num_layers": st.integers(1, 3),
        "bidirectional": st.booleans(),
        "batch_first": st.booleans(),
        "bias": st.booleans(),
        "T": st.integers(1, 5),
        "B": st.integers(1, 4),
        "I": st.integers(1, 4),
        "H": st.integers(2, 5),
        "given_hx": st.booleans(),
        "backend": st.sampled_from(BACKENDS),
    }
)


def _run_batched(kind, cfg, proj_size=0):
    c = dict(cfg)
    T, B, I, H = c.pop("T"), c.pop("B"), c.pop("I"), c.pop("H")
    given_hx, backend = c.pop("given_hx"), c.pop("backend")
    ours, theirs = pair(kind, I, H, proj_size=proj_size, backend=backend, **c)
    x = make_input(T, B, I, batch_first=c["batch_first"])
    hx = make_hx(theirs, B, lstm=kind == "lstm") if given_hx else None
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx] if hx is not None else [])
    a = forward_backward(ours, x, hx, leaves=leaves)
    b = forward_backward(theirs, x, hx, leaves=leaves)
    assert_same_snapshots(a, b)


@settings(max_examples=25, deadline=None)
@given(cfg=configs, proj=st.booleans())
def test_lstm_equals_torch(cfg, proj):
    _run_batched("lstm", cfg, proj_size=1 if proj else 0)


@settings(max_examples=15, deadline=None)
@given(cfg=configs)
def test_gru_equals_torch(cfg):
    _run_batched("gru", cfg)


@settings(max_examples=15, deadline=None)
@given(cfg=configs)
def test_rnn_equals_torch(cfg):
    _run_batched("rnn", cfg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_unsorted_equals_torch(kind, backend, bidirectional):
    lengths = [3, 6, 1, 6, 4]
    ours, theirs = pair(kind, 3, 4, num_layers=2, bidirectional=bidirectional, backend=backend)
    padded, packed = make_packed(lengths, 3)
    hx = make_hx(theirs, len(lengths), lstm=kind == "lstm")
    leaves = [padded, *(hx if isinstance(hx, tuple) else (hx,))]
    with torch.no_grad():
        out_ours, out_theirs = ours(packed, hx)[0], theirs(packed, hx)[0]
    assert torch.equal(out_ours.batch_sizes, out_theirs.batch_sizes)
    assert torch.equal(out_ours.sorted_indices, out_theirs.sorted_indices)
    assert_same_snapshots(
        forward_backward(ours, repack(padded, lengths), hx, leaves=leaves),
        forward_backward(theirs, repack(padded, lengths), hx, leaves=leaves),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_packed_with_projection_equals_torch(backend):
    lengths = [2, 5, 3]
    ours, theirs = pair(
        "lstm", 2, 5, proj_size=3, bidirectional=True, num_layers=2, backend=backend
    )
    padded, _ = make_packed(lengths, 2)
    assert_same_snapshots(
        forward_backward(ours, repack(padded, lengths), leaves=[padded]),
        forward_backward(theirs, repack(padded, lengths), leaves=[padded]),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_equals_torch(kind, backend, batch_first):
    ours, theirs = pair(
        kind, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, backend=backend
    )
    x = torch.randn(5, 3, dtype=DT, requires_grad=True)
    hx = make_hx(theirs, 1, lstm=kind == "lstm", unbatched=True)
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,))]
    a = forward_backward(ours, x, hx, leaves=leaves)
    b = forward_backward(theirs, x, hx, leaves=leaves)
    assert a["output"].shape == (5, 8)
    assert_same_snapshots(a, b)


def test_rnn_relu_equals_torch():
    ours, theirs = pair("rnn", 3, 4, nonlinearity="relu", num_layers=2)
    x = make_input(4, 2, 3)
    assert_same_snapshots(
        forward_backward(ours, x, leaves=[x]), forward_backward(theirs, x, leaves=[x])
    )


def test_dropout_between_layers_matches_in_eval_and_acts_in_train():
    ours, theirs = pair("lstm", 3, 4, num_layers=2, dropout=0.5, backend="reference")
    x = make_input(4, 2, 3)
    ours.eval()
    theirs.eval()
    assert_close(ours(x)[0], theirs(x)[0])
    ours.train()
    torch.manual_seed(0)
    out_a = ours(x)[0]
    torch.manual_seed(1)
    out_b = ours(x)[0]
    assert not torch.allclose(out_a, out_b)


def test_initialisation_and_names_equal_torch():
    for kw in ({}, {"num_layers": 2, "bidirectional": True, "proj_size": 2}, {"bias": False}):
        torch.manual_seed(7)
        ours = gatelab.LSTM(3, 4, **kw)
        torch.manual_seed(7)
        theirs = nn.LSTM(3, 4, **kw)
        a, b = ours.state_dict(), theirs.state_dict()
        assert list(a) == list(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k
    for cls_ours, cls_theirs in ((gatelab.GRU, nn.GRU), (gatelab.RNN, nn.RNN)):
        torch.manual_seed(3)
        ours = cls_ours(3, 4, 2, bidirectional=True)
        torch.manual_seed(3)
        theirs = cls_theirs(3, 4, 2, bidirectional=True)
        for (ka, va), (kb, vb) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)


def test_state_dict_loads_both_ways_and_converters():
    theirs = nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2, dtype=DT)
    ours = gatelab.LSTM(3, 4, 2, bidirectional=True, proj_size=2, dtype=DT)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    converted = gatelab.LSTM.from_torch(theirs)
    back = converted.to_torch()
    x = make_input(4, 2, 3)
    assert_close(converted(x)[0], theirs(x)[0])
    assert_close(back(x)[0], theirs(x)[0])
    with pytest.raises(ValueError, match="only the standard LSTM"):
        gatelab.LSTM(3, 4, variant="peephole").to_torch()


def test_forget_bias_shifts_only_the_forget_slice():
    torch.manual_seed(0)
    plain = gatelab.LSTM(3, 4)
    torch.manual_seed(0)
    shifted = gatelab.LSTM(3, 4, forget_bias=1.0)
    delta = shifted.bias_ih_l0 - plain.bias_ih_l0
    expected = torch.zeros(16)
    expected[4:8] = 1.0
    assert torch.allclose(delta, expected)
    assert torch.equal(shifted.bias_hh_l0, plain.bias_hh_l0)


def test_native_runs_packed_sorted_input():
    ours, theirs = pair("lstm", 2, 3, backend="native")
    padded = torch.randn(4, 3, 2, dtype=DT)
    packed = pack_padded_sequence(padded, torch.tensor([4, 3, 1]))
    assert_close(ours(packed)[0].data, theirs(packed)[0].data)
