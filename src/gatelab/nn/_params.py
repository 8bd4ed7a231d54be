"""What the LSTM layers and ``LSTMCell`` share: argument checks, parameter shapes, the
initialisation and the choice of backend.

One copy of each rule, so that ``gatelab.LSTM(variant=...)`` and ``gatelab.LSTMCell(variant=
...)`` of the same configuration have the same parameters (names without the ``_l{k}``
suffix), the same init and pick their backend alike.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from gatelab.nn.equations import CellSpec, resolve_spec

BACKENDS = ("auto", "reference", "native", "fused")
_warned: set[tuple[str, str]] = set()


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int >= minimum``; TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {type(value).__name__}: {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name}={value}; expected an int >= {minimum}")
    return value


def check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def lstm_spec(variant: str | CellSpec, forget_bias: float | None, bias: bool) -> CellSpec:
    """The cell spec of ``variant`` with ``forget_bias``, which needs a bias to go into."""
    spec = resolve_spec(variant, forget_bias)
    if spec.forget_bias != 0.0 and not bias:
        raise ValueError(f"forget_bias={spec.forget_bias} needs bias=True; got bias=False")
    return spec


def check_native(spec: CellSpec, what: str) -> None:
    """``backend='native'`` runs torch's kernels: the standard cell only."""
    if not spec.is_standard:
        raise ValueError(
            f"backend='native' runs only the standard {what}, not {spec}; use "
            "backend='auto', 'fused' or 'reference'"
        )


def param_shapes(
    num_gates: int,
    hidden_size: int,
    input_size: int,
    bias: bool,
    proj_size: int = 0,
    spec: CellSpec | None = None,
) -> dict[str, tuple[int, ...]]:
    """One layer-direction's (or one cell's) parameter shapes by canonical name, in
    registration order (torch.nn's: ``weight_ih, weight_hh, bias_ih, bias_hh, weight_hr``,
    then the LSTM variants' ``weight_c{gate}`` and ``ln_*``).

    ``G*H = num_gates * hidden_size`` rows; ``weight_hh`` has ``proj_size or hidden_size``
    columns, or ``H / num_heads`` for the sLSTM's block-diagonal recurrence
    (:func:`gatelab.nn.equations.slstm_recurrent`).
    """
    H, gh = hidden_size, num_gates * hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "weight_ih": (gh, input_size),
        "weight_hh": (gh, proj_size if proj_size > 0 else H),
    }
    if bias:
        shapes.update(bias_ih=(gh,), bias_hh=(gh,))
    if proj_size > 0:
        shapes["weight_hr"] = (proj_size, H)
    if spec is None:
        return shapes
    if spec.num_heads > 1:
        shapes["weight_hh"] = (gh, H // spec.num_heads)
    for gate in spec.peephole_gates:
        shapes[f"weight_c{gate}"] = (H,)
    if spec.layernorm:
        shapes.update(ln_ih_weight=(gh,), ln_ih_bias=(gh,), ln_hh_weight=(gh,))
        shapes.update(ln_hh_bias=(gh,), ln_c_weight=(H,), ln_c_bias=(H,))
    return shapes


def init_parameters(
    named: Iterable[tuple[str, Tensor]],
    hidden_size: int,
    spec: CellSpec | None = None,
    *,
    draw_layernorm: bool = True,
) -> None:
    """torch.nn's init, in place: every weight ``~ U(-1/sqrt(H), 1/sqrt(H))``; layer-norm
    gains 1 and shifts 0; then ``spec.forget_bias`` added to the forget block of ``bias_ih``.

    ``draw_layernorm``: whether the layer-norm parameters draw their uniform values too
    before they are set (the layers do, in torch.nn's one loop over all parameters;
    ``LSTMCell`` never did): kept apart so that seeded programs draw what they drew.
    """
    H = hidden_size
    stdv = 1.0 / math.sqrt(H)
    with torch.no_grad():
        for name, p in named:
            layernorm = name.startswith("ln_")
            if draw_layernorm or not layernorm:
                nn.init.uniform_(p, -stdv, stdv)
            if layernorm:
                p.fill_(1.0 if "_weight" in name else 0.0)
            elif name.startswith("bias_ih") and spec is not None and spec.forget_bias != 0.0:
                f = spec.gates.index("f")
                p[f * H : (f + 1) * H] += spec.forget_bias


def fused_module():
    """The fused backend module, or the reason it cannot run."""
    try:
        from gatelab.nn.backends import fused
    except ImportError as err:  # the module is optional until its extension lands
        return None, f"the fused backend is not available ({err})"
    return fused, None


def choose_lstm_backend(
    module: nn.Module,
    owner: str,
    need_gates: bool,
    device: torch.device,
    *,
    native_fallback: bool,
    stacklevel: int,
) -> str:
    """-> ``"native"``, ``"fused"`` or ``"reference"`` for ``module`` (a gatelab ``LSTM``
    or ``LSTMCell``, named ``owner`` in messages) and its ``backend`` and ``spec``.

    An explicit backend runs or raises. ``auto``: the standard cell without gates runs on
    native (torch's kernel, differentiable twice); else fused where it can run; else, with
    ``native_fallback`` (the layer, which replays the standard trace from native outputs),
    native for the standard cell; else the reference backend with one warning per reason.
    """
    name, spec = module.backend, module.spec
    if name == "native":
        check_native(spec, "LSTM")
        return "native"
    if name == "reference":
        return "reference"
    if name == "auto" and spec.is_standard and not need_gates:
        return "native"  # decided before can_run, which may compile the fused kernels
    fused, why = fused_module()
    ok = False
    if fused is not None:
        ok, why = fused.can_run(module, device)
    if ok:
        return "fused"
    if name == "fused":
        raise RuntimeError(f"backend='fused' cannot run: {why}")
    if native_fallback and spec.is_standard:
        return "native"
    if (owner, why) not in _warned:
        _warned.add((owner, why))
        warnings.warn(
            f"gatelab.{owner}(backend='auto') runs variant {spec} on the reference backend "
            f"(a Python loop): {why}",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
    return "reference"
