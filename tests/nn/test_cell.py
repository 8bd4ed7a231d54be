"""gatelab.LSTMCell against torch.nn.LSTMCell and against its reference step."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import gatelab
from gatelab.nn import _params
from gatelab.nn.backends import fused

# the sLSTM (normalizer=True) is a layer, state (h, c, n, m): tests/nn/test_slstm.py
PRESETS = [k for k, v in gatelab.PRESETS.items() if not v.normalizer]
F64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def _built():
    fused.extension()


def _step(cell, x, hx, return_gates=False):
    """Forward and backward of one step; returns outputs and gradients of x, h, c and
    every parameter."""
    cell.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    leaves = [x]
    if hx is not None:
        hx = tuple(t.detach().clone().requires_grad_(True) for t in hx)
        leaves += list(hx)
    res = cell(x, hx, return_gates=True) if return_gates else cell(x, hx)
    h, c = res[0], res[1]
    torch.manual_seed(7)
    ((h * torch.randn_like(h)).sum() + (c * torch.randn_like(c)).sum()).backward()
    grads = [t.grad for t in leaves] + [p.grad for p in cell.parameters()]
    return [h, c], grads, (res[2] if return_gates else None)


def _close(got, want, tol=1e-10):
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        if w is None:
            assert g is None, k
            continue
        err = (g - w).abs().max().item() / (1 + w.abs().max().item())
        assert err <= tol, (k, err)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend", ["fused", "reference", "native"])
def test_standard_equals_torch(backend, bias):
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(5, 7, bias=bias, dtype=F64)
    cell = gatelab.LSTMCell(5, 7, bias=bias, backend=backend, dtype=F64)
    cell.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 5, dtype=F64)
    hx = (torch.randn(3, 7, dtype=F64), torch.randn(3, 7, dtype=F64))
    for state in (hx, None):
        out_r, g_r, _ = _step(ref, x, state)
        out_c, g_c, _ = _step(cell, x, state)
        _close(out_c, out_r)
        _close(g_c, g_r)
    assert cell.last_backend == backend
    # unbatched
    out_r = ref(x[0], (hx[0][0], hx[1][0]))
    out_c = cell(x[0], (hx[0][0], hx[1][0]))
    assert out_c[0].shape == (7,)
    _close(out_c, out_r)


def test_state_dicts_load_both_ways_and_init():
    torch.manual_seed(0)
    cell = gatelab.LSTMCell(4, 9)
    ref = torch.nn.LSTMCell(4, 9)
    assert [n for n, _ in cell.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ref.load_state_dict(cell.state_dict(), strict=True)
    cell.load_state_dict(ref.state_dict(), strict=True)
    bound = 1 / math.sqrt(9)
    for p in cell.parameters():
        assert p.abs().max().item() <= bound
    ln = gatelab.LSTMCell(4, 9, variant="layernorm")
    assert torch.equal(ln.ln_c_weight, torch.ones(9)) and torch.equal(
        ln.ln_ih_bias, torch.zeros(36)
    )
    peep = gatelab.LSTMCell(4, 9, variant="peephole")
    assert {"weight_ci", "weight_cf", "weight_co"} <= set(dict(peep.named_parameters()))
    fb = gatelab.LSTMCell(4, 9, forget_bias=1.0)
    assert fb.bias_ih[9:18].min().item() >= 1 - bound


@pytest.mark.parametrize("variant", PRESETS)
def test_fused_equals_reference(variant):
    torch.manual_seed(0)
    ref = gatelab.LSTMCell(5, 6, variant=variant, backend="reference", dtype=F64)
    cell = gatelab.LSTMCell(5, 6, variant=variant, backend="fused", dtype=F64)
    cell.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 5, dtype=F64)
    hx = (torch.randn(4, 6, dtype=F64), torch.randn(4, 6, dtype=F64))
    out_r, g_r, gates_r = _step(ref, x, hx, return_gates=True)
    out_c, g_c, gates_c = _step(cell, x, hx, return_gates=True)
    _close(out_c, out_r)
    _close(g_c, g_r)
    for k in "ifgoc":
        _close([getattr(gates_c, k)], [getattr(gates_r, k)])
    # float32 too
    ref32 = gatelab.LSTMCell(5, 6, variant=variant, backend="reference")
    cell32 = gatelab.LSTMCell(5, 6, variant=variant, backend="fused")
    cell32.load_state_dict(ref32.state_dict())
    out_r, g_r, _ = _step(ref32, x.float(), tuple(t.float() for t in hx))
    out_c, g_c, _ = _step(cell32, x.float(), tuple(t.float() for t in hx))
    _close(out_c, out_r, 1e-5)
    _close(g_c, g_r, 1e-5)


@pytest.mark.parametrize("variant", PRESETS)
def test_gradcheck(variant):
    torch.manual_seed(0)
    cell = gatelab.LSTMCell(3, 4, variant=variant, backend="fused", dtype=F64)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in cell.parameters()]
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    h = torch.randn(2, 4, dtype=F64, requires_grad=True)
    c = torch.randn(2, 4, dtype=F64, requires_grad=True)

    def f(x, h, c, *ps):
        return torch.func.functional_call(cell, dict(zip(names, ps)), (x, (h, c)))

    assert torch.autograd.gradcheck(f, (x, h, c, *params), eps=1e-6, atol=1e-7)


def test_gates_closed_form_and_no_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    _, _, g = gatelab.LSTMCell(4, 5, variant="cifg")(x, return_gates=True)
    assert torch.equal(g.f, 1 - g.i)
    assert not g.i.requires_grad
    _, _, g = gatelab.LSTMCell(4, 5, variant="nfg")(x, return_gates=True)
    assert torch.equal(g.f, torch.ones(3, 5))
    h, c, g = gatelab.LSTMCell(4, 5, variant="noaf")(x[0], return_gates=True)
    assert g.o.shape == (5,) and torch.allclose(h, g.o * c)


def test_auto_and_errors():
    cell = gatelab.LSTMCell(4, 5, variant="peephole")
    cell(torch.randn(2, 4))
    assert cell.last_backend == "fused"
    with pytest.raises(ValueError, match="native"):
        gatelab.LSTMCell(4, 5, variant="cifg", backend="native")
    with pytest.raises(ValueError, match="backend"):
        gatelab.LSTMCell(4, 5, backend="cuda")
    with pytest.raises(ValueError, match="shape"):
        cell(torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape"):
        cell(torch.randn(2, 4), (torch.zeros(3, 5), torch.zeros(3, 5)))
    with pytest.raises(TypeError, match="tuple"):
        cell(torch.randn(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="forget_bias"):
        gatelab.LSTMCell(4, 5, bias=False, forget_bias=1.0)


def test_auto_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(fused, "_ext", None)
    monkeypatch.setattr(fused, "_error", "the fused kernels could not be built: no compiler")
    monkeypatch.setattr(_params, "_warned", set())
    cell = gatelab.LSTMCell(4, 5, variant="nog")
    x = torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        cell(x)
    assert cell.last_backend == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cell(x)
    with pytest.raises(RuntimeError, match="no compiler"):
        gatelab.LSTMCell(4, 5, backend="fused")(x)
