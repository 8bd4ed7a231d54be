"""gatelab.insight.analysis: saturation, keep-vs-write flow, gradient flow, ablation statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gatelab
from gatelab.insight import analysis as A

ATOL64 = 1e-12
ATOL32 = 1e-6


def hand_trace(batch_first: bool = False) -> gatelab.GateTrace:
    """One layer, T=4 steps, B=2 sequences (the second 3 steps long), H=2 units."""
    # input gate values [t][b][unit]; the padded step (t=3, b=1) holds 0.95 on purpose:
    # it must not count.
    i = torch.tensor(
        [
            [[0.05, 0.50], [0.95, 0.50]],
            [[0.05, 0.92], [0.08, 0.50]],
            [[0.50, 0.99], [0.91, 0.10]],
            [[0.02, 0.50], [0.95, 0.95]],
        ]
    )
    mask = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    f = torch.full_like(i, 0.5)
    fields = {
        "input_gate": i[None],
        "forget_gate": f[None],
        "candidate": torch.zeros_like(i)[None],
        "output_gate": f[None],
        "cell": torch.zeros_like(i)[None],
        "hidden": torch.zeros_like(i)[None],
    }
    if batch_first:
        fields = {k: v.transpose(1, 2) for k, v in fields.items()}
        mask = mask.T
    return gatelab.GateTrace(mask=mask, batch_first=batch_first, num_directions=1, **fields)


@pytest.mark.parametrize("batch_first", [False, True])
def test_saturation_fractions_of_a_hand_made_trace(batch_first):
    sat = A.gate_saturation(hand_trace(batch_first), gates=["input_gate"], bins=10)
    (s,) = sat
    assert (s.layer, s.direction, s.gate, s.steps) == (0, 0, "input_gate", 7)
    # unit 0 real values: .05 .95 .05 .08 .50 .91 .02 -> left 4/7, right 2/7
    # unit 1 real values: .50 .50 .92 .50 .99 .10 .50 -> left 0/7 (0.10 is not < 0.1), right 2/7
    torch.testing.assert_close(s.left, torch.tensor([4 / 7, 0.0]))
    torch.testing.assert_close(s.right, torch.tensor([2 / 7, 2 / 7]))
    torch.testing.assert_close(
        s.mean, torch.tensor([(0.05 + 0.95 + 0.05 + 0.08 + 0.5 + 0.91 + 0.02) / 7, 4.01 / 7])
    )
    assert s.hist.sum() == 14  # 7 real steps x 2 units; the padded 0.95s are left out
    assert s.hist[0] == 4 and s.hist[9] == 4  # [0, .1): .05 .05 .08 .02; [.9, 1]: .95 .92 .91 .99
    assert s.edges[0] == 0.0 and s.edges[-1] == 1.0


def test_saturation_of_every_gate_and_thresholds():
    sat = A.gate_saturation(hand_trace())
    assert [s.gate for s in sat] == list(A.LSTM_GATES)
    forget = sat[1]
    assert forget.left.sum() == 0 and forget.right.sum() == 0
    assert (forget.low, forget.high) == (0.1, 0.9)
    strict = A.gate_saturation(hand_trace(), gates=["input_gate"], low=0.06, high=0.96)[0]
    torch.testing.assert_close(strict.left, torch.tensor([3 / 7, 0.0]))
    torch.testing.assert_close(strict.right, torch.tensor([0.0, 1 / 7]))


def test_saturation_thresholds_follow_the_gate_range():
    assert A.saturation_thresholds() == (0.1, 0.9)
    assert A.saturation_thresholds(gatelab.PRESETS["standard"]) == (0.1, 0.9)
    low, high = A.saturation_thresholds(gatelab.PRESETS["tanh_gates"])
    assert math.isclose(low, -0.8) and math.isclose(high, 0.8)


def test_saturation_of_a_model_and_its_trace_agree():
    torch.manual_seed(0)
    lstm = gatelab.LSTM(3, 5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 4, 3)
    from_model = A.gate_saturation(lstm, x)
    from_trace = A.gate_saturation(A.trace_of(lstm, x))
    assert len(from_model) == 2 * 2 * 3
    assert [(s.layer, s.direction, s.gate) for s in from_model][:4] == [
        (0, 0, "input_gate"),
        (0, 0, "forget_gate"),
        (0, 0, "output_gate"),
        (0, 1, "input_gate"),
    ]
    for a, b in zip(from_model, from_trace):
        torch.testing.assert_close(a.left, b.left)
        torch.testing.assert_close(a.right, b.right)


def test_saturation_errors():
    with pytest.raises(ValueError, match="no gates"):
        A.gate_saturation(gatelab.RNN(2, 3), torch.randn(4, 1, 2))
    with pytest.raises(ValueError, match="'hidden_gate' is not in this trace"):
        A.gate_saturation(hand_trace(), gates=["hidden_gate"])
    with pytest.raises(ValueError, match="low < high"):
        A.gate_saturation(hand_trace(), low=0.9, high=0.1)
    with pytest.raises(TypeError, match="without input"):
        A.gate_saturation(gatelab.LSTM(2, 3))
    gru = A.gate_saturation(gatelab.GRU(2, 3), torch.randn(4, 2, 2))
    assert [s.gate for s in gru] == ["reset_gate", "update_gate"]


def direct_flow(lstm: gatelab.LSTM, x: torch.Tensor, lengths: torch.Tensor, direction: int):
    """keep and write of layer 0 by a plain loop over each sequence on the step equations."""
    T, B = x.shape[:2]
    keep = torch.zeros(T, B, lstm.hidden_size, dtype=x.dtype)
    write = torch.zeros_like(keep)
    p = lstm.layer_parameters(0, direction)
    for b in range(B):
        n = int(lengths[b])
        steps = range(n) if direction == 0 else range(n - 1, -1, -1)
        h = torch.zeros(1, lstm.hidden_size, dtype=x.dtype)
        c = torch.zeros_like(h)
        for t in steps:
            xw = gatelab.nn.equations.lstm_input_projection(lstm.spec, x[t, b][None], p)  # (1, 4H)
            h_new, c_new, gates = gatelab.nn.equations.lstm_step(lstm.spec, xw, h, c, p)
            keep[t, b] = (gates.f * c)[0]
            write[t, b] = (gates.i * gates.g)[0]
            h, c = h_new, c_new
    return keep, write


@pytest.mark.parametrize("variant", ["standard", "peephole", "cifg"])
def test_cell_flow_equals_a_direct_computation(variant):
    torch.manual_seed(1)
    lstm = gatelab.LSTM(
        3, 4, bidirectional=True, variant=variant, backend="reference", dtype=torch.float64
    )
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 5, 2])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    trace = A.trace_of(lstm, packed)
    for direction in (0, 1):
        flow = A.cell_flow(trace, direction=direction)
        keep, write = direct_flow(lstm, x, lengths, direction)
        torch.testing.assert_close(flow.keep, keep, atol=ATOL64, rtol=0)
        torch.testing.assert_close(flow.write, write, atol=ATOL64, rtol=0)
        cell = trace.layer(0, direction)["cell"]
        torch.testing.assert_close(flow.keep + flow.write, cell, atol=ATOL64, rtol=0)
    keep_mean, write_mean = A.cell_flow(trace).per_step()
    real = trace.mask.to(torch.float64)  # (T, B)
    expected = (keep.abs().mean(-1) * real).sum(1) / real.sum(1)  # direction 1's keep
    torch.testing.assert_close(A.cell_flow(trace, direction=1).per_step()[0], expected)
    assert keep_mean.shape == write_mean.shape == (7,)


def test_cell_flow_of_nfg_keeps_everything():
    torch.manual_seed(2)
    lstm = gatelab.LSTM(2, 3, variant="nfg", backend="reference")
    x = torch.randn(5, 2, 2)
    flow = A.cell_flow(lstm, x)
    trace = A.trace_of(lstm, x)
    c = trace.cell[0]
    torch.testing.assert_close(flow.keep[1:], c[:-1])  # f = 1: the whole old cell is kept
    assert flow.keep[0].abs().max() == 0  # c0 = 0


def test_cell_flow_errors():
    with pytest.raises(TypeError, match="LSTM trace"):
        A.cell_flow(gatelab.GRU(2, 3), torch.randn(3, 1, 2))
    with pytest.raises(IndexError):
        A.cell_flow(hand_trace(), layer=1)
    with pytest.raises(ValueError, match="c0 has shape"):
        A.cell_flow(hand_trace(), c0=torch.zeros(3))


def set_params(model, **values):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.zero_()
            if name in values:
                p.copy_(torch.as_tensor(values[name], dtype=p.dtype).reshape(p.shape))


def last_sum(output, last):
    return last.sum()


def test_gradient_flow_of_a_vanilla_rnn_is_closed_form():
    # h_t = tanh(w h_{t-1} + u x_t) with x = 0 stays 0, so tanh' = 1 and
    # dloss/dh_t = w^(T-1-t), dloss/dx_t = u w^(T-1-t) for loss = h_{T-1}.
    T, w, u = 30, 0.5, 2.0
    rnn = gatelab.RNN(1, 1, dtype=torch.float64)
    set_params(rnn, weight_hh_l0=w, weight_ih_l0=u)
    g = A.gradient_flow(rnn, torch.zeros(T, 1, 1, dtype=torch.float64), last_sum)
    expected = torch.tensor([w ** (T - 1 - t) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(g.hidden[0], expected, atol=0, rtol=1e-12)
    torch.testing.assert_close(g.input, u * expected, atol=0, rtol=1e-12)


def test_gradient_flow_of_an_lstm_with_forget_gate_near_1_is_closed_form():
    # x = 0, zero state, zero candidate bias: c_t = h_t = 0 at every step, so with scalar
    # gates i, f, o (their biases) and recurrent candidate weight a:
    #   dloss/dc_t = o (f + a i o)^(T-1-t),  dloss/dh_t = a i o (f + a i o)^(T-2-t) (t < T-1)
    T, a = 30, 0.5
    lstm = gatelab.LSTM(1, 1, backend="reference", dtype=torch.float64)
    b = {"i": 0.0, "f": 8.0, "g": 0.0, "o": 0.0}
    set_params(lstm, bias_ih_l0=list(b.values()), weight_hh_l0=[0.0, 0.0, a, 0.0])
    i, f, o = (torch.sigmoid(torch.tensor(b[k], dtype=torch.float64)) for k in "ifo")
    g = A.gradient_flow(lstm, torch.zeros(T, 1, 1, dtype=torch.float64), last_sum)
    r = f + a * i * o
    expected = [float(a * i * o * r ** (T - 2 - t)) for t in range(T - 1)] + [1.0]
    torch.testing.assert_close(g.hidden[0], torch.tensor(expected, dtype=torch.float64))
    # The vanilla RNN with the same recurrent weight loses 2^-28 between the last and
    # the first step; the LSTM keeps the same order of magnitude.
    rnn = gatelab.RNN(1, 1, dtype=torch.float64)
    set_params(rnn, weight_hh_l0=a, weight_ih_l0=1.0)
    g_rnn = A.gradient_flow(rnn, torch.zeros(T, 1, 1, dtype=torch.float64), last_sum)
    assert g.hidden[0, 0] / g.hidden[0, -2] > 0.5
    assert g_rnn.hidden[0, 0] / g_rnn.hidden[0, -2] < 1e-8
    assert g.hidden[0, 0] > 1e6 * g_rnn.hidden[0, 0]


def test_gradient_flow_separates_rnn_and_lstm_at_init():
    """Random init, random input: the RNN's early-step gradient vanishes, a forget gate
    near 1 keeps the LSTM's."""
    torch.manual_seed(0)
    T = 60
    x = torch.randn(T, 8, 2)
    lstm = gatelab.LSTM(2, 16, forget_bias=4.0)
    rnn = gatelab.RNN(2, 16)
    g_lstm = A.gradient_flow(lstm, x, last_sum).hidden[0]
    g_rnn = A.gradient_flow(rnn, x, last_sum).hidden[0]
    assert g_lstm[0] / g_lstm[-1] > 1e-3
    assert g_rnn[0] / g_rnn[-1] < 1e-8
    assert g_lstm[0] > 1e4 * g_rnn[0]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_gradient_flow_input_gradient_matches_autograd_through_the_layer(kind):
    torch.manual_seed(3)
    make = {"lstm": gatelab.LSTM, "gru": gatelab.GRU, "rnn": gatelab.RNN}[kind]
    model = make(3, 4, num_layers=2, batch_first=True, dtype=torch.float64)
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 2])
    target = torch.randn(3, 4, dtype=torch.float64)

    def loss_fn(output, last):
        return ((last - target) ** 2).sum()

    g = A.gradient_flow(model, x, loss_fn, lengths=lengths)
    assert g.hidden.shape == (2, 6) and g.input.shape == (6,)
    xx = x.clone().requires_grad_(True)
    packed = pack_padded_sequence(xx, lengths, batch_first=True, enforce_sorted=False)
    _, state = model(packed)
    h_n = state[0] if kind == "lstm" else state
    loss = loss_fn(None, h_n[-1])
    (dx,) = torch.autograd.grad(loss, xx)  # (B, T, I)
    mask = torch.arange(6)[None, :] < lengths[:, None]  # (B, T)
    norms = dx.norm(dim=-1) * mask
    expected = norms.sum(0) / mask.sum(0)
    torch.testing.assert_close(g.input, expected)
    assert math.isclose(g.loss, float(loss.detach()))
    assert (g.hidden[-1, 4:] > 0).all()  # steps only the first sequence reaches count


def test_gradient_flow_errors():
    with pytest.raises(ValueError, match="unidirectional"):
        A.gradient_flow(gatelab.LSTM(2, 3, bidirectional=True), torch.randn(4, 1, 2), last_sum)
    with pytest.raises(ValueError, match="expected a batched 3-D"):
        A.gradient_flow(gatelab.LSTM(2, 3), torch.randn(4, 2), last_sum)
    with pytest.raises(ValueError, match="lengths"):
        A.gradient_flow(gatelab.RNN(2, 3), torch.randn(4, 2, 2), last_sum, lengths=[5, 1])
    with pytest.raises(TypeError, match="gatelab LSTM"):
        A.gradient_flow(torch.nn.LSTM(2, 3), torch.randn(4, 1, 2), last_sum)
