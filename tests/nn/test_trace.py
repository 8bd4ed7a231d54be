"""gatelab.nn.trace: the trace's layout (layer-direction axis, time-major or batch_first,
unbatched, mask) against the reference backend's per-step tensors of each layer-direction,
and its helpers (names, items, layer, num_layers, detach, to)."""

from __future__ import annotations

import pytest
import torch

import gatelab
from gatelab.nn.backends import reference
from gatelab.nn.masks import reverse_padded
from gatelab.nn.trace import GateTrace, GRUTrace, RNNTrace
from tests.helpers import assert_close

LSTM_FIELDS = ("input_gate", "forget_gate", "candidate", "output_gate", "cell", "hidden")


def _oracle(run, x, lengths, direction):
    """One layer-direction on the reference backend: the reverse direction reads each
    sequence backwards within its length and its trace is put back in time order."""
    if direction == 0:
        return run(x)
    out, tr = run(reverse_padded(x, lengths))
    return reverse_padded(out, lengths), {k: reverse_padded(v, lengths) for k, v in tr.items()}


def _lstm_oracle(module, x, lengths):
    """``{(layer, direction): trace dict}`` of a zero-state LSTM, layer by layer."""
    B, expected, layer_in = x.shape[1], {}, x
    for layer in range(module.num_layers):
        outs = []
        for d in range(module.num_directions):
            p = module.layer_parameters(layer, d)
            h0 = x.new_zeros(B, module.output_size)
            c0 = x.new_zeros(B, module.hidden_size)

            def run(xin, p=p, h0=h0, c0=c0):
                out, _, _, tr = reference.lstm_layer(module.spec, xin, h0, c0, p, lengths, True)
                return out, tr

            out, tr = _oracle(run, layer_in, lengths, d)
            expected[layer, d] = tr
            outs.append(out)
        layer_in = torch.cat(outs, dim=-1)
    return expected


@torch.no_grad()
def test_lstm_trace_layer_directions_equal_the_reference_backend():
    torch.manual_seed(0)
    m = gatelab.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    _, _, trace = m(packed, return_trace=True)  # auto: fused, or the native trace replayed
    assert isinstance(trace, GateTrace)
    assert trace.names() == LSTM_FIELDS  # no normalizer, stabilizer outside the sLSTM
    assert GateTrace.names() == (*LSTM_FIELDS, "normalizer", "stabilizer")
    assert [k for k, _ in trace.items()] == list(LSTM_FIELDS)
    assert trace.num_layers == 2 and trace.num_directions == 2
    assert trace.input_gate.shape == (4, 6, 4, 5)  # (L*D, T, B, H)
    mask = torch.arange(6)[:, None] < lengths[None, :]
    assert torch.equal(trace.mask, mask)
    for (layer, d), want in _lstm_oracle(m, x, lengths).items():
        got = trace.layer(layer, d)
        assert set(got) == set(LSTM_FIELDS)
        for name in LSTM_FIELDS:
            assert_close(got[name], want[name], what=f"layer {layer} direction {d} {name}")
            k = layer * 2 + d
            assert torch.equal(got[name], getattr(trace, name)[k])  # the L*D axis
            assert not got[name][~mask].any()  # padded steps are zero


@torch.no_grad()
def test_batch_first_and_unbatched_layouts():
    torch.manual_seed(1)
    m = gatelab.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    _, _, tm = m(x, return_trace=True)
    m.batch_first = True
    _, _, bf = m(x.transpose(0, 1), return_trace=True)
    assert bf.batch_first and not tm.batch_first
    assert torch.equal(bf.mask, tm.mask.transpose(0, 1))
    for name in LSTM_FIELDS:
        assert_close(getattr(bf, name), getattr(tm, name).transpose(1, 2), what=name)
        assert_close(bf.layer(1)[name], tm.layer(1)[name].transpose(0, 1), what=name)
    m.batch_first = False
    _, _, one = m(x[:, 1], return_trace=True)  # unbatched (T, I): no batch axis
    assert one.mask.shape == (5,) and bool(one.mask.all())
    for name in LSTM_FIELDS:
        assert_close(getattr(one, name), getattr(tm, name)[:, :, 1], what=name)


@torch.no_grad()
def test_gru_and_rnn_traces_equal_the_reference_backend():
    torch.manual_seed(2)
    x = torch.randn(7, 3, 2, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    gru = gatelab.GRU(2, 4, dtype=torch.float64)
    _, _, trace = gru(packed, return_trace=True)
    assert isinstance(trace, GRUTrace)
    assert trace.names() == ("reset_gate", "update_gate", "candidate", "hidden")
    h0 = x.new_zeros(3, 4)
    _, _, want = reference.gru_layer(x, h0, gru.layer_parameters(0), lengths, True)
    for name, value in trace.layer(0).items():
        assert_close(value, want[name], what=f"GRU {name}")
    rnn = gatelab.RNN(2, 4, nonlinearity="relu", dtype=torch.float64)
    out, _, trace = rnn(x, return_trace=True)
    assert isinstance(trace, RNNTrace) and trace.names() == ("hidden",)
    want, _, _ = reference.rnn_layer(x, h0, rnn.layer_parameters(0), None, True, "relu")
    assert_close(trace.hidden[0], want, what="RNN hidden")
    assert_close(trace.hidden[0], out, what="RNN hidden is the output")


@torch.no_grad()
def test_slstm_trace_holds_normalizer_and_stabilizer():
    torch.manual_seed(3)
    m = gatelab.LSTM(3, 4, variant="slstm", backend="reference", dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    _, _, trace = m(x, return_trace=True)
    assert trace.names() == GateTrace.names()
    t = trace.layer(0)
    c_prev = torch.cat([torch.zeros_like(t["cell"][:1]), t["cell"][:-1]])
    n_prev = torch.cat([torch.zeros_like(t["normalizer"][:1]), t["normalizer"][:-1]])
    # the identities GateTrace's docstring promises for the stabilised gates
    assert_close(t["cell"], t["forget_gate"] * c_prev + t["input_gate"] * t["candidate"])
    assert_close(t["normalizer"], t["forget_gate"] * n_prev + t["input_gate"])
    assert_close(t["hidden"], t["output_gate"] * t["cell"] / t["normalizer"])


def test_detach_to_and_layer_bounds():
    torch.manual_seed(4)
    m = gatelab.LSTM(3, 4, bidirectional=True, backend="reference")
    x = torch.randn(5, 2, 3)
    _, _, trace = m(x, return_trace=True)
    assert trace.forget_gate.requires_grad  # the reference backend's trace carries gradient
    detached = trace.detach()
    assert not any(v.requires_grad for _, v in detached.items())
    for name, value in detached.items():
        assert torch.equal(value, getattr(trace, name))
    assert torch.equal(detached.mask, trace.mask)
    doubled = detached.to(torch.float64)
    for name, value in doubled.items():
        assert value.dtype == torch.float64
        assert torch.equal(value, getattr(detached, name).double())
    with pytest.raises(IndexError, match="layer=1"):
        trace.layer(1)
    with pytest.raises(IndexError, match="direction=2"):
        trace.layer(0, 2)
