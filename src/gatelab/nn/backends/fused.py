"""The fused backend: gatelab's C++ time loops for every cell spec, hand-written backward.

The kernels (``gatelab/nn/csrc/fused_lstm.cpp`` and the headers it includes: ``gemm.h``, the
GEMM library, ``lstm_step.h``, ``lstm_forward.h``, ``lstm_backward.h``, the kernels, ...;
``slstm.cpp``) are a torch C++ extension compiled on first use with
``torch.utils.cpp_extension.load`` and cached on disk (torch's extensions directory,
``TORCH_EXTENSIONS_DIR`` to move it); nothing is compiled when gatelab is imported. If the
build fails (no compiler, ...) :func:`can_run` says why and ``backend="auto"`` falls back to
the reference backend with one warning.

Forward: one GEMM for the input projection of all steps (and its layer norm), then per
step one GEMM ``h_{t-1} W_hh^T`` and one fused, vectorised pointwise pass that writes the
gate activations. Backward: per step one pointwise pass and one GEMM for ``dh_{t-1}``;
``dW_ih``, ``dW_hh``, ``dx``, the biases, peephole and layer-norm parameters as large GEMMs
and reductions after the loop. The gate activations kept for backward ARE the trace, so
tracing is free.

The GEMMs are the extension's own register-tiled kernel over a weight packed once per
sequence (``W_hh`` for the recurrence), with columns split by hidden units so that one
thread goes from its GEMM columns straight on to their pointwise pass, or the BLAS (MKL's
packed ``sgemm_compute`` / ``sgemm`` for the recurrent products, ``at::mm`` for the input
projection, ``dx`` and the weight gradients): which one is measured per product kind and
shape at its first use (``csrc/gemm_plan.h``: five timed calls of each, medians, the BLAS
only when under 0.9x the own kernel, the own recurrent product timed split and serial, the
faster counting) and then fixed for the process;
``extension().gemm_plans()`` lists the decisions, ``set_gemm_plan`` plants one and
``set_gemm_mode`` forces a kernel (4 own, 1-3 BLAS). The own kernel was tuned on a Zen 4
(AVX-512) where it beat MKL everywhere; the machine can change under the project (issue 16:
a Zen 3, AVX2 only), and a kernel tuned to one CPU must not lose on the next. Nothing is
measured at ``B = 1``: ``W_hh`` is read unpacked there (no packed copy: peak memory, issue
16) and the large products take the own kernel, or the unpacked loops below 32 rows, rather
than MKL, whose ``sgemm`` allocates ~330 KB of buffers per thread on first use. A weight
used once (``LSTMCell``) is multiplied unpacked or by plain BLAS. Steps are split over
threads (OpenMP, torch's thread count) where that measurably pays: on a machine whose cores other
processes share, a split step can wait a whole time slice for its other half. The choice is
measured once per shape (the first steps of its second call, the first running serial on
fresh memory: six timed serial steps and six split, each after an untimed one of its form,
medians compared; where the step can be fused, six more split as two phases, GEMM then
pointwise pass, and with two batch rows per thread six split over rows, each thread the
whole step of its rows; every form gives the same bits; a serial verdict is measured again
in the next call) and then fixed for the process, so
that a run's speed does not drift with it; ``extension().step_plans()`` lists the decisions,
``set_gemm_mode(0, 1, adaptive)`` overrides them (1 measured, 0 always split, 2 never,
3 always split as two phases, 4 always split over rows).
Only ``float32`` and ``float64`` on CPU run here; ``GATELAB_DISABLE_FUSED=1`` turns the
backend off (``auto`` then uses the reference backend).

Traces from this backend carry no gradient: the gate and cell tensors are outputs marked
non-differentiable (the reference backend's traces do carry gradients). ``hidden`` is the
layer output itself and does. The backward is marked ``once_differentiable``: a second
derivative through it (``create_graph=True``) raises rather than coming back as zero.

Validation: :func:`lstm_layer` checks its arguments with :mod:`gatelab.nn.backends._checks`
(``gatelab.LSTM``, which has checked them itself, calls :func:`_run_checked`), the one set of
rules every backend runs (shapes of every parameter against the gate count,
``I``, ``H``, ``P``; dtypes, devices, ``h0``/``c0``, ``lengths``; ``T = 0`` refused, ``B = 0``
answered without the kernels). The C++ functions repeat every check their raw-pointer
loops rely on with ``TORCH_CHECK``: they are the last line of defence, since
:func:`extension` hands them out to be called directly, and a failed check there is a
``RuntimeError``, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gatelab.nn.backends import _checks, reference
from gatelab.nn.backends._build_lock import build_lock
from gatelab.nn.equations import CellSpec
from gatelab.nn.masks import step_mask

__all__ = ["can_run", "extension", "lstm_layer", "slstm_layer", "spec_flags"]

logger = logging.getLogger(__name__)

_SOURCES = ("fused_lstm.cpp", "slstm.cpp")  # fused_lstm.cpp includes csrc/*.h (one unit)
# No -march=native, no -ffast-math: see fused_lstm.cpp. -fopenmp because ATen's
# parallel_for (OpenMP build) is a header template that runs serially without it; the
# extension then shares torch's libgomp (same soname, already loaded). Without OpenMP
# support the kernels still build, single-threaded. -fno-trapping-math (no change to any
# operation's result, unlike -ffast-math) lets GCC vectorise the float32 sigmoid / tanh
# loops (lstm_math.h): their selects over a division or a product that may trap blocked
# if-conversion, so GCC 12 kept them scalar, ~11 ns per element on a Zen 3 (issue 16).
_FLAG_SETS = (
    (["-O3", "-fno-trapping-math", "-fopenmp"], ["-fopenmp"]),
    (["-O3", "-fno-trapping-math"], []),
)
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


def _headers() -> list[str]:
    """The headers the sources include (``fused_lstm.cpp``'s parts: ``gemm.h``, ...)."""
    return sorted(path.name for path in _csrc().glob("*.h"))


def _build_name(cflags: list[str]) -> str:
    """The extension's name carries a hash of its sources and headers, their directory and
    the flags, so that builds of different versions (other checkouts, other torch) never overwrite
    one another: torch's build files name the sources' paths, so two checkouts sharing a
    build directory would recompile it each time they alternate."""
    digest = hashlib.sha256(str(_csrc()).encode())
    for name in (*_SOURCES, *_headers()):
        digest.update(name.encode())
        digest.update((_csrc() / name).read_bytes())
    digest.update(" ".join(cflags).encode())
    digest.update(torch.__version__.encode())
    return f"gatelab_fused_{digest.hexdigest()[:12]}"


def _build_folder(name: str) -> Path | None:
    """Where torch builds extension ``name``; None if its private helper has moved."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, False))
    except Exception:  # only logging and the stale-lock guard depend on it
        return None


def _is_built(name: str) -> bool:
    folder = _build_folder(name)
    return folder is not None and (folder / f"{name}.so").exists()


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
    with build_lock(_build_folder(name)):
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
    # a module without submodules (LSTM, LSTMCell): its own table, as named_parameters
    # would give it without the generator's ~10 us a call
    named = module._parameters.items() if not module._modules else module.named_parameters()
    for name, p in named:
        if p is None:
            continue
        if p.device.type != "cpu":
            return False, f"the fused kernels run on CPU; parameter {name} is on {p.device}"
        if p.dtype not in _DTYPES:
            return False, f"the fused kernels run float32 and float64; {name} is {p.dtype}"
    spec = getattr(module, "spec", None)
    if spec is not None and spec.normalizer and not hasattr(module, "num_layers"):
        return False, "the sLSTM cell (normalizer=True) runs as a gatelab.LSTM layer"
    if os.environ.get("GATELAB_DISABLE_FUSED"):
        return False, "the fused backend is disabled by GATELAB_DISABLE_FUSED"
    try:
        extension()
    except RuntimeError as err:
        return False, str(err)
    return True, ""


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


# -- torch.library custom ops: the same kernels, visible to torch.compile and torch.export.
# Eager runs keep the C++ autograd node (`lstm_autograd`; a custom op costs tens of
# microseconds a call, which a single-step LSTMCell would feel); graphs being traced
# (dynamo, export) call these ops, whose fake implementations give the output shapes
# without running anything.
_N_EXTRAS = 6  # y, hr, mean_ih, rstd_ih, xhat_hh, rstd_hh
# The ops' names carry the layout of what they return (version 2: the layer norm's
# recomputing backward, 11 saved entries). torch.compile's on-disk caches key on the
# graph, which names the op but not its outputs: an op that kept its name while its
# outputs changed read a stale compiled graph (IndexError) from a warm cache. Bump the
# number whenever an op's inputs or outputs (its schema, below) change.
_OPS = "gatelab::fused_lstm_{}_v2"


def _absent(ts) -> list[Tensor | None]:
    return [t if t.numel() else None for t in ts]


def _fill(ts, like: Tensor) -> list[Tensor]:
    """Undefined tensors (None from C++) as distinct empty ones: an op returns tensors
    only, none aliasing another."""
    return [t if t is not None else like.new_empty(0) for t in ts]


# The ops' schemas, written out (not inferred from annotations) so that what both ops
# take is declared once: the forward's inputs, which the backward takes again.
_OP_INPUTS = "Tensor x, Tensor h0, Tensor c0, Tensor[] params, Tensor? lengths, SymInt flags"


@torch.library.custom_op(
    _OPS.format("forward"), mutates_args=(), schema=f"({_OP_INPUTS}, SymInt keep) -> Tensor[]"
)
def _op_forward(x, h0, c0, params, lengths, flags, keep):
    """``[out, h_n, c_n, acts, cells, *extras]``; acts/cells empty when ``keep == 0``,
    extras empty unless ``keep == 2``. Absent parameters are empty tensors."""
    res = extension().lstm_forward(x, h0, c0, _absent(params), lengths, flags, keep)
    res = _fill(res, x)
    first_empty = 3 if keep == 0 else 5 if keep == 1 else len(res)
    res[first_empty:] = [x.new_empty(0) for _ in res[first_empty:]]
    return [t.contiguous() for t in res]


@_op_forward.register_fake
def _(x, h0, c0, params, lengths, flags, keep):
    T, B = x.shape[0], x.shape[1]
    GH, P = params[1].shape[0], params[1].shape[1]
    H = c0.shape[-1]
    e = x.new_empty
    out = [e(T, B, P), e(B, P), e(B, H)]
    if keep == 0:
        return out + [e(0) for _ in range(2 + _N_EXTRAS)]
    out += [e(T, B, GH), e(T, B, H)]
    if keep == 1:
        return out + [e(0) for _ in range(_N_EXTRAS)]
    proj = params[4].numel() > 0
    ln = bool(flags & (1 << 8))
    out += [e(T, B, H), e(T, B, H) if proj else e(0)]
    if ln:
        out += [e(T, B), e(T, B), e(T, B, GH), e(T, B)]
    else:
        out += [e(0) for _ in range(4)]
    return out


@torch.library.custom_op(
    _OPS.format("backward"),
    mutates_args=(),
    schema=f"(Tensor? d_out, Tensor? d_hn, Tensor? d_cn, {_OP_INPUTS}, Tensor[] saved, "
    "bool need_dx) -> Tensor[]",
)
def _op_backward(d_out, d_hn, d_cn, x, h0, c0, params, lengths, flags, saved, need_dx):
    g = extension().lstm_backward(
        d_out, d_hn, d_cn, x, h0, c0, _absent(params), lengths, flags, saved, need_dx
    )
    return [t.contiguous() for t in _fill(g, x)]


@_op_backward.register_fake
def _(d_out, d_hn, d_cn, x, h0, c0, params, lengths, flags, saved, need_dx):
    grads = [x.new_empty(x.shape) if need_dx else x.new_empty(0), h0.new_empty(h0.shape)]
    grads.append(c0.new_empty(c0.shape))
    return grads + [p.new_empty(p.shape) for p in params]


def _op_setup(ctx, inputs, output):
    x, h0, c0, params, lengths, flags, keep = inputs
    ctx.flags, ctx.lengths, ctx.n, ctx.keep = flags, lengths, len(params), keep
    ctx.save_for_backward(x, h0, c0, *params, *output)
    ctx.mark_non_differentiable(output[3], output[4], *output[5:])


def _op_grad(ctx, grads):
    if ctx.keep != 2:
        raise RuntimeError(
            f"{_OPS.format('forward')} ran with keep={ctx.keep}, which keeps no buffers "
            "for backward; call it with keep=2 when a gradient is needed"
        )
    d_out, d_hn, d_cn = grads[:3]
    saved = ctx.saved_tensors
    x, h0, c0 = saved[:3]
    params = list(saved[3 : 3 + ctx.n])
    res = list(saved[3 + ctx.n :])
    res[1], res[2] = x.new_empty(0), x.new_empty(0)
    g = _op_backward(d_out, d_hn, d_cn, x, h0, c0, params, ctx.lengths, ctx.flags, res, True)
    dparams = [d if p.numel() else None for d, p in zip(g[3:], params)]
    return g[0], g[1], g[2], dparams, None, None, None


_op_forward.register_autograd(_op_grad, setup_context=_op_setup)


@_checks.follows(reference.lstm_layer)
def lstm_layer(spec, x, h0, c0, p, lengths, need_trace):
    """One LSTM layer-direction; the contract (and signature) of ``reference.lstm_layer``.

    ``x (T, B, I)``, ``h0 (B, P)``, ``c0 (B, H)``; returns ``out (T, B, P)``, ``h_n``,
    ``c_n`` and, if asked, the trace ``{input_gate, forget_gate, candidate, output_gate,
    cell, hidden}`` of ``(T, B, H)`` tensors (``hidden`` ``(T, B, P)``), zero on padded
    steps. The gate and cell tensors carry no gradient. Arguments are checked as for every
    backend (:mod:`gatelab.nn.backends._checks`); a batch of no sequences (``B = 0``) has
    nothing to compute and is left to the reference backend.
    """
    if spec.normalizer:
        raise ValueError(f"lstm_layer runs the LSTM kernels; {spec} is an sLSTM: use slstm_layer")
    lengths = _checks.lstm_args(
        "fused.lstm_layer", spec, x, h0, c0, p, lengths, dtypes=_DTYPES, device="cpu"
    )
    return _run_checked(spec, x, h0, c0, p, lengths, need_trace)


def _run_checked(spec, x, h0, c0, p, lengths, need_trace):
    """:func:`lstm_layer` for arguments its caller has already checked to the same rules
    (``gatelab.LSTM.forward`` checks the input, every parameter against its configured
    shape, dtype and device, and the state; its lengths come from a ``PackedSequence``;
    ``LSTMCell.forward`` checks the same for its step). The checks cost ~30 us a call, which
    a short sequence feels; the kernels' own ``TORCH_CHECK`` s still stand behind them."""
    if x.shape[1] == 0:  # no sequences: nothing for the kernels to compute
        return reference.lstm_layer(spec, x, h0, c0, p, None, need_trace)
    params = [p.get(name) for name in _PARAMS]
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, *params)
    )
    keep = 2 if grad else 1 if need_trace else 0  # steps kept: all for backward, trace only
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    flags = spec_flags(spec)
    x, h0, c0 = x.contiguous(), h0.contiguous(), c0.contiguous()
    if torch.compiler.is_compiling():  # torch.compile / torch.export: the custom op
        given = [t if t is not None else x.new_empty(0) for t in params]
        out, h_n, c_n, acts, cells = _op_forward(x, h0, c0, given, lengths, flags, keep)[:5]
    elif keep < 2:  # no gradient: no autograd node (keep=0: one step of buffers, no trace)
        res = extension().lstm_forward(x, h0, c0, params, lengths, flags, keep)
        if not keep:
            return res[0], res[1], res[2], None
        out, h_n, c_n, acts, cells = res[:5]
    else:
        # the autograd node in C++ (fused_lstm.cpp, LstmNode): a Python Function cost ~150 us
        # a training step around the kernels, which a B = 1 sequence felt (issue 16)
        given = [t for t in params if t is not None]
        present = sum(1 << k for k, t in enumerate(params) if t is not None)
        ext = extension()
        out, h_n, c_n, acts, cells = ext.lstm_autograd(x, h0, c0, given, present, lengths, flags)
    if not need_trace:
        return out, h_n, c_n, None
    H = c0.shape[-1]
    blocks = dict(zip(spec.gates, acts.split(H, dim=-1)))  # views, one C++ call
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


# --------------------------------------------------------------------------- sLSTM
# The kernels are in csrc/slstm.cpp, registered as torch ops under the extension's name.
# The per-step GEMMs and the weight gradients run through ATen (MKL); the input projection
# and dx through oneDNN for float32 (torch's mkldnn::_linear_pointwise), at::mm for float64.

_SLSTM_ONE_STEP = 8  # slstm.cpp's kOneStep: inference, one step of scratch kept


def _slstm_ops():
    return getattr(torch.ops, extension().__name__)


def _slstm_flags(spec: CellSpec) -> int:
    return (spec.input_activation == "exp") | (spec.forget_activation == "exp") << 1


def _dense_recurrent(weight_hh: Tensor, num_heads: int) -> Tensor:
    """``(4H, d)`` head blocks -> the dense block-diagonal ``(4H, H)`` the kernel takes
    (differentiable: autograd folds ``dR`` back into the blocks). One head: as is."""
    if num_heads == 1:
        return weight_hh
    d = weight_hh.shape[1]
    blocks = weight_hh.reshape(4, num_heads, d, d)  # (4, K, d, d)
    return torch.cat([torch.block_diag(*blocks[g]) for g in range(4)])  # (4H, H)


class _FusedSLSTM(torch.autograd.Function):
    """``(x, h0, c0, n0, m0, W_ih, R, b_ih, b_hh) -> (out, h_n, c_n, n_n, m_n, acts,
    cells, norms, stabs)``; ``m_n`` and the trace carry no gradient (m is the stabilizer)."""

    @staticmethod
    def forward(ctx, flags, lengths, x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh):
        res = _slstm_ops().slstm_forward(x, h0, c0, n0, m0, w_ih, w_hh, b_ih, b_hh, lengths, flags)
        out, h_n, c_n, n_n, m_n, acts, cells, norms, stabs, dlog = res
        ctx.mark_non_differentiable(m_n, acts, cells, norms, stabs)
        ctx.set_materialize_grads(False)
        ctx.lengths, ctx.dlog = lengths, dlog
        ctx.save_for_backward(x, h0, c0, n0, w_ih, w_hh, out, acts, cells, norms)
        return out, h_n, c_n, n_n, m_n, acts, cells, norms, stabs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hn, d_cn, d_nn, *_):
        x, h0, c0, n0, w_ih, w_hh, out, acts, cells, norms = ctx.saved_tensors
        if d_out is None and d_hn is None and d_cn is None and d_nn is None:
            return (None,) * 11
        grads = [None if g is None else g.contiguous() for g in (d_out, d_hn, d_cn, d_nn)]
        need_dx = ctx.needs_input_grad[2]
        dx, dh0, dc0, dn0, dw_ih, dw_hh, db = _slstm_ops().slstm_backward(
            *grads,
            x,
            h0,
            c0,
            n0,
            w_ih,
            w_hh,
            out,
            acts,
            cells,
            norms,
            ctx.dlog,
            ctx.lengths,
            need_dx,
        )
        need = ctx.needs_input_grad
        return (
            None,
            None,
            dx if need_dx else None,
            dh0,
            dc0,
            dn0,
            None,
            dw_ih,
            dw_hh,
            db if need[9] else None,
            db if need[10] else None,
        )


@_checks.follows(reference.slstm_layer)
def slstm_layer(spec, x, state0, p, lengths, need_trace):
    """One sLSTM layer-direction; the contract (and signature) of ``reference.slstm_layer``.

    ``x (T, B, I)``, ``state0 = (h0, c0, n0, m0)`` each ``(B, H)``. With ``num_heads >
    1`` the kernel runs the dense block-diagonal ``R`` (K times the recurrent flops of the
    blocks; exact). The trace's gate and state tensors carry no gradient. A batch of no
    sequences (``B = 0``) is left to the reference backend, as for the LSTM.
    """
    if x.dim() == 3 and x.shape[1] == 0:
        return reference.slstm_layer(spec, x, state0, p, lengths, need_trace)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64).contiguous()
    w_hh = _dense_recurrent(p["weight_hh"], spec.num_heads).contiguous()
    args = (
        x.contiguous(),
        *(s.contiguous() for s in state0),
        p["weight_ih"].contiguous(),
        w_hh,
        p.get("bias_ih"),
        p.get("bias_hh"),
    )
    flags = _slstm_flags(spec)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if not grad and not need_trace:  # inference: no autograd node, no trace kept
        res = _slstm_ops().slstm_forward(*args, lengths, flags | _SLSTM_ONE_STEP)
        return res[0], tuple(res[1:5]), None
    out, h_n, c_n, n_n, m_n, acts, cells, norms, stabs = _FusedSLSTM.apply(flags, lengths, *args)
    if not need_trace:
        return out, (h_n, c_n, n_n, m_n), None
    i, f, z, o = acts.chunk(4, dim=-1)  # views of (T, B, 4H)
    tr = {"input_gate": i, "forget_gate": f, "candidate": z, "output_gate": o}
    tr.update(cell=cells, normalizer=norms, stabilizer=stabs, hidden=out)
    return out, (h_n, c_n, n_n, m_n), tr
