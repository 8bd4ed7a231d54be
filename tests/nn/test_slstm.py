"""The sLSTM cell (xLSTM, Beck et al. 2024): checked against the authors' xlstm package,
against a plain unstabilised computation, by gradcheck and on the trace's recurrences."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import gatelab
from gatelab.nn.masks import reverse_padded
from tests.helpers import assert_close, forward_backward

SLSTM = gatelab.PRESETS["slstm"]
EXP_FORGET = dataclasses.replace(SLSTM, forget_gate_activation="exp")
SIGMOID_INPUT = dataclasses.replace(SLSTM, input_gate_activation="sigmoid")
HEADS2 = dataclasses.replace(SLSTM, num_heads=2)
SPECS = {"slstm": SLSTM, "exp_forget": EXP_FORGET, "sigmoid_input": SIGMOID_INPUT}
SPECS["heads2"] = HEADS2
XLSTM_TOL = 1e-6  # the bound; float64 agreement is ~1e-15 in practice


def make_slstm(spec, I=3, H=4, *, seed=0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    m = gatelab.LSTM(I, H, variant=spec, dtype=dtype, **kwargs)
    with torch.no_grad():  # wider weights than the init: gates far from their midpoints
        for p in m.parameters():
            p.mul_(3.0)
    return m


def plain_slstm(spec, x, p, *, stabilised=False):
    """The paper's eqs. 8-14 without the stabilizer (one layer, one head, zero state):
    what the cell would compute if exp did not overflow."""
    T, B, _ = x.shape
    H = p["weight_hh"].shape[1]
    h = c = n = x.new_zeros(B, H)
    outs = []
    for t in range(T):
        pre = x[t] @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        pi, pf, pz, po = pre.chunk(4, dim=-1)
        i = torch.exp(pi) if spec.input_activation == "exp" else torch.sigmoid(pi)
        f = torch.exp(pf) if spec.forget_activation == "exp" else torch.sigmoid(pf)
        c = f * c + i * torch.tanh(pz)
        n = f * n + i
        h = torch.sigmoid(po) * c / n
        outs.append(h)
    return torch.stack(outs)


# ------------------------------------------------------------------ the authors' code


def _xlstm_cell(H, K):
    cell_mod = pytest.importorskip(
        "xlstm.blocks.slstm.cell", reason="the xlstm package (2.0.6, test-only) is not installed"
    )
    cfg = cell_mod.sLSTMCellConfig(
        hidden_size=H,
        num_heads=K,
        backend="vanilla",  # the pure-PyTorch step; its CUDA kernels are never built here
        bias_init="standard",
        recurrent_weight_init="standard",
        output_shape="SBH",
    )
    return cell_mod.sLSTMCell(cfg).double()


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_matches_xlstm_vanilla_slstm(backend, heads):
    """Same weights in xlstm 2.0.6's vanilla sLSTMCell: outputs, final states (h, c, n,
    m) and every gradient agree within 1e-6 in float64. The package's cell takes ``W x +
    b_ih`` as input (its layer projects x), its R is ``(K, 4d, d)`` per head and its one
    bias is our ``bias_hh``."""
    pytest.importorskip("xlstm", reason="the xlstm package (2.0.6, test-only) is not installed")
    T, B, I, H = 7, 3, 5, 8
    d = H // heads
    m = make_slstm(dataclasses.replace(SLSTM, num_heads=heads), I, H, backend=backend)
    cell = _xlstm_cell(H, heads)
    with torch.no_grad():
        R = m.weight_hh_l0.reshape(4, heads, d, d).permute(1, 0, 2, 3)  # (K, 4, d, d)
        cell._recurrent_kernel_.copy_(R.reshape(heads, 4 * d, d))
        cell._bias_.copy_(m.bias_hh_l0)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w_ih = m.weight_ih_l0.detach().clone().requires_grad_()
    b_ih = m.bias_ih_l0.detach().clone().requires_grad_()

    out, state = m(x1)
    out2, state2 = cell((x2 @ w_ih.T + b_ih).transpose(0, 1))  # input (B, T, 4H)
    tol = {"rtol": 0.0, "atol": XLSTM_TOL}
    torch.testing.assert_close(out, out2, **tol)
    for k in range(4):  # (h, c, n, m)
        torch.testing.assert_close(state[k][0], state2[k], **tol)

    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (out * g).sum().backward()
    (out2 * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    torch.testing.assert_close(m.weight_ih_l0.grad, w_ih.grad, **tol)
    torch.testing.assert_close(m.bias_ih_l0.grad, b_ih.grad, **tol)
    torch.testing.assert_close(m.bias_hh_l0.grad, cell._bias_.grad, **tol)
    dR = m.weight_hh_l0.grad.reshape(4, heads, d, d).permute(1, 0, 2, 3)
    torch.testing.assert_close(dR.reshape(heads, 4 * d, d), cell._recurrent_kernel_.grad, **tol)


# ------------------------------------------------------------------ the stabilizer


@pytest.mark.parametrize("name", ["slstm", "exp_forget", "sigmoid_input"])
def test_stabilizer_changes_nothing(name):
    """Within float64's range the stabilised cell equals the plain equations, outputs and
    gradients."""
    spec = SPECS[name]
    m = make_slstm(spec, backend="reference")
    x = torch.randn(9, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    p = m.layer_parameters(0)
    out = m(x)[0]
    plain = plain_slstm(spec, x, p)
    assert_close(out, plain, what="output")
    g1 = torch.autograd.grad(out.sum(), list(p.values()))
    g2 = torch.autograd.grad(plain.sum(), list(p.values()))
    for name_, a, b in zip(p, g1, g2):
        assert_close(a, b, what=name_)


def _overflow_layer(spec, backend, size):
    """Two units whose four pre-activations are +-size at every step (x = +-1, W_ih =
    +-size): the gates saturate and exp(size) nears float32's limit (exp(88.7))."""
    m = gatelab.LSTM(1, 2, variant=spec, backend=backend, dtype=torch.float32)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.weight_ih_l0.copy_(size * torch.tensor([1.0, -1.0] * 4)[:, None])
    x = torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0])[:, None, None]
    return m, x.expand(10, 3, 1).contiguous()


def _finite_run(m, x, run):
    """Whether the outputs and every gradient of ``run`` are finite."""
    p = {k: v.detach().clone().requires_grad_() for k, v in m.layer_parameters(0).items()}
    x = x.detach().clone().requires_grad_()
    out = run(x, p)
    if not torch.isfinite(out).all():
        return False
    out.sum().backward()
    return all(bool(torch.isfinite(v.grad).all()) for v in (x, *p.values()))


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("name", ["slstm", "exp_forget", "sigmoid_input"])
@pytest.mark.parametrize("size", [80.0, 1000.0])
def test_overflow_finite_with_stabilizer(backend, name, size):
    """Pre-activations of +-80 (and +-1000) in float32 give finite outputs and gradients:
    the stabilizer keeps every exp's argument <= 0."""
    m, x = _overflow_layer(SPECS[name], backend, size)

    def run(x, p):
        return torch.func.functional_call(m, {f"{k}_l0": v for k, v in p.items()}, (x,))[0]

    assert _finite_run(m, x, run)
    out = m(x)[0]
    # with saturated gates h = o * c / n is 0 or the candidate +-1
    assert_close((out.abs() - 0.5).abs(), torch.full_like(out, 0.5), torch.float32)


@pytest.mark.parametrize(
    "name, size",
    [("exp_forget", 80.0), ("slstm", 90.0)],
)
def test_overflow_without_stabilizer(name, size):
    """The same cell computed plainly (paper eqs. 8-14, no m) is not finite in float32:
    with an exponential forget gate at +-80 (c and n grow as exp(80) per step), and with
    the sigmoid forget gate once exp(i~) itself overflows (i~ = 90 > 88.7). (With the
    sigmoid forget gate at +-80 the plain cell survives 10 steps: exp(80) = 5.5e34 fits.)
    The stabilised cell is finite on the same input (above)."""
    spec = SPECS[name]
    m, x = _overflow_layer(spec, "reference", size)
    assert not _finite_run(m, x, lambda x, p: plain_slstm(spec, x, p))
    stabilised = _overflow_layer(spec, "reference", size)[0]
    assert _finite_run(
        stabilised,
        x,
        lambda x, p: torch.func.functional_call(
            stabilised, {f"{k}_l0": v for k, v in p.items()}, (x,)
        )[0],
    )


# ------------------------------------------------------------------ trace and state


def _check_recurrences(tr, lengths, num_layers, num_directions):
    for layer in range(num_layers):
        for direction in range(num_directions):
            d = tr.layer(layer, direction)  # {name: (T, B, H)}
            if direction:  # the reverse direction's recurrence runs backwards in time
                d = {k: reverse_padded(v, lengths) for k, v in d.items()}
            c, n, f, i, z = (
                d[k] for k in ("cell", "normalizer", "forget_gate", "input_gate", "candidate")
            )
            for b, L in enumerate(lengths.tolist()):
                cb, nb = c[:L, b], n[:L, b]
                assert_close(cb[1:], f[1:L, b] * cb[:-1] + i[1:L, b] * z[1:L, b], what="c")
                assert_close(nb[1:], f[1:L, b] * nb[:-1] + i[1:L, b], what="n")
                # from the zero state: c_0 = i'_0 z_0, n_0 = i'_0 = 1 (m_0 = i~_0)
                assert_close(nb[0], i[0, b], what="n at the first step")
                assert_close(i[0, b], torch.ones_like(i[0, b]), what="i' at the first step")
                h = d["output_gate"][:L, b] * cb / nb
                if direction == 0 or num_directions == 1:
                    assert_close(d["hidden"][:L, b], h, what="h")
                assert (d["stabilizer"][L:, b] == 0).all() and (d["normalizer"][L:, b] == 0).all()


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("name", ["slstm", "exp_forget", "heads2"])
def test_trace_recurrences_hold(backend, name):
    """On every layer and direction of a packed batch: c and n follow the stated
    recurrences with the traced (stabilised) gates, and h = o c / n."""
    m = make_slstm(SPECS[name], 3, 4, num_layers=2, bidirectional=True, backend=backend)
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(6, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    _, state, tr = m(packed, return_trace=True)
    assert len(state) == 4 and tr.stabilizer is not None
    _check_recurrences(tr, lengths, 2, 2)


def test_other_cells_have_no_normalizer_in_trace():
    lstm = gatelab.LSTM(3, 4, variant="peephole", backend="reference")
    tr = lstm(torch.randn(5, 2, 3), return_trace=True)[2]
    assert tr.normalizer is None and tr.stabilizer is None
    assert [k for k, _ in tr.items()] == [
        "input_gate",
        "forget_gate",
        "candidate",
        "output_gate",
        "cell",
        "hidden",
    ]
    assert tr.detach().normalizer is None


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_state_carries_across_chunks(backend):
    """Running a sequence in two chunks, the state ``(h, c, n, m)`` handed on, equals one
    run: n and m are real state, not recomputed."""
    m = make_slstm(HEADS2, 3, 4, num_layers=2, backend=backend)
    x = torch.randn(10, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    whole, state = m(x)
    first, mid = m(x[:4])
    second, state2 = m(x[4:], mid)
    assert_close(torch.cat([first, second]), whole, what="output")
    for a, b in zip(state, state2):
        assert_close(a, b, what="state")


# ------------------------------------------------------------------ fused == reference


def _fused_vs_reference(spec, dtype, *, layers=2, bidirectional=True, lengths=(7, 3, 5)):
    snaps = []
    for backend in ("reference", "fused"):
        m = make_slstm(
            spec, 3, 8, num_layers=layers, bidirectional=bidirectional, backend=backend, dtype=dtype
        )
        g = torch.Generator().manual_seed(9)
        x = torch.randn(max(lengths), len(lengths), 3, generator=g, dtype=dtype)
        x.requires_grad_()
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        LD = layers * (2 if bidirectional else 1)
        hx = tuple(torch.randn(LD, len(lengths), 8, generator=g, dtype=dtype) for _ in range(4))
        hx = (hx[0], hx[1], hx[2].abs() + 0.5, hx[3])  # a carried state: n > 0
        for t in hx[:3]:
            t.requires_grad_()
        snap = forward_backward(m, packed, hx, leaves=(x, *hx[:3]))
        _, _, tr = m(packed, hx, return_trace=True)
        snap.update({f"trace:{k}": v.detach() for k, v in tr.items()})
        snaps.append(snap)
        assert m.last_backend == backend
    return snaps


@pytest.mark.parametrize("name", ["slstm", "exp_forget", "sigmoid_input", "heads2"])
def test_fused_equals_reference_float64(name):
    """Outputs, all four final states, every gradient (weights, x, h0, c0, n0) and the
    trace, two layers, both directions, packed lengths: within 1e-10."""
    ref, fus = _fused_vs_reference(SPECS[name], torch.float64)
    assert ref.keys() == fus.keys()
    for k in ref:
        assert_close(fus[k], ref[k], torch.float64, what=k)


@pytest.mark.parametrize("name", ["slstm", "exp_forget", "sigmoid_input"])
def test_fused_equals_reference_float32(name):
    ref, fus = _fused_vs_reference(SPECS[name], torch.float32, layers=1, bidirectional=False)
    for k in ref:
        torch.testing.assert_close(fus[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["slstm", "exp_forget", "sigmoid_input"])
def test_fused_inference_equals_reference(name, dtype):
    """Under no_grad the fused kernel keeps one step of scratch instead of every step's
    gates (inference): the outputs and all four final states are the reference backend's,
    padded rows included."""
    got = []
    for backend in ("reference", "fused"):
        m = make_slstm(SPECS[name], 3, 8, backend=backend, dtype=dtype)
        g = torch.Generator().manual_seed(13)
        x = torch.randn(7, 3, 3, generator=g, dtype=dtype)
        packed = pack_padded_sequence(x, torch.tensor([7, 3, 5]), enforce_sorted=False)
        with torch.no_grad():
            out, state = m(packed)
        assert m.last_backend == backend
        got.append((out.data, *state))
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for k, (fus, ref) in enumerate(zip(got[1], got[0])):
        if tol:
            torch.testing.assert_close(fus, ref, **tol, msg=f"output {k}")
        else:
            assert_close(fus, ref, dtype, what=f"output {k}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["slstm", "exp_forget"])
def test_nan_forget_pre_activation_reaches_the_output(name, dtype):
    """A NaN in one unit's forget bias makes that unit's states NaN in the reference
    (torch.maximum / torch.clamp pass NaN on), and so in the fused kernel: the kernel's
    max and min selects must not turn it into f' = 1 and a finite output (a model whose
    forget weights went NaN would train on with the gate stuck open, undetected)."""
    got = []
    for backend in ("reference", "fused"):
        m = make_slstm(SPECS[name], 3, 4, backend=backend, dtype=dtype)
        with torch.no_grad():
            m.bias_ih_l0[4 + 1] = float("nan")  # forget block (i, f, z, o), unit 1
        x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(3), dtype=dtype)
        with torch.no_grad():
            out, _ = m(x)
        got.append(torch.isnan(out))
    assert got[0].any()  # the reference does propagate it
    assert torch.equal(got[1], got[0])


@settings(max_examples=15, deadline=None)
@given(
    T=st.integers(1, 6),
    B=st.integers(1, 4),
    I=st.integers(1, 4),
    head_dim=st.integers(1, 3),
    heads=st.integers(1, 3),
    exp_forget=st.booleans(),
    bias=st.booleans(),
    data=st.data(),
)
def test_random_shapes_fused_equals_reference(T, B, I, head_dim, heads, exp_forget, bias, data):
    """Fuzz: any sizes, heads, gate kinds, bias or not, lengths or not, zero or carried
    state; outputs, states and every gradient within 1e-10 in float64."""
    spec = dataclasses.replace(
        SLSTM, num_heads=heads, forget_gate_activation="exp" if exp_forget else "sigmoid"
    )
    H = heads * head_dim
    seed = data.draw(st.integers(0, 99))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    hx = None
    if data.draw(st.booleans()):
        hx = [torch.randn(1, B, H, generator=g, dtype=torch.float64) for _ in range(4)]
        hx[2] = hx[2].abs() + 0.1
    lengths = None
    if data.draw(st.booleans()):
        lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    snaps = []
    for backend in ("reference", "fused"):
        m = make_slstm(spec, I, H, seed=seed, bias=bias, backend=backend)
        xi = x.clone().requires_grad_()
        inp = (
            xi
            if lengths is None
            else pack_padded_sequence(xi, torch.tensor(lengths), enforce_sorted=False)
        )
        snaps.append(forward_backward(m, inp, None if hx is None else tuple(hx), leaves=(xi,)))
    for k in snaps[0]:
        assert_close(snaps[1][k], snaps[0][k], what=k)


@pytest.mark.parametrize("T, B, I, H, heads", [(1, 1, 1, 1, 1), (3, 1, 2, 3, 3), (5, 7, 1, 6, 2)])
def test_odd_shapes_float32(T, B, I, H, heads):
    """float32's input projection and dx take oneDNN (float64 ATen's), the per-step products
    and weight gradients ATen's, the pointwise pass vectorised math: odd and tiny shapes
    agree too."""
    spec = dataclasses.replace(SLSTM, num_heads=heads)
    snaps = []
    for backend in ("reference", "fused"):
        m = make_slstm(spec, I, H, backend=backend, dtype=torch.float32)
        g = torch.Generator().manual_seed(12)
        x = torch.randn(T, B, I, generator=g).requires_grad_()
        snaps.append(forward_backward(m, x, leaves=(x,)))
    for k in snaps[0]:
        torch.testing.assert_close(snaps[1][k], snaps[0][k], rtol=1e-4, atol=1e-5, msg=k)


def test_fused_kernel_checks_its_arguments():
    """The C++ entry points validate before any raw-pointer loop."""
    from gatelab.nn.backends import fused

    ops = fused._slstm_ops()
    T, B, I, H = 3, 2, 2, 4
    x = torch.randn(T, B, I)
    st = [torch.zeros(B, H) for _ in range(4)]
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    ok = ops.slstm_forward(x, *st, w_ih, w_hh, None, None, None, 1)
    assert ok[0].shape == (T, B, H)
    cases = [
        ((x[:0], *st, w_ih, w_hh, None, None, None, 1), "T > 0"),
        ((x[:, :0], *st, w_ih, w_hh, None, None, None, 1), "B > 0"),
        ((x.double(), *st, w_ih, w_hh, None, None, None, 1), "dtype"),
        ((x.int(), *st, w_ih, w_hh, None, None, None, 1), "float32 or float64"),
        ((x, *st, w_ih[:, :1], w_hh, None, None, None, 1), "weight_ih has shape"),
        ((x, *st, w_ih, w_hh[:, :3], None, None, None, 1), r"\(4H, H\)"),
        ((x, st[0][:1], *st[1:], w_ih, w_hh, None, None, None, 1), "h0 has shape"),
        (
            (x.transpose(0, 1).contiguous().transpose(0, 1), *st, w_ih, w_hh, None, None, None, 1),
            "contiguous",
        ),
        ((x, *st, w_ih, w_hh, torch.zeros(3), None, None, 1), "bias_ih has shape"),
        ((x, *st, w_ih, w_hh, None, None, torch.tensor([4, 1]), 1), "lengths\\[0\\] = 4"),
        ((x, *st, w_ih, w_hh, None, None, torch.tensor([1, 1], dtype=torch.int32), 1), "int64"),
        ((x, *st, w_ih, w_hh, None, None, None, 7), "flags = 7"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=match):
            ops.slstm_forward(*args)
    out, _, _, _, _, acts, cells, norms, _, dlog = ok
    with pytest.raises(RuntimeError, match="dlog has shape"):
        ops.slstm_backward(
            out,
            None,
            None,
            None,
            x,
            *st[:3],
            w_ih,
            w_hh,
            out,
            acts,
            cells,
            norms,
            dlog[:, :, :1].contiguous(),
            None,
            True,
        )


# ------------------------------------------------------------------ gradcheck


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("name", ["slstm", "exp_forget", "sigmoid_input", "heads2"])
def test_gradcheck(backend, name):
    """Gradients of the outputs h (and h_n) w.r.t. x, h0, c0, n0 and every weight, from a
    carried state with lengths. m carries no gradient: c_n and n_n are in the scale of
    m_n, and their gradients are those at fixed m (exact for everything computed from the
    state later, since c / n and the next steps depend on c e^m and n e^m only)."""
    m = make_slstm(SPECS[name], 2, 4, backend=backend)
    names = [k for k, _ in m.named_parameters()]
    lengths = torch.tensor([4, 2])
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    hx = [torch.randn(1, 2, 4, dtype=torch.float64, generator=g) for _ in range(2)]
    n0 = torch.rand(1, 2, 4, dtype=torch.float64, generator=g) + 0.5  # a carried state: n > 0
    m0 = torch.randn(1, 2, 4, dtype=torch.float64, generator=g)
    h0, c0 = (t.requires_grad_() for t in hx)
    n0.requires_grad_()

    def f(x, h0, c0, n0, *params):
        p = dict(zip(names, params))
        packed = pack_padded_sequence(x, lengths)
        out, state = torch.func.functional_call(m, p, (packed, (h0, c0, n0, m0)))
        return out.data, state[0]

    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, c0, n0, *params), eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ arguments


def test_bad_specs_and_sizes_raise():
    with pytest.raises(ValueError, match="needs normalizer=True"):
        gatelab.CellSpec(input_gate_activation="exp")
    with pytest.raises(ValueError, match="needs normalizer=True"):
        gatelab.CellSpec(num_heads=2)
    with pytest.raises(ValueError, match="peephole"):
        dataclasses.replace(SLSTM, peephole=True)
    with pytest.raises(ValueError, match="input_gate_activation='relu'"):
        gatelab.CellSpec(input_gate_activation="relu", normalizer=True)
    with pytest.raises(ValueError, match="num_heads=0"):
        dataclasses.replace(SLSTM, num_heads=0)
    with pytest.raises(ValueError, match="hidden_size=6 does not split into num_heads=4"):
        gatelab.LSTM(3, 6, variant=dataclasses.replace(SLSTM, num_heads=4))
    with pytest.raises(ValueError, match="proj_size=2"):
        gatelab.LSTM(3, 6, proj_size=2, variant="slstm")
    m = gatelab.LSTM(3, 4, variant="slstm", backend="reference")
    with pytest.raises(TypeError, match=r"\(h0, c0, n0, m0\)"):
        m(torch.randn(2, 1, 3), (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))
    with pytest.raises(ValueError, match="backend='native' runs only the standard LSTM"):
        gatelab.LSTM(3, 4, variant="slstm", backend="native")(torch.randn(2, 1, 3))
    with pytest.raises(ValueError, match=r"whose state is \(h, c, n, m\)"):
        gatelab.LSTMCell(3, 4, variant="slstm", backend="reference")  # refused when built


def test_heads_weight_layout():
    """weight_hh is (4H, H/K): block k of gate g maps head k's inputs to head k's units."""
    spec = dataclasses.replace(SLSTM, num_heads=2)
    m = make_slstm(spec, 3, 4, backend="reference")
    assert m.weight_hh_l0.shape == (16, 2)
    W = m.weight_hh_l0.detach().reshape(4, 2, 2, 2)
    dense = torch.zeros(16, 4, dtype=torch.float64)
    for g in range(4):
        for k in range(2):
            dense[g * 4 + 2 * k : g * 4 + 2 * k + 2, 2 * k : 2 * k + 2] = W[g, k]
    h = torch.randn(5, 4, dtype=torch.float64)
    assert_close(gatelab.nn.equations.slstm_recurrent(h, m.weight_hh_l0.detach(), 2), h @ dense.T)
    snap = forward_backward(m, torch.randn(4, 2, 3, dtype=torch.float64))
    assert set(k for k in snap if k.startswith("grad:")) == {
        f"grad:{n}_l0" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }


# ------------------------------------------------------------------ report


def test_report_shows_normalizer_and_stabilizer(tmp_path):
    """The HTML report of an sLSTM carries n and m beside the gates (values equal to the
    trace's); an LSTM's report has neither."""
    from gatelab.insight.report import render_html, report_data

    m = make_slstm(SLSTM, 3, 4, dtype=torch.float32, backend="reference")
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(10))
    data = report_data(m, x, labels=[str(t) for t in range(6)])
    keys = [s["key"] for s in data["series"]]
    assert keys[:7] == [
        "input_gate",
        "forget_gate",
        "candidate",
        "output_gate",
        "cell",
        "normalizer",
        "stabilizer",
    ]
    tr = m(x, return_trace=True)[2]
    for name in ("normalizer", "stabilizer"):
        got = torch.tensor(data["layers"][0]["values"][name])
        torch.testing.assert_close(got, getattr(tr, name)[0].detach(), rtol=1e-3, atol=1e-4)
    assert "n_t = f'_t ⊙ n_{t-1} + i'_t" in data["equations"]
    assert "normalizer n_t (sLSTM)" in render_html(data)
    lstm = gatelab.LSTM(3, 4, backend="reference")
    plain = report_data(lstm, x, labels=[str(t) for t in range(6)])
    assert "normalizer" not in [s["key"] for s in plain["series"]]


def test_gradient_flow_runs_the_slstm_step():
    """analysis.gradient_flow reruns the sLSTM's own step: its loss is the layer's, and
    its dL/dh_t at the last step is dL/dh_T = 1 per unit."""
    from gatelab.insight.analysis import gradient_flow

    m = make_slstm(SLSTM, 3, 4, num_layers=2, backend="reference")
    x = torch.randn(6, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    flow = gradient_flow(m, x, lambda out, last: last.sum())
    assert flow.loss == pytest.approx(float(m(x)[0][-1].sum().detach()), abs=1e-12)
    assert float(flow.hidden[-1, -1]) == pytest.approx(2.0)  # ||(1, 1, 1, 1)||


def test_models_and_the_char_lm_train_an_slstm(tmp_path):
    """The LSTM -> Dense models and the char LM carry the sLSTM's four-part state: a
    classifier learns a step with it (loss falls), and a char LM run trains and resumes."""
    from gatelab.models.heads import ModelConfig, SequenceClassifier
    from gatelab.tasks.sequence import CharLMTrainConfig, load_char_lm, train_char_lm

    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=12,
        embedding_dim=8,
        hidden_size=8,
        output_size=2,
        variant="slstm",
        backend="reference",
    )
    model = SequenceClassifier(cfg)
    ids = torch.randint(1, 12, (16, 6))
    y = (ids[:, 0] > 6).long()
    lengths = torch.full((16,), 6)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses

    text = tmp_path / "text.txt"
    text.write_text("abcab cabca bcabc " * 40)
    train = CharLMTrainConfig(epochs=2, minutes=None, batch_size=4, seq_len=10)
    kw = {"embedding_dim": 4, "hidden_size": 8, "variant": "slstm", "backend": "reference"}
    metrics = train_char_lm(text, tmp_path / "run", kw, train)
    assert metrics["valid_loss"] < torch.log(torch.tensor(4.0)).item()  # beats uniform
    lm = load_char_lm(tmp_path / "run")
    assert lm.lstm.spec.normalizer
    _, state = lm(torch.zeros(1, 3, dtype=torch.long))
    assert len(state) == 4
