"""The fused backend: gatelab's C++ time loops for every cell spec, hand-written backward.

The kernels (``gatelab/csrc/fused_lstm.cpp``) are a torch C++ extension compiled on first
use with ``torch.utils.cpp_extension.load`` and cached on disk (torch's extensions
directory, ``TORCH_EXTENSIONS_DIR`` to move it); nothing is compiled when gatelab is
imported. If the build fails (no compiler, ...) :func:`can_run` says why and
``backend="auto"`` falls back to the reference backend with one warning.

Forward: one GEMM for the input projection of all steps (and its layer norm), then per
step one GEMM ``h_{t-1} W_hh^T`` and one fused, vectorised pointwise pass that writes the
gate activations. Backward: per step one pointwise pass and one GEMM for ``dh_{t-1}``;
``dW_ih``, ``dW_hh``, ``dx``, the biases, peephole and layer-norm parameters as large GEMMs
and reductions after the loop. The gate activations kept for backward ARE the trace, so
tracing is free.

The GEMMs are the extension's own register-tiled kernel over a weight packed once per
sequence (``W_hh`` for the recurrence), with columns split by hidden units so that one
thread goes from its GEMM columns straight on to their pointwise pass. On the 2-core AMD
EPYC (Zen 4) this was built on it beat MKL's ``sgemm`` and packed ``sgemm_compute``
(which ARCHITECTURE.md measured against ``addmm``) at every recurrent shape of the
benchmark, B = 1..64; MKL stays selectable (``extension().set_gemm_mode``) for comparison.
A weight used once (``LSTMCell``) is multiplied unpacked. Steps are split over threads
(OpenMP, torch's thread count) and the split backs off when it stalls: on a machine whose
cores other processes share, a split step can wait a whole time slice for its other half.
Only ``float32`` and ``float64`` on CPU run here; ``GATELAB_DISABLE_FUSED=1`` turns the
backend off (``auto`` then uses the reference backend).

Traces from this backend carry no gradient: the gate and cell tensors are outputs marked
non-differentiable (the reference backend's traces do carry gradients). ``hidden`` is the
layer output itself and does. The backward is marked ``once_differentiable``: a second
derivative through it (``create_graph=True``) raises rather than coming back as zero.

Validation: :func:`lstm_layer` checks its arguments with :mod:`gatelab.backends._checks`,
the one set of rules every backend runs (shapes of every parameter against the gate count,
``I``, ``H``, ``P``; dtypes, devices, ``h0``/``c0``, ``lengths``; ``T = 0`` refused, ``B = 0``
answered without the kernels). The C++ functions repeat every check their raw-pointer
loops rely on with ``TORCH_CHECK``: they are the last line of defence, since
:func:`extension` hands them out to be called directly, and a failed check there is a
``RuntimeError``, never a crash.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..cells import CellSpec
from . import _checks, reference
from .reference import step_mask

__all__ = ["can_run", "extension", "lstm_layer", "spec_flags"]

logger = logging.getLogger(__name__)

_SOURCES = ("fused_lstm.cpp",)
# No -march=native, no -ffast-math: see fused_lstm.cpp. -fopenmp because ATen's
# parallel_for (OpenMP build) is a header template that runs serially without it; the
# extension then shares torch's libgomp (same soname, already loaded). Without OpenMP
# support the kernels still build, single-threaded.
_FLAG_SETS = ((["-O3", "-fopenmp"], ["-fopenmp"]), (["-O3"], []))
_PARAMS = (
    "weight_ih",
    "weight_hh",
    "bias_ih",
    "bias_hh",
    "weight_hr",
    "weight_ci",
    "weight_cf",
    "weight_co",
    "ln_ih_weight",
    "ln_ih_bias",
    "ln_hh_weight",
    "ln_hh_bias",
    "ln_c_weight",
    "ln_c_bias",
)
_DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_ext = None
_error: str | None = None


def _csrc() -> Path:
    return Path(__file__).resolve().parent.parent / "csrc"


def _build_name(cflags: list[str]) -> str:
    """The extension's name carries a hash of its sources, their directory and the flags,
    so that builds of different versions (other checkouts, other torch) never overwrite
    one another: torch's build files name the sources' paths, so two checkouts sharing a
    build directory would recompile it each time they alternate."""
    digest = hashlib.sha256(str(_csrc()).encode())
    for name in _SOURCES:
        digest.update((_csrc() / name).read_bytes())
    digest.update(" ".join(cflags).encode())
    digest.update(torch.__version__.encode())
    return f"gatelab_fused_{digest.hexdigest()[:12]}"


def _is_built(name: str) -> bool:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, False)) / f"{name}.so").exists()
    except Exception:  # private helper moved: assume a build is needed (only logging)
        return False


def extension():
    """The compiled extension module; builds it on first use. Raises RuntimeError (with
    the compiler's first error line) when it cannot be built."""
    global _ext, _error
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        if _error is not None:
            raise RuntimeError(_error)
        first_err: Exception | None = None
        for cflags, ldflags in _FLAG_SETS:
            try:
                _ext = _build(cflags, ldflags)
                break
            except Exception as err:  # no compiler, compile error, missing headers, ...
                first_err = first_err or err
                logger.warning("building the fused kernels with %s failed", " ".join(cflags))
                if not re.search(r"openmp|gomp|omp\.h|omp_", str(err).lower()):
                    break  # not an OpenMP problem: the serial build would fail the same way
        if _ext is None:
            _error = f"the fused kernels could not be built: {_first_line(first_err)}"
            raise RuntimeError(_error) from first_err
    return _ext


def _build(cflags: list[str], ldflags: list[str]):
    from torch.utils import cpp_extension

    name = _build_name(cflags)
    if not _is_built(name):
        logger.info("compiling gatelab fused kernels (first use, ~1 min)")
    return cpp_extension.load(
        name=name,
        sources=[str(_csrc() / s) for s in _SOURCES],
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        verbose=False,
    )


def _first_line(err: BaseException) -> str:
    """The compiler's first ``error:`` line if there is one, else the message's first line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    first = next((ln for ln in lines if "error:" in ln), lines[0])
    return first if len(first) <= 300 else first[:297] + "..."


def can_run(module, device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether the fused backend can run ``module`` (a gatelab LSTM or LSTMCell) on
    ``device``: ``(True, "")`` or ``(False, reason)``. Builds the extension if needed."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cpu":
        return False, f"the fused kernels run on CPU; got device {device}"
    for name, p in module.named_parameters():
        if p.device.type != "cpu":
            return False, f"the fused kernels run on CPU; parameter {name} is on {p.device}"
        if p.dtype not in _DTYPES:
            return False, f"the fused kernels run float32 and float64; {name} is {p.dtype}"
    if os.environ.get("GATELAB_DISABLE_FUSED"):
        return False, "the fused backend is disabled by GATELAB_DISABLE_FUSED"
    try:
        extension()
    except RuntimeError as err:
        return False, str(err)
    return True, ""


@functools.lru_cache(maxsize=64)
def spec_flags(spec: CellSpec) -> int:
    """The kernels' bit flags for ``spec`` (see ``Spec`` in fused_lstm.cpp)."""
    bits = (
        spec.input_gate,
        spec.forget_gate,
        spec.output_gate,
        spec.coupled,
        spec.peephole,
        spec.candidate_activation == "tanh",
        spec.output_activation == "tanh",
        spec.gate_activation == "tanh",
        spec.layernorm,
    )
    return sum(1 << k for k, on in enumerate(bits) if on)


class _FusedLSTM(torch.autograd.Function):
    """``(x, h0, c0, *params) -> (out, h_n, c_n, acts, cells)``; ``acts (T, B, G*H)`` and
    ``cells (T, B, H)`` are the non-differentiable trace."""

    @staticmethod
    def forward(ctx, flags, lengths, keep, x, h0, c0, *params):
        ext = extension()
        res = ext.lstm_forward(x, h0, c0, list(params), lengths, flags, keep)
        out, h_n, c_n, acts, cells = res[:5]
        ctx.mark_non_differentiable(acts, cells)
        ctx.set_materialize_grads(False)
        ctx.flags, ctx.lengths = flags, lengths
        ctx.extras = res[5:]  # y, hr, layer-norm statistics: internal, never handed out
        ctx.save_for_backward(x, h0, c0, out, acts, cells, *params)
        return out, h_n, c_n, acts, cells

    @staticmethod
    @once_differentiable  # hand-written: a second derivative would be silently zero
    def backward(ctx, d_out, d_hn, d_cn, _d_acts, _d_cells):
        x, h0, c0, out, acts, cells, *params = ctx.saved_tensors
        if d_out is None and d_hn is None and d_cn is None:
            return (None,) * (6 + len(params))
        saved = [out, None, None, acts, cells, *ctx.extras]
        saved = [t if t is not None else torch.empty(0) for t in saved]
        need_dx = ctx.needs_input_grad[3]
        g = extension().lstm_backward(
            d_out, d_hn, d_cn, x, h0, c0, params, ctx.lengths, ctx.flags, saved, need_dx
        )
        dx, dh0, dc0, dparams = g[0], g[1], g[2], g[3:]
        grads = [dx if need_dx else None, dh0, dc0]
        grads += [d if need else None for d, need in zip(dparams, ctx.needs_input_grad[6:])]
        return (None, None, None, *grads)


def lstm_layer(
    spec: CellSpec,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    p: dict[str, Tensor | None],
    lengths: Tensor | None,
    need_trace: bool,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
    """One LSTM layer-direction; the contract of ``reference.lstm_layer``.

    ``x (T, B, I)``, ``h0 (B, P)``, ``c0 (B, H)``; returns ``out (T, B, P)``, ``h_n``,
    ``c_n`` and, if asked, the trace ``{input_gate, forget_gate, candidate, output_gate,
    cell, hidden}`` of ``(T, B, H)`` tensors (``hidden`` ``(T, B, P)``), zero on padded
    steps. The gate and cell tensors carry no gradient. Arguments are checked as for every
    backend (:mod:`gatelab.backends._checks`); a batch of no sequences (``B = 0``) has
    nothing to compute and is left to the reference backend.
    """
    lengths = _checks.lstm_args(
        "fused.lstm_layer", spec, x, h0, c0, p, lengths, dtypes=_DTYPES, device="cpu"
    )
    if x.shape[1] == 0:
        return reference.lstm_layer(spec, x, h0, c0, p, None, need_trace)
    params = [p.get(name) for name in _PARAMS]
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, *params)
    )
    keep = 2 if grad else 1 if need_trace else 0  # steps kept: all for backward, trace only
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    flags = spec_flags(spec)
    if not keep:  # inference: no autograd node, the kernels keep one step of buffers
        res = extension().lstm_forward(x, h0, c0, params, lengths, flags, 0)
        return res[0], res[1], res[2], None
    out, h_n, c_n, acts, cells = _FusedLSTM.apply(
        flags,
        lengths,
        keep,
        x.contiguous(),
        h0.contiguous(),
        c0.contiguous(),
        *params,
    )
    if not need_trace:
        return out, h_n, c_n, None
    H = c0.shape[-1]
    blocks = dict(zip(spec.gates, acts.split(H, dim=-1)))  # views of (T, B, G*H)
    mask = step_mask(lengths, x.shape[0])

    def constant_one() -> Tensor:
        one = torch.ones_like(cells)
        return one if mask is None else torch.where(mask, one, 0.0)

    i = blocks.get("i") if spec.input_gate else constant_one()
    if spec.coupled:
        f = 1.0 - i if mask is None else torch.where(mask, 1.0 - i, 0.0)
    else:
        f = blocks.get("f") if spec.forget_gate else constant_one()
    o = blocks.get("o") if spec.output_gate else constant_one()
    tr = {"input_gate": i, "forget_gate": f, "candidate": blocks["g"], "output_gate": o}
    tr.update(cell=cells, hidden=out)
    return out, h_n, c_n, tr
