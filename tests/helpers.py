"""Shared test helpers: tolerances per dtype, seeded modules, forward+backward snapshots."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

TOL = {
    torch.float64: {"rtol": 0.0, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
}

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def assert_close(a, b, dtype=torch.float64, what=""):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def make_input(T, B, I, *, batch_first=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, I) if batch_first else (T, B, I)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_()


def make_packed(lengths, I, *, dtype=torch.float64, seed=0):
    """-> (padded (T, B, I) leaf, PackedSequence with enforce_sorted=False)."""
    g = torch.Generator().manual_seed(seed)
    padded = torch.randn(max(lengths), len(lengths), I, generator=g, dtype=dtype)
    padded.requires_grad_()
    return padded, pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=False)


def make_hx(module, B, *, lstm=True, dtype=torch.float64, seed=1, unbatched=False):
    g = torch.Generator().manual_seed(seed)
    LD = module.num_layers * (2 if module.bidirectional else 1)
    batch = () if unbatched else (B,)
    out_size = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    h0 = torch.randn(LD, *batch, out_size, generator=g, dtype=dtype).requires_grad_()
    if not lstm:
        return h0
    c0 = torch.randn(LD, *batch, module.hidden_size, generator=g, dtype=dtype).requires_grad_()
    return h0, c0


def forward_backward(module, x, hx=None, *, leaves=(), seed=2):
    """Run ``module(x, hx)``, backprop a random linear functional of every output.

    Returns ``{name: tensor}`` with the outputs, the final states and the gradients of every
    parameter and of each leaf in ``leaves`` (inputs, h0, c0).
    """
    for leaf in leaves:
        leaf.grad = None
    module.zero_grad()
    output, state = module(x, hx)[:2]
    out = output.data if isinstance(output, PackedSequence) else output
    states = state if isinstance(state, tuple) else (state,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out, *states))
    loss.backward()
    snap = {"output": out.detach()}
    for k, s in enumerate(states):
        snap[f"state{k}"] = s.detach()
    for name, p in module.named_parameters():
        snap[f"grad:{name}"] = p.grad.detach().clone()
    for k, leaf in enumerate(leaves):
        snap[f"grad:leaf{k}"] = leaf.grad.detach().clone()
    return snap


def assert_same_snapshots(a, b, dtype=torch.float64):
    assert a.keys() == b.keys()
    for k in a:
        assert_close(a[k], b[k], dtype, what=k)
