"""The fused kernels' GEMM choice (csrc/gemm_plan.h): own kernel or BLAS per product and
shape, measured once at first use and cached (the large products on a block of PROBE rows,
whatever T*B); forced modes and planted decisions give the reference's results. No timings
are asserted: which GEMM wins depends on the machine."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from gatelab.nn.backends import fused
from tests.nn.test_fused import (
    _assert_close,
    _check_float64_then_float32,
    _inputs,
    _pair,
    _run,
)

REC_FWD, REC_BWD, PROJ, DX, DW = range(5)
PROBE = 256  # csrc/gemm_plan.h's kProbeRows: the large products' key in place of T*B


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


def _shapes(B, I, H, P=None):
    """The key (kind, M, K, N) of every product of one layer-direction: the recurrent ones
    per B, the large ones on the probe's block (the sequence length does not enter)."""
    P = P or H
    GH = 4 * H
    return {
        (REC_FWD, B, P, GH),
        (REC_BWD, B, GH, P),
        (PROJ, PROBE, I, GH),
        (DX, PROBE, GH, I),
        (DW, GH, PROBE, I + P),
    }


def _equals_reference(ref, fus, T, B, seed=1):
    """One run of T steps, B rows: the fused outputs and gradients equal the reference's."""
    x, hx = _inputs(ref, T=T, B=B, hx=True, seed=seed)
    out_r, g_r = _run(ref, x, hx)
    out_f, g_f = _run(fus, x, hx)
    _assert_close(out_f, out_r, torch.float64, f"outputs T={T} B={B}")
    _assert_close(g_f, g_r, torch.float64, f"grads T={T} B={B}")


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
    assert {(k[0], *k[2:5]) for k in plans} == _shapes(8, 5, 16)
    for key, (own, measured, t_own, t_blas) in plans.items():
        assert key[1] == 8 and key[5] == threads
        assert measured and t_own > 0 and t_blas > 0, key
        assert own == (not t_blas < 0.9 * t_own), key  # the BLAS only when clearly faster
    for _ in range(2):
        _run(fus, x, hx)
        assert _plans(ext) == plans
    _assert_close(out_f, out_r, torch.float64, "outputs")
    _assert_close(g_f, g_r, torch.float64, "grads")


def test_one_plan_per_shape_whatever_the_length(ext):
    """The first call of a shape decides every product's plan, even a short one whose T*B
    (3 * 8 = 24) is below the rows where the large products use it (a warm-up pays the
    probes); later lengths, shorter or longer, add nothing and measure nothing again. Every
    length's result equals the reference."""
    ref, fus = _pair("standard", 5, 16)
    seen = None
    for T in (3, 40, 7, 100):
        _equals_reference(ref, fus, T, 8, seed=T)
        plans = _plans(ext)
        assert {(k[0], *k[2:5]) for k in plans} == _shapes(8, 5, 16), T
        assert all(measured for _, measured, *_ in plans.values()), T
        assert seen is None or plans == seen, T  # the same decisions and timings
        seen = plans


def test_layer_norm_plans_its_projection_at_a_short_call(ext):
    """Layer norm's raw projection (LnInputGemm) takes the same keyed plan: decided at
    T = 3, B = 8, kept at T = 50; the results equal the reference at both lengths."""
    ref, fus = _pair("layernorm", 5, 16)
    for T in (3, 50):
        _equals_reference(ref, fus, T, 8, seed=T)
        plans = _plans(ext)
        assert {(k[0], *k[2:5]) for k in plans} == _shapes(8, 5, 16), T
        if T == 3:
            first = plans
    assert plans == first


def test_batch_of_one_and_single_steps_measure_nothing(ext):
    """B = 1 (no MKL buffers: the peak-memory target): the recurrent products read W_hh
    unpacked and the large products take the own kernel, unmeasured and unrecorded, at
    every length (the cache does not grow per T). A weight used once or twice below 32
    rows (T = 2, B = 4: LSTMCell-like) probes nothing either. Results equal the reference."""
    ref, fus = _pair("standard", 5, 16)
    for T, B in ((40, 1), (7, 1), (100, 1), (2, 4), (1, 4)):
        _equals_reference(ref, fus, T, B)
        assert _plans(ext) == {}, (T, B)


def test_a_planted_plan_holds_for_every_length(ext):
    """set_gemm_plan with any T*B plants the large product's one plan: runs at two other
    lengths measure nothing and equal the reference."""
    for bytes_ in (8, 4):
        for kind, M, K, N in _shapes(8, 5, 16):
            rows = 12345  # not a T*B of the runs below
            M, K = (rows, K) if kind in (PROJ, DX) else (M, rows) if kind == DW else (M, K)
            ext.set_gemm_plan(kind, bytes_, M, K, N, kind != DW)
    planted = _plans(ext)
    assert {(k[0], *k[2:5]) for k in planted} == _shapes(8, 5, 16)
    ref, fus = _pair("standard", 5, 16)
    for T in (4, 60):
        _equals_reference(ref, fus, T, 8, seed=T)
    assert _plans(ext) == planted


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
        for kind, M, K, N in _shapes(B, I, H):
            ext.set_gemm_plan(kind, bytes_, M, K, N, kind not in blas)
    ref, fus = _pair(variant, I, H, bidirectional=True)
    x, hx = _inputs(ref, T=T, B=B, hx=True)
    _check_float64_then_float32(ref, fus, x, hx, torch.tensor([160, 41, 159, 1, 100]))
    for key, (own, measured, *_) in _plans(ext).items():
        assert not measured and own == (key[0] not in blas), key


def _allocations(fn) -> Counter:
    """{bytes: count} of torch's CPU allocator's allocations while ``fn`` runs (the
    profiler's memory events: every at::empty of the extension and of ATen)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    return Counter(e.nbytes() for e in events if e.name() == "[memory]" and e.nbytes() > 0)


def test_probes_allocate_their_outputs_once(ext):
    """The probes of the first call (T = 3, B = 8: all five products) time both candidates
    writing into outputs allocated before the timed calls, not a fresh one per call (issue
    16: at::mm's six 512 KB outputs per product grew glibc's heap by ~2.5 MB). Against the
    same call with every decision planted (nothing probed), no allocation size comes more
    than 3 times more often (the three probes' PROBE x GH blocks: the projection's output,
    dx's and dW's dG block; a fresh BLAS output per call made it 9); the decisions are the
    same and both calls equal the reference."""
    I, H, B = 24, 40, 8  # GH = 160, I + P = 64: no two of the probes' shapes coincide
    ref, fus = _pair("standard", I, H)
    x, hx = _inputs(ref, T=3, B=B, hx=True)
    out_r, g_r = _run(ref, x, hx)
    got = {}
    probing = _allocations(lambda: got.setdefault("probing", _run(fus, x, hx)))
    plans = ext.gemm_plans(True)
    assert {(p[0], *p[2:5]) for p in plans} == _shapes(B, I, H) and all(p[7] for p in plans)
    for kind, bytes_, M, K, N, _, own, *_ in plans:
        ext.set_gemm_plan(kind, bytes_, M, K, N, own)
    planted = _allocations(lambda: got.setdefault("planted", _run(fus, x, hx)))
    assert [p[:7] for p in ext.gemm_plans()] == [p[:7] for p in plans]
    extra = probing - planted
    assert extra and max(extra.values()) <= 3, extra
    for name, (out_f, g_f) in got.items():
        _assert_close(out_f, out_r, torch.float64, f"outputs {name}")
        _assert_close(g_f, g_r, torch.float64, f"grads {name}")


def test_set_gemm_plan_checks_its_arguments(ext):
    with pytest.raises(RuntimeError, match=r"kind must be 0\.\.4, got 5"):
        ext.set_gemm_plan(5, 4, 1, 1, 1, True)
    with pytest.raises(RuntimeError, match="bytes must be 4 or 8, got 2"):
        ext.set_gemm_plan(0, 2, 1, 1, 1, True)
    with pytest.raises(RuntimeError, match="M, K, N must be >= 1"):
        ext.set_gemm_plan(0, 4, 0, 1, 1, True)
