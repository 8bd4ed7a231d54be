"""Argument checks for every backend function: the one place the Python side validates.

``reference``, ``native`` and ``fused`` call :func:`lstm_args`, :func:`gru_args` or
:func:`rnn_args` before they compute, so that a bad shape, dtype, device or ``lengths``
gets the same ``ValueError`` / ``TypeError`` whichever backend runs, naming the argument,
what was expected and what came. The layers (:mod:`gatelab.nn.layers`, :mod:`gatelab.nn.cell`)
check their input forms and ``hx`` themselves, and use :func:`empty_sequence` (``T = 0``)
and :func:`parameters` (each parameter's configured shape, dtype and device) from here.
The C++ kernels keep their own checks as the last line of defence: they are reachable
directly through ``backends.fused.extension()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor

from gatelab.errors import EmptySequenceError
from gatelab.nn.equations import CellSpec

__all__ = [
    "empty_sequence",
    "follows",
    "gru_args",
    "lengths_arg",
    "lstm_args",
    "parameters",
    "rnn_args",
    "sequence",
    "state",
]

_F = TypeVar("_F", bound=Callable[..., Any])

_LN = ("ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")
_PEEP = ("weight_ci", "weight_cf", "weight_co")


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _tensor(where: str, name: str, t, *, dims: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a Tensor, got {type(t).__name__}")
    if dims is not None and t.dim() != dims:
        raise ValueError(f"{where}: {name} must be {dims}-D, got shape {_shape(t)} ({t.dim()}-D)")
    return t


def sequence(
    where: str, x, dtypes: Iterable[torch.dtype] | None = None, device: str | None = None
) -> Tensor:
    """``x (T, B, I)``: a floating-point 3-D tensor with ``T >= 1`` (torch.nn refuses an
    empty sequence too); ``B = 0`` is allowed, as in torch.nn. ``dtypes``/``device``
    restrict what a backend can run."""
    x = _tensor(where, "x", x, dims=3)
    if not x.is_floating_point():
        raise TypeError(
            f"{where}: x has dtype {x.dtype}; expected a floating-point tensor (embed integer "
            "token ids first, e.g. with torch.nn.Embedding)"
        )
    dtypes = tuple(dtypes) if dtypes is not None else None
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{where}: x has dtype {x.dtype}; this backend runs {dtypes}")
    if device is not None and x.device.type != device:
        raise ValueError(f"{where}: x is on {x.device}; this backend runs on {device}")
    empty_sequence(where, x.shape[0])
    if x.shape[2] < 1:
        raise ValueError(f"{where}: x has shape {_shape(x)}; expected at least 1 feature")
    return x


def empty_sequence(where: str, T: int) -> None:
    """Refuse ``T = 0`` as torch.nn does (``RuntimeError`` there; here an
    :class:`EmptySequenceError`, which is both a ``ValueError`` and a ``RuntimeError``)."""
    if T == 0:
        raise EmptySequenceError(
            f"{where}: expected sequence length to be larger than 0, got an input with T=0 "
            "steps (torch.nn refuses it too)"
        )


def state(where: str, name: str, t, want: tuple[int, ...], like: Tensor, hint: str = "") -> Tensor:
    """A state tensor (``h0``, ``c0``): shape ``want`` (``hint`` names its dimensions),
    ``like``'s dtype and device."""
    t = _tensor(where, name, t)
    if _shape(t) != want:
        hint = f" {hint}" if hint else ""
        raise ValueError(f"{where}: {name} has shape {_shape(t)}; expected {want}{hint}")
    _same_kind(where, name, t, like)
    return t


def _same_kind(where: str, name: str, t: Tensor, like: Tensor) -> None:
    if t.dtype != like.dtype:
        raise TypeError(f"{where}: {name} has dtype {t.dtype}; expected {like.dtype} like x")
    if t.device != like.device:
        raise ValueError(f"{where}: {name} is on {t.device}; expected {like.device} like x")


def parameters(
    where: str,
    p: Mapping[str, Tensor | None],
    want: Mapping[str, tuple[int, ...]],
    like: Tensor,
    absent: Iterable[str] = (),
) -> None:
    """Each parameter in ``want`` is present with that shape and ``like``'s dtype and
    device; each name in ``absent`` is missing or None (a parameter this cell has no use
    for means the parameters belong to another configuration)."""
    if not isinstance(p, Mapping):
        raise TypeError(f"{where}: p must be a dict of parameters, got {type(p).__name__}")
    dtype, device = like.dtype, like.device
    for name, shape in want.items():
        t = p.get(name)
        if t is None:
            raise ValueError(f"{where}: parameter {name} is missing; expected shape {shape}")
        # the common case first, in as few operations as it takes (this runs every forward)
        if isinstance(t, Tensor) and t.shape == shape and t.dtype == dtype and t.device == device:
            continue
        t = _tensor(where, f"parameter {name}", t)
        if _shape(t) != shape:
            raise ValueError(f"{where}: parameter {name} has shape {_shape(t)}; expected {shape}")
        _same_kind(where, f"parameter {name}", t, like)
    for name in absent:
        if p.get(name) is not None:
            raise ValueError(
                f"{where}: parameter {name} is given but this cell has no use for it; "
                "expected it absent (parameters of another configuration?)"
            )


def lengths_arg(where: str, lengths, B: int, T: int, x: Tensor) -> Tensor | None:
    """``lengths (B,)``: integers in ``1..T``, on the CPU or ``x``'s device. Returns None
    when there is no sequence to mask (``lengths`` None or ``B = 0``)."""
    if lengths is None:
        return None
    lengths = _tensor(where, "lengths", lengths, dims=1)
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"{where}: lengths has dtype {lengths.dtype}; expected an integer dtype")
    if lengths.device.type != "cpu" and lengths.device != x.device:
        raise ValueError(f"{where}: lengths is on {lengths.device}; expected the CPU or {x.device}")
    if lengths.shape[0] != B:
        raise ValueError(
            f"{where}: lengths has {lengths.shape[0]} entries; expected one per sequence, B={B}"
        )
    if B == 0:
        return None
    lo, hi = (int(v) for v in torch.aminmax(lengths))
    if lo < 1 or hi > T:
        raise ValueError(
            f"{where}: lengths holds values in [{lo}, {hi}]; expected each in 1..T={T}"
        )
    return lengths


def _hidden(where: str, name: str, t, B: int, like: Tensor) -> Tensor:
    """A 2-D ``(B, features)`` state whose feature count the weights are checked against."""
    t = _tensor(where, name, t, dims=2)
    if t.shape[0] != B or t.shape[1] < 1:
        raise ValueError(
            f"{where}: {name} has shape {_shape(t)}; expected ({B}, features >= 1) with "
            f"B={B} from x"
        )
    _same_kind(where, name, t, like)
    return t


def lstm_args(
    where: str,
    spec: CellSpec,
    x,
    h0,
    c0,
    p: Mapping[str, Tensor | None],
    lengths,
    *,
    dtypes: Iterable[torch.dtype] | None = None,
    device: str | None = None,
) -> Tensor | None:
    """Check one LSTM layer-direction's arguments (``reference.lstm_layer``'s contract).

    ``x (T, B, I)``, ``c0 (B, H)``, ``h0 (B, P)`` with ``P`` = ``weight_hr``'s rows or
    ``H``; ``weight_ih (G*H, I)``, ``weight_hh (G*H, P)``, biases ``(G*H,)`` if given,
    ``weight_hr (P, H)``, the spec's peephole weights ``(H,)`` and layer-norm parameters
    ``(G*H,)`` / ``(H,)``, with ``G = spec.num_gates``. Returns ``lengths`` to use.
    """
    if not isinstance(spec, CellSpec):
        raise TypeError(f"{where}: spec must be a CellSpec, got {type(spec).__name__}")
    x = sequence(where, x, dtypes, device)
    T, B, I = x.shape
    c0 = _hidden(where, "c0", c0, B, x)
    H, G = c0.shape[1], spec.num_gates
    w_hr = p.get("weight_hr") if isinstance(p, Mapping) else None
    P = _tensor(where, "parameter weight_hr", w_hr, dims=2).shape[0] if w_hr is not None else H
    state(where, "h0", h0, (B, P), x)
    want = {"weight_ih": (G * H, I), "weight_hh": (G * H, P)}
    want.update({k: (G * H,) for k in ("bias_ih", "bias_hh") if p.get(k) is not None})
    if w_hr is not None:
        want["weight_hr"] = (P, H)
    peep = {f"weight_c{g}" for g in spec.peephole_gates}
    want.update({k: (H,) for k in sorted(peep)})
    if spec.layernorm:
        want.update({k: (G * H,) if "_c_" not in k else (H,) for k in _LN})
    absent = [k for k in _PEEP if k not in peep] + ([] if spec.layernorm else list(_LN))
    parameters(where, p, want, x, absent)
    return lengths_arg(where, lengths, B, T, x)


def gru_args(where: str, x, h0, p, lengths) -> Tensor | None:
    """Check one GRU layer-direction's arguments: ``x (T, B, I)``, ``h0 (B, H)``,
    ``weight_ih (3H, I)``, ``weight_hh (3H, H)``, biases ``(3H,)`` if given."""
    return _plain(where, 3, x, h0, p, lengths)


def rnn_args(where: str, x, h0, p, lengths, nonlinearity: str = "tanh") -> Tensor | None:
    """Check one Elman RNN layer-direction's arguments (as :func:`gru_args` with ``H``
    rows per weight) and ``nonlinearity`` (``"tanh"`` or ``"relu"``)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{where}: nonlinearity={nonlinearity!r}; expected 'tanh' or 'relu'")
    return _plain(where, 1, x, h0, p, lengths)


def _plain(where: str, G: int, x, h0, p, lengths) -> Tensor | None:
    x = sequence(where, x)
    T, B, I = x.shape
    H = _hidden(where, "h0", h0, B, x).shape[1]
    if not isinstance(p, Mapping):
        raise TypeError(f"{where}: p must be a dict of parameters, got {type(p).__name__}")
    want = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
    want.update({k: (G * H,) for k in ("bias_ih", "bias_hh") if p.get(k) is not None})
    parameters(where, p, want, x, absent=("weight_hr", *_PEEP, *_LN))
    return lengths_arg(where, lengths, B, T, x)


def follows(contract: _F) -> Callable[[Callable[..., Any]], _F]:
    """``@follows(reference.lstm_layer)``: the backend contract, written once.

    The decorated function (another backend's entry point) takes ``contract``'s annotated
    signature, which ``help``, ``inspect.signature`` and type checkers then show, after a
    check at import that its parameters are the contract's (names, order, kinds and
    defaults): a backend that drifts from the contract fails to import. The function
    itself is returned, not a wrapper, so a call costs what it did.
    """
    want = inspect.signature(contract)

    def adopt(fn: Callable[..., Any]) -> _F:
        got = inspect.signature(fn)
        if [(q.name, q.kind, q.default) for q in got.parameters.values()] != [
            (q.name, q.kind, q.default) for q in want.parameters.values()
        ]:
            raise TypeError(
                f"{fn.__module__}.{fn.__qualname__}{got} does not follow the backend "
                f"contract {contract.__module__}.{contract.__qualname__}{want}"
            )
        fn.__signature__ = want  # type: ignore[attr-defined]
        fn.__annotations__ = dict(contract.__annotations__)
        return fn  # type: ignore[return-value]

    return adopt
