"""gatelab.GRU(reset_after=False): the reset gate before the recurrent matmul.

Checked against an independent plain-torch loop over one sequence at a time (float64,
outputs, states, gates and gradients to 1e-10), by gradcheck, and reset_after=True
against a frozen copy of the step it had before the option existed (bit for bit).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatelab
from gatelab.nn.backends import native, reference
from tests.helpers import assert_close

DT = torch.float64
I, H = 3, 4


def oracle(module: gatelab.GRU, x: torch.Tensor, lengths: list[int], h0: torch.Tensor):
    """Cho et al.'s GRU, one sequence at a time, from the module's parameters.

    ``x (B, T, I)``, ``h0 (L*D, B, H)``. Returns ``out (B, T, D*H)`` (zero past each
    length), ``h_n (L*D, B, H)`` and the gates ``{r, z, n}`` each ``(L*D, B, T, H)``.
    """
    P = dict(module.named_parameters())
    L, D = module.num_layers, 2 if module.bidirectional else 1
    B, T = x.shape[:2]
    outs, finals, gates = [], [[None] * B for _ in range(L * D)], []
    gate_rows = {k: [[None] * B for _ in range(L * D)] for k in "rzn"}
    for b in range(B):
        n_b = lengths[b]
        layer_in = x[b, :n_b]  # (n_b, I)
        for layer in range(L):
            dir_outs = []
            for d in range(D):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                W_ir, W_iz, W_in = P[f"weight_ih_{sfx}"].split(H)
                W_hr, W_hz, W_hn = P[f"weight_hh_{sfx}"].split(H)
                if module.bias:
                    b_ir, b_iz, b_in = P[f"bias_ih_{sfx}"].split(H)
                    b_hr, b_hz, b_hn = P[f"bias_hh_{sfx}"].split(H)
                else:
                    b_ir = b_iz = b_in = b_hr = b_hz = b_hn = torch.zeros(H, dtype=x.dtype)
                xs = layer_in if d == 0 else layer_in.flip(0)
                h = h0[layer * D + d, b]
                hs, rs, zs, ns = [], [], [], []
                for x_t in xs:
                    r = torch.sigmoid(W_ir @ x_t + b_ir + W_hr @ h + b_hr)
                    z = torch.sigmoid(W_iz @ x_t + b_iz + W_hz @ h + b_hz)
                    n = torch.tanh(W_in @ x_t + b_in + W_hn @ (r * h) + b_hn)
                    h = (1 - z) * n + z * h
                    hs.append(h), rs.append(r), zs.append(z), ns.append(n)
                seqs = [torch.stack(s) for s in (hs, rs, zs, ns)]
                if d == 1:
                    seqs = [s.flip(0) for s in seqs]
                dir_outs.append(seqs[0])
                finals[layer * D + d][b] = h
                for k, s in zip("rzn", seqs[1:]):
                    gate_rows[k][layer * D + d][b] = nn.functional.pad(s, (0, 0, 0, T - n_b))
            layer_in = torch.cat(dir_outs, dim=-1)
        outs.append(nn.functional.pad(layer_in, (0, 0, 0, T - n_b)))
    h_n = torch.stack([torch.stack(row) for row in finals])
    gates = {k: torch.stack([torch.stack(row) for row in v]) for k, v in gate_rows.items()}
    return torch.stack(outs), h_n, gates


def _setup(num_layers, bidirectional, batch_first, bias, seed=0):
    torch.manual_seed(seed)
    gru = gatelab.GRU(
        I, H, num_layers, bias, batch_first, bidirectional=bidirectional, reset_after=False
    )
    gru = gru.to(DT)
    with torch.no_grad():  # larger than the default init, so every term matters
        for p in gru.parameters():
            p.uniform_(-0.8, 0.8)
    return gru


def _loss(out, h_n, seed=3):
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=DT)
    w_h = torch.randn(h_n.shape, generator=g, dtype=DT)
    return (out * w_out).sum() + (h_n * w_h).sum()


CASES = [
    # num_layers, bidirectional, batch_first, bias, lengths (None: all T)
    (1, False, False, True, None),
    (2, True, True, True, None),
    (2, False, False, False, None),
    (3, True, False, True, [5, 2, 4]),
    (1, True, True, True, [1, 5, 3]),
    (2, False, True, False, [4, 5, 2]),
]


@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first", "bias", "lengths"), CASES)
def test_matches_plain_torch_oracle(num_layers, bidirectional, batch_first, bias, lengths):
    gru = _setup(num_layers, bidirectional, batch_first, bias)
    B, T = 3, 5
    lengths_ = lengths or [T] * B
    g = torch.Generator().manual_seed(1)
    x_bt = torch.randn(B, T, I, generator=g, dtype=DT)  # (B, T, I)
    x_bt[torch.arange(T)[None, :] >= torch.tensor(lengths_)[:, None]] = 0.0
    x_bt.requires_grad_()
    LD = num_layers * (2 if bidirectional else 1)
    h0 = torch.randn(LD, B, H, generator=g, dtype=DT).requires_grad_()

    x_in = x_bt if batch_first else x_bt.transpose(0, 1)
    if lengths is not None:
        x_in = pack_padded_sequence(x_in, torch.tensor(lengths), batch_first, False)
    out, h_n, trace = gru(x_in, h0, return_trace=True)
    assert gru.last_backend == "reference"
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first, total_length=T)
    if not batch_first:
        out = out.transpose(0, 1)
    want_out, want_h, want_gates = oracle(gru, x_bt, lengths_, h0)
    assert_close(out, want_out, what="output")
    assert_close(h_n, want_h, what="h_n")
    for name, k in (("reset_gate", "r"), ("update_gate", "z"), ("candidate", "n")):
        got = getattr(trace, name)  # (L*D, T, B, H) or (L*D, B, T, H)
        assert_close(got if batch_first else got.transpose(1, 2), want_gates[k], what=name)

    leaves = [x_bt, h0, *gru.parameters()]
    ours = torch.autograd.grad(_loss(out, h_n), leaves)
    theirs = torch.autograd.grad(_loss(want_out, want_h), leaves)
    names = ["x", "h0", *(n for n, _ in gru.named_parameters())]
    for name, a, b in zip(names, ours, theirs):
        assert_close(a, b, what=f"grad {name}")


def test_differs_from_reset_after_and_same_parameters():
    gru = _setup(1, False, False, True)
    after = gatelab.GRU(I, H, dtype=DT)
    after.load_state_dict(gru.state_dict(), strict=True)
    assert after.reset_after is True
    assert list(after.state_dict()) == list(gru.state_dict())
    x = torch.randn(6, 2, I, dtype=DT)
    assert (gru(x)[0] - after(x)[0]).abs().max() > 1e-3


def test_unbatched_matches_batched():
    gru = _setup(2, True, True, True)
    x = torch.randn(5, I, dtype=DT)
    h0 = torch.randn(4, H, dtype=DT)
    out, h_n = gru(x, h0)
    out_b, h_b = gru(x[None], h0[:, None])
    assert_close(out, out_b[0], what="output")
    assert_close(h_n, h_b[:, 0], what="h_n")


def test_gradcheck():
    gru = _setup(2, True, False, True)
    x = torch.randn(3, 2, I, dtype=DT, requires_grad=True)
    h0 = torch.randn(4, 2, H, dtype=DT, requires_grad=True)
    names = [n for n, _ in gru.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in gru.parameters())

    def f(x, h0, *ps):
        out, h_n = functional_call(gru, dict(zip(names, ps)), (x, h0))
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *params), fast_mode=True)


def test_backend_choice_and_refusals():
    x = torch.randn(4, 2, I)
    gru = gatelab.GRU(I, H, reset_after=False)
    gru(x)
    assert gru.last_backend == "reference"
    gru(x, return_trace=True)
    assert gru.last_backend == "reference"
    assert "reset_after=False" in repr(gru)
    assert "reset_after" not in repr(gatelab.GRU(I, H))
    with pytest.raises(ValueError, match=r"backend='native'.*reset_after=True only"):
        gatelab.GRU(I, H, reset_after=False, backend="native")
    gru.backend = "native"  # changed after construction: refused at forward
    with pytest.raises(ValueError, match=r"backend='native'.*'auto' or 'reference'"):
        gru(x)
    with pytest.raises(ValueError, match=r"backend='fused' runs the LSTM only"):
        gatelab.GRU(I, H, reset_after=False, backend="fused")(x)
    for bad in (0, 1, "False", None):
        with pytest.raises(TypeError, match=rf"reset_after must be a bool.*got {bad!r}"):
            gatelab.GRU(I, H, reset_after=bad)


def _old_gru_step(xw_t, h_prev, p):
    """gatelab.nn.equations.gru_step as it was before ``reset_after`` (frozen copy)."""
    hw = h_prev @ p["weight_hh"].T
    if p.get("bias_hh") is not None:
        hw = hw + p["bias_hh"]
    x_r, x_z, x_n = xw_t.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    h = (1.0 - z) * n + z * h_prev
    return h, {"reset_gate": r, "update_gate": z, "candidate": n}


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_reset_after_true_bit_identical_to_before(backend, monkeypatch):
    torch.manual_seed(0)
    gru = gatelab.GRU(I, H, 2, bidirectional=True, backend=backend)
    x = torch.randn(5, 3, I)
    packed = pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False)

    def run():
        results = []
        for inp in (x, packed):
            gru.zero_grad()
            out, h_n, tr = gru(inp, return_trace=True)
            data = out.data if hasattr(out, "batch_sizes") else out
            (data.square().sum() + h_n.sum()).backward()
            grads = [p.grad.clone() for p in gru.parameters()]
            results.append([data, h_n, tr.reset_gate, tr.update_gate, tr.candidate, *grads])
        return results

    now = run()
    module = reference if backend == "reference" else native
    monkeypatch.setattr(module, "gru_step", lambda xw, h, p, *a: _old_gru_step(xw, h, p))
    before = run()
    assert gru.last_backend == backend
    for a_list, b_list in zip(now, before):
        for a, b in zip(a_list, b_list):
            assert torch.equal(a, b)


def test_default_native_equals_torch_nn_gru():
    torch.manual_seed(0)
    theirs = nn.GRU(I, H, 2, bidirectional=True)
    ours = gatelab.GRU(I, H, 2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(5, 3, I)
    out, h_n = ours(x)
    assert ours.last_backend == "native"
    want_out, want_h = theirs(x)
    assert torch.equal(out, want_out) and torch.equal(h_n, want_h)
