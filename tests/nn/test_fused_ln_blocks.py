"""Layer norm's after-loop passes in blocks of the T * B rows (csrc/lstm_backward.h,
``ln_block_rows``): the block size follows T * B and the thread count, and the fused
backward equals the reference (float64) below, at and above each block boundary, with one
thread (one scratch slot) and two (a run of blocks per thread, one partial dW_hh and dW_ih
each), with and without dx; where every product takes the own GEMM, the whole after-loop
is one pass over the blocks (``ln_after_blocks``).
"""

from __future__ import annotations

import pytest
import torch

import gatelab
from gatelab.nn.backends import fused
from tests.helpers import forward_backward

# (T * B, threads) -> rows per block: all rows up to 256; above, T * B / (8 threads)
# rounded up to a multiple of 32, from 64 to 256
RULE = {
    (100, 1): 100,
    (100, 2): 100,
    (256, 2): 256,
    (257, 1): 64,
    (257, 2): 64,
    (800, 1): 128,
    (800, 2): 64,
    (1024, 2): 64,
    (1025, 2): 96,
    (1540, 2): 128,
    (1600, 1): 224,
    (3200, 2): 224,
    (6400, 2): 256,
    (6400, 1): 256,
    (800, 5): 64,
}


def test_block_rows_rule():
    ext = fused.extension()
    got = {k: ext.ln_block_rows(*k) for k in RULE}
    assert got == RULE


# float64, relative to each tensor's largest value (as tests/nn/test_fused.py): gradients
# summed over hundreds of rows reach 1e2
TOL64 = 1e-10


@pytest.fixture
def gemm_mode():
    """Sets the extension's GEMM mode for one test, back to the default (0) after it."""
    ext = fused.extension()
    yield ext.set_gemm_mode
    ext.set_gemm_mode(0)


def _pair(hidden=16, seed=0):
    """The same layer-norm LSTM on the reference and the fused backend (float64; 4H = 64 a
    multiple of the panel: the own GEMMs)."""
    torch.manual_seed(seed)
    kw = dict(variant="layernorm", dtype=torch.float64)
    ref = gatelab.LSTM(5, hidden, backend="reference", **kw)
    fus = gatelab.LSTM(5, hidden, backend="fused", **kw)
    fus.load_state_dict(ref.state_dict(), strict=True)
    return ref, fus


# B = 4: T * B = 256 (one block), 260 (above: 64-row blocks, a partial fifth), 316 / 320 /
# 324 (below, at and above five full blocks), 1536 / 1540 (2 threads: sixteen full 96-row
# blocks / twelve of 128 rows and a partial; 1 thread: eight of 192 / six of 224 and a
# partial)
# gemm mode 0: the measured choice (the own GEMM or at::mm, product by product, as
# measured on this machine); 3: at::mm for every product (the blocks one after the other,
# each block's rows in parallel); 4: the own GEMM for every product (the one pass over the
# blocks, a run of blocks per thread where there are blocks enough)
@pytest.mark.parametrize("mode", [0, 3, 4])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("T", [64, 65, 79, 80, 81, 384, 385])
def test_layernorm_blocks_equal_reference(T, threads, mode, gemm_mode):
    _check_blocks(T, threads, mode, gemm_mode, dx=True)


# without dx (an input that needs no gradient): the same passes, less the dx product
@pytest.mark.parametrize("mode", [0, 4])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("T", [65, 385])
def test_layernorm_blocks_without_dx(T, threads, mode, gemm_mode):
    _check_blocks(T, threads, mode, gemm_mode, dx=False)


def _check_blocks(T, threads, mode, gemm_mode, dx):
    B = 4
    torch.set_num_threads(threads)  # the autouse fixture restores it
    gemm_mode(mode)
    ref, fus = _pair()
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, B, 5, generator=g, dtype=torch.float64)
    hx = tuple(torch.randn(1, B, 16, generator=g, dtype=torch.float64) for _ in range(2))
    lengths = torch.tensor([T, T - 3, 1, T - 1])  # padding: zeroed rows inside blocks
    snaps = []
    for m in (ref, fus):
        xl = x.clone().requires_grad_(dx)
        packed = torch.nn.utils.rnn.pack_padded_sequence(xl, lengths, enforce_sorted=False)
        snaps.append(forward_backward(m, packed, hx, leaves=(xl,) if dx else ()))
    got, want = snaps[1], snaps[0]
    assert got.keys() == want.keys()
    for k in want:
        err = ((got[k] - want[k]).abs().max() / (1.0 + want[k].abs().max())).item()
        assert err <= TOL64, (k, err)
