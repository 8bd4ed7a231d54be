"""gatelab.nn.probe.probed_layer against the layer itself (a zero probe changes nothing)
and against autograd through the layer (the gradient at the probe is dloss/dh_t), and
gatelab.nn.masks against explicit loops."""

from __future__ import annotations

import pytest
import torch

import gatelab
from gatelab.nn.masks import mask_padding, reverse_padded, step_mask
from gatelab.nn.probe import probed_layer
from tests.helpers import assert_close

CASES = {
    "lstm": lambda: gatelab.LSTM(3, 4, num_layers=2, proj_size=2, dtype=torch.float64),
    "peephole": lambda: gatelab.LSTM(3, 4, variant="peephole", dtype=torch.float64),
    "slstm": lambda: gatelab.LSTM(3, 4, variant="slstm", dtype=torch.float64),
    "gru": lambda: gatelab.GRU(3, 4, dtype=torch.float64),
    "gru_reset_before": lambda: gatelab.GRU(3, 4, reset_after=False, dtype=torch.float64),
    "rnn": lambda: gatelab.RNN(3, 4, nonlinearity="relu", dtype=torch.float64),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_a_zero_probe_gives_the_layer_output_and_its_gradient_is_dloss_dh(kind):
    torch.manual_seed(0)
    module = CASES[kind]().requires_grad_(False)
    T, B = 5, 3
    x = torch.randn(T, B, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    module.backend = "reference"
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    _, _, trace = module(packed, return_trace=True)
    layer_in = x
    for layer in range(module.num_layers):
        probe = x.new_zeros(T, B, module.output_size, requires_grad=True)
        out = probed_layer(module, layer, layer_in, probe, lengths)
        assert_close(out, trace.layer(layer)["hidden"], what=f"{kind} layer {layer}")
        # dloss/dh_t by hand: h_t as a leaf cut out of the graph changes only later steps
        w = torch.randn_like(out)
        (grad,) = torch.autograd.grad((out * w).sum(), probe)
        assert_close(grad[-1], torch.where(lengths[:, None] == T, w[-1], 0.0), what="last")
        assert not grad[~trace.mask].any()  # a padded step reaches no loss
        layer_in = out.detach()


def test_probed_layer_refuses_bad_arguments():
    lstm = gatelab.LSTM(3, 4)
    x = torch.zeros(2, 1, 3)
    with pytest.raises(TypeError, match="gatelab LSTM, GRU or RNN"):
        probed_layer(torch.nn.LSTM(3, 4), 0, x, torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="layer=1"):
        probed_layer(lstm, 1, x, torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match=r"probe has shape \(2, 1, 5\)"):
        probed_layer(lstm, 0, x, torch.zeros(2, 1, 5))


def test_masks_against_loops():
    lengths = torch.tensor([3, 1, 4])
    T = 4
    mask = step_mask(lengths, T)
    assert mask.shape == (T, 3, 1)
    for t in range(T):
        for b in range(3):
            assert bool(mask[t, b, 0]) == (t < int(lengths[b]))
    assert step_mask(None, T) is None
    x = torch.arange(T * 3 * 2, dtype=torch.float64).reshape(T, 3, 2) + 1
    x[3, 0] = float("nan")  # a padded step may hold anything
    masked = mask_padding(x, lengths)
    rev = reverse_padded(x, lengths)
    for b in range(3):
        n = int(lengths[b])
        assert torch.equal(masked[:n, b], x[:n, b]) and not masked[n:, b].any()
        assert torch.equal(rev[:n, b], x[:n, b].flip(0))
        same(rev[n:, b], x[n:, b])  # padding stays put
    same(reverse_padded(x, None), x.flip(0))
    same(reverse_padded(rev, lengths), x)  # its own inverse


def same(a, b):
    torch.testing.assert_close(a, b, rtol=0.0, atol=0.0, equal_nan=True)
