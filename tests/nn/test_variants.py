"""Every preset: an independent plain-torch oracle, closed-form facts, gradcheck, traces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gatelab
from gatelab import PRESETS, CellSpec
from tests.helpers import assert_close, make_input

DT = torch.float64
# the sLSTM (normalizer=True; state h, c, n, m) is tested in tests/nn/test_slstm.py
LSTM_PRESETS = [k for k, v in PRESETS.items() if not v.normalizer]
SIGMOID_PRESETS = [k for k in LSTM_PRESETS if PRESETS[k].gate_activation == "sigmoid"]


def naive_lstm(spec: CellSpec, x, h0, c0, p):
    """The equations written out once more, step by step, without gatelab.nn.equations."""
    H = c0.shape[-1]
    act = torch.sigmoid if spec.gate_activation == "sigmoid" else torch.tanh

    def ln(v, w, b):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * w + b

    h, c, outs = h0, c0, []
    for x_t in x:
        a, r = x_t @ p["weight_ih"].T, h @ p["weight_hh"].T
        if spec.layernorm:
            a = ln(a, p["ln_ih_weight"], p["ln_ih_bias"])
            r = ln(r, p["ln_hh_weight"], p["ln_hh_bias"])
        z = a + r + p["bias_ih"] + p["bias_hh"]
        blocks = {name: z[:, k * H : (k + 1) * H] for k, name in enumerate(spec.gates)}
        peep = spec.peephole
        i = act(blocks["i"] + (p["weight_ci"] * c if peep else 0)) if spec.input_gate else 1.0
        if spec.coupled:
            f = 1 - i
        elif spec.forget_gate:
            f = act(blocks["f"] + (p["weight_cf"] * c if peep else 0))
        else:
            f = 1.0
        g = blocks["g"].tanh() if spec.candidate_activation == "tanh" else blocks["g"]
        c = f * c + i * g
        o = act(blocks["o"] + (p["weight_co"] * c if peep else 0)) if spec.output_gate else 1.0
        c_hat = ln(c, p["ln_c_weight"], p["ln_c_bias"]) if spec.layernorm else c
        h = o * (c_hat.tanh() if spec.output_activation == "tanh" else c_hat)
        outs.append(h)
    return torch.stack(outs), h, c


def randomize(module, seed=0, scale=0.8):
    """Random weights everywhere (layer-norm gains too), so every term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


@pytest.mark.parametrize("name", LSTM_PRESETS)
def test_reference_equals_naive_equations(name):
    lstm = randomize(gatelab.LSTM(3, 4, variant=name, backend="reference", dtype=DT))
    x = make_input(6, 2, 3)
    h0, c0 = torch.randn(1, 2, 4, dtype=DT), torch.randn(1, 2, 4, dtype=DT)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    ref_out, ref_h, ref_c = naive_lstm(lstm.spec, x, h0[0], c0[0], lstm.layer_parameters(0))
    assert_close(out, ref_out, what="output")
    assert_close(h_n[0], ref_h, what="h_n")
    assert_close(c_n[0], ref_c, what="c_n")


@pytest.mark.parametrize("name", LSTM_PRESETS)
def test_gradcheck_every_preset(name):
    lstm = randomize(gatelab.LSTM(2, 3, variant=name, backend="reference", dtype=DT), scale=0.5)
    x = make_input(3, 2, 2)
    h0 = torch.randn(1, 2, 3, dtype=DT, requires_grad=True)
    c0 = torch.randn(1, 2, 3, dtype=DT, requires_grad=True)
    params = list(lstm.parameters())
    names = [n for n, _ in lstm.named_parameters()]

    def fn(x, h0, c0, *ps):
        p = dict(zip(names, ps))
        out, (h, c) = torch.func.functional_call(lstm, p, (x, (h0, c0)))
        return out, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_gradcheck_native(kind):
    cls = {"lstm": gatelab.LSTM, "gru": gatelab.GRU, "rnn": gatelab.RNN}[kind]
    module = cls(2, 3, 2, bidirectional=True, backend="native", dtype=DT)
    x = make_input(3, 2, 2)
    assert torch.autograd.gradcheck(lambda x: module(x)[0], (x,), eps=1e-6, atol=1e-7)


def _trace(name, *, seed=0, **kw):
    lstm = randomize(gatelab.LSTM(3, 5, variant=name, backend="reference", dtype=DT, **kw), seed)
    x = make_input(7, 3, 3, seed=seed)
    return lstm, lstm(x, return_trace=True)


def test_closed_form_facts():
    _, (_, _, tr) = _trace("cifg")
    assert torch.equal(tr.forget_gate, 1 - tr.input_gate)
    _, (_, _, tr) = _trace("nfg")
    assert torch.equal(tr.forget_gate, torch.ones_like(tr.forget_gate))
    _, (_, _, tr) = _trace("nig")
    assert torch.equal(tr.input_gate, torch.ones_like(tr.input_gate))
    _, (_, _, tr) = _trace("nog")
    assert torch.equal(tr.output_gate, torch.ones_like(tr.output_gate))
    _, (_, _, tr) = _trace("noaf")
    assert_close(tr.hidden, tr.output_gate * tr.cell)
    _, (_, _, tr) = _trace("standard")
    assert_close(tr.hidden, tr.output_gate * tr.cell.tanh())
    lstm, (_, _, tr) = _trace("layernorm")
    p = lstm.layer_parameters(0)
    c_hat = F.layer_norm(tr.cell, (5,), p["ln_c_weight"], p["ln_c_bias"], 1e-5)
    assert_close(tr.hidden, tr.output_gate * c_hat.tanh())


@pytest.mark.parametrize("name", LSTM_PRESETS)
def test_trace_obeys_cell_recurrence(name):
    _, (_, (_, c_n), tr) = _trace(name, seed=3)
    tr = tr.layer(0)
    c_prev = torch.cat([torch.zeros_like(tr["cell"][:1]), tr["cell"][:-1]])
    expected = tr["forget_gate"] * c_prev + tr["input_gate"] * tr["candidate"]
    assert_close(tr["cell"], expected)
    assert_close(tr["cell"][-1], c_n[0])


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(SIGMOID_PRESETS), seed=st.integers(0, 1000))
def test_sigmoid_gates_lie_in_unit_interval(name, seed):
    _, (_, _, tr) = _trace(name, seed=seed)
    for gate in (tr.input_gate, tr.forget_gate, tr.output_gate):
        assert gate.min() >= 0.0 and gate.max() <= 1.0


def test_tanh_gates_go_negative_and_niaf_candidate_is_unbounded():
    _, (_, _, tr) = _trace("tanh_gates")
    assert tr.forget_gate.min() < 0 and tr.forget_gate.max() <= 1
    lstm = randomize(gatelab.LSTM(3, 5, variant="niaf", backend="reference", dtype=DT), scale=3)
    _, _, tr = lstm(make_input(4, 2, 3), return_trace=True)
    assert tr.candidate.abs().max() > 1


@settings(max_examples=15, deadline=None)
@given(
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    proj=st.booleans(),
)
def test_native_trace_equals_reference_trace(num_layers, bidirectional, batch_first, lengths, proj):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    torch.manual_seed(0)
    ref = gatelab.LSTM(2, 3, proj_size=2 if proj else 0, backend="reference", dtype=DT, **kw)
    nat = gatelab.LSTM(2, 3, proj_size=2 if proj else 0, backend="native", dtype=DT, **kw)
    nat.load_state_dict(ref.state_dict())
    padded = torch.randn(max(lengths), len(lengths), 2, dtype=DT)
    if batch_first:
        padded = padded.transpose(0, 1)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        padded, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
    )
    for inp in (packed, padded):
        a, b = ref(inp, return_trace=True)[2], nat(inp, return_trace=True)[2]
        assert torch.equal(a.mask, b.mask)
        for (name, va), (_, vb) in zip(a.items(), b.items()):
            assert_close(va, vb, what=name)


def test_trace_layout_mask_and_padding():
    lstm = gatelab.LSTM(2, 3, 2, bidirectional=True, batch_first=True, backend="reference")
    lengths = [4, 2]
    padded = torch.randn(2, 4, 2)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        padded, torch.tensor(lengths), batch_first=True
    )
    _, _, tr = lstm(packed, return_trace=True)
    assert tr.input_gate.shape == (4, 2, 4, 3)  # (L*D, B, T, H)
    assert tr.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.all(tr.input_gate[:, 1, 2:] == 0) and torch.all(tr.cell[:, 1, 2:] == 0)
    assert torch.all(tr.input_gate[:, 1, :2] > 0)
    assert tr.num_layers == 2 and tr.layer(1, 1)["forget_gate"].shape == (2, 4, 3)
    with pytest.raises(IndexError, match="layer=2"):
        tr.layer(2)


def test_gru_and_rnn_traces_replay_equals_reference():
    torch.manual_seed(0)
    ref = gatelab.GRU(2, 3, 2, bidirectional=True, backend="reference", dtype=DT)
    nat = gatelab.GRU(2, 3, 2, bidirectional=True, backend="native", dtype=DT)
    nat.load_state_dict(ref.state_dict())
    x = make_input(5, 2, 2)
    a, b = ref(x, return_trace=True)[2], nat(x, return_trace=True)[2]
    assert a.names() == ("reset_gate", "update_gate", "candidate", "hidden")
    for (name, va), (_, vb) in zip(a.items(), b.items()):
        assert_close(va, vb, what=name)
    z, n, h = a.update_gate[0], a.candidate[0], a.hidden[0]
    h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
    assert_close(h, (1 - z) * n + z * h_prev)  # the GRU's closed-form update
    rnn = gatelab.RNN(2, 3, backend="reference", dtype=DT)
    out, _, tr = rnn(x, return_trace=True)
    assert torch.equal(tr.hidden[0], out)


def test_nan_input_propagates_without_crashing():
    x = torch.randn(4, 2, 3)
    x[1, 0, 0] = float("nan")
    for backend in ("reference", "native"):
        out, (h, _) = gatelab.LSTM(3, 4, backend=backend)(x)
        assert torch.isnan(out[1:, 0]).all() and not torch.isnan(out[:, 1]).any()
        assert torch.isnan(h[0, 0]).all()


def test_spec_describe_states_the_equations():
    text = PRESETS["standard"].describe()
    assert "o_t = σ(" in text and "h_t = o_t ⊙ tanh(c_t)" in text
    assert "f_t = 1 - i_t" in PRESETS["cifg"].describe()
    assert "h_t = o_t ⊙ c_t" in PRESETS["noaf"].describe()
    assert PRESETS["standard"].is_standard and not PRESETS["peephole"].is_standard
    assert gatelab.resolve_spec("standard", 1.0).is_standard
