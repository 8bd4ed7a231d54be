"""The fused kernels' GEMM choice (csrc/gemm_plan.h): own kernel or BLAS per product and
shape, measured once at first use and cached; forced modes and planted decisions give the
reference's results. No timings are asserted: which GEMM wins depends on the machine."""

from __future__ import annotations

import pytest
import torch

from gatelab.nn.backends import fused
from tests.nn.test_fused import (
    _assert_close,
    _check_float64_then_float32,
    _inputs,
    _pair,
    _run,
)

REC_FWD, REC_BWD, PROJ, DX, DW = range(5)


@pytest.fixture
def ext():
    e = fused.extension()
    e.gemm_plans(True)
    yield e
    e.set_gemm_mode(0)
    e.gemm_plans(True)


def _plans(e):
    """{(kind, bytes, M, K, N, threads): (own, measured, t_own, t_blas)}"""
    return {p[:6]: p[6:] for p in e.gemm_plans()}


def _shapes(B, T, I, H, P=None):
    """The key (kind, M, K, N) of every product of one layer-direction, float64."""
    P = P or H
    TB, GH = T * B, 4 * H
    return {
        (REC_FWD, B, P, GH),
        (REC_BWD, B, GH, P),
        (PROJ, TB, I, GH),
        (DX, TB, GH, I),
        (DW, GH, TB, I + P),
    }


def test_every_product_is_measured_once_per_shape(ext):
    """B = 8, T * B = 96: each product kind is measured at its first use (both candidates
    timed), listed, and the decision is reused by later calls (the timings stay those of
    the first call); the result equals the reference."""
    ref, fus = _pair("standard", 5, 16)
    x, hx = _inputs(ref, T=12, B=8, hx=True)
    out_r, g_r = _run(ref, x, hx)
    out_f, g_f = _run(fus, x, hx)
    plans = _plans(ext)
    threads = torch.get_num_threads()
    assert {(k[0], *k[2:5]) for k in plans} == _shapes(8, 12, 5, 16)
    for key, (own, measured, t_own, t_blas) in plans.items():
        assert key[1] == 8 and key[5] == threads
        assert measured and t_own > 0 and t_blas > 0, key
        assert own == (not t_blas < 0.9 * t_own), key  # the BLAS only when clearly faster
    for _ in range(2):
        _run(fus, x, hx)
        assert _plans(ext) == plans
    _assert_close(out_f, out_r, torch.float64, "outputs")
    _assert_close(g_f, g_r, torch.float64, "grads")


def test_batch_of_one_is_never_measured(ext):
    """B = 1 (no MKL buffers: the peak-memory target): the recurrent products read W_hh
    unpacked and list nothing; the large products are decided for the own kernel without
    timing anything."""
    ref, fus = _pair("standard", 5, 16)
    x, hx = _inputs(ref, T=40, B=1, hx=True)
    out_r, g_r = _run(ref, x, hx)
    out_f, g_f = _run(fus, x, hx)
    plans = _plans(ext)
    assert {k[0] for k in plans} == {PROJ, DX, DW}
    assert all(own and not measured for own, measured, *_ in plans.values())
    _assert_close(out_f, out_r, torch.float64, "outputs")
    _assert_close(g_f, g_r, torch.float64, "grads")


@pytest.mark.parametrize("variant,proj", [("standard", 0), ("peephole", 3), ("layernorm", 0)])
def test_forced_modes_equal_the_measured_choice(ext, variant, proj):
    """The measured choice, the own kernel everywhere (mode 4) and the BLAS everywhere
    (mode 2: MKL packed recurrent products in float32, at::mm for the large ones): each
    equals the float64 reference to 1e-10 and drifts in float32 no more than the
    reference does; the three agree with one another within the float64 tolerance."""
    lengths = torch.tensor([160, 41, 159, 1, 100])  # as test_layernorm_blocks_bidirectional
    results = {}
    for mode in (0, 4, 2):
        ext.set_gemm_mode(mode)
        ref, fus = _pair(variant, 6, 16, proj_size=proj, bidirectional=True)
        x, hx = _inputs(ref, T=160, B=5, hx=True)
        results[mode] = _run(fus, x, hx, lengths)
        _check_float64_then_float32(ref, fus, x, hx, lengths)
    for mode in (4, 2):
        _assert_close(results[mode][0], results[0][0], torch.float64, f"outputs {mode}")
        _assert_close(results[mode][1], results[0][1], torch.float64, f"grads {mode}")


@pytest.mark.parametrize("blas", [(REC_FWD, REC_BWD), (PROJ,), (DX,), (DW,), (PROJ, DX, DW)])
@pytest.mark.parametrize("variant", ["standard", "layernorm"])
def test_planted_mixtures_equal_the_reference(ext, variant, blas):
    """Any mixture the measurement may choose on some machine: the products in `blas` on the
    BLAS, the others on the own kernel (set_gemm_plan), float64 and float32 against the
    reference; the planted decisions are kept, not measured over."""
    B, T, I, H = 5, 160, 6, 16  # as test_layernorm_blocks_bidirectional
    for bytes_ in (8, 4):
        for kind, M, K, N in _shapes(B, T, I, H):
            ext.set_gemm_plan(kind, bytes_, M, K, N, kind not in blas)
    ref, fus = _pair(variant, I, H, bidirectional=True)
    x, hx = _inputs(ref, T=T, B=B, hx=True)
    _check_float64_then_float32(ref, fus, x, hx, torch.tensor([160, 41, 159, 1, 100]))
    for key, (own, measured, *_) in _plans(ext).items():
        assert not measured and own == (key[0] not in blas), key


def test_set_gemm_plan_checks_its_arguments(ext):
    with pytest.raises(RuntimeError, match=r"kind must be 0\.\.4, got 5"):
        ext.set_gemm_plan(5, 4, 1, 1, 1, True)
    with pytest.raises(RuntimeError, match="bytes must be 4 or 8, got 2"):
        ext.set_gemm_plan(0, 2, 1, 1, 1, True)
    with pytest.raises(RuntimeError, match="M, K, N must be >= 1"):
        ext.set_gemm_plan(0, 4, 0, 1, 1, True)
