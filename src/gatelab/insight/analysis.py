"""Looking at the gates: saturation, the cell's keep-vs-write flow, gradient flow.

Every function takes a trace (:class:`gatelab.GateTrace`, ``GRUTrace``, ``RNNTrace``) or a
gatelab layer plus its input, and counts only real steps (``trace.mask``) of packed or
length-masked batches.

- :func:`gate_saturation`: per layer, gate and unit, the fraction of steps a gate is
  left-saturated (< 0.1) or right-saturated (> 0.9), as Karpathy, Johnson & Fei-Fei 2015
  ("Visualizing and Understanding Recurrent Networks") measured them; means, histograms.
- :func:`cell_flow`: per step, what the cell keeps (``f_t ⊙ c_{t-1}``) and what it writes
  (``i_t ⊙ g_t``); ``c_t`` is their sum.
- :func:`gradient_flow`: ``‖∂loss/∂h_t‖`` and ``‖∂loss/∂x_t‖`` against ``t``: the
  vanishing gradient of the vanilla RNN that the LSTM's forget gate (near 1) cures.

Ablations (runs of variants x seeds and their statistics) are :mod:`gatelab.insight.ablation`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import GRU, LSTM, RNN
from gatelab.nn.masks import reverse_padded
from gatelab.nn.probe import probed_layer
from gatelab.nn.trace import GateTrace, GRUTrace, RNNTrace

__all__ = [
    "LSTM_GATES",
    "CellFlow",
    "GateSaturation",
    "GradientFlow",
    "cell_flow",
    "gate_saturation",
    "gradient_flow",
    "saturation_thresholds",
    "trace_of",
]

log = logging.getLogger(__name__)

LSTM_GATES = ("input_gate", "forget_gate", "output_gate")
GRU_GATES = ("reset_gate", "update_gate")
# Karpathy et al. 2015: a sigmoid gate is left-saturated below 0.1, right-saturated above 0.9.
SATURATION_FRACTION = 0.1

Trace = GateTrace | GRUTrace | RNNTrace


# --------------------------------------------------------------------------- traces


def trace_of(model: nn.Module, input: Tensor | PackedSequence, hx=None) -> Trace:
    """Run a gatelab layer without gradients and return its trace (detached)."""
    if not isinstance(model, (LSTM, GRU, RNN)):
        raise TypeError(
            f"expected a gatelab LSTM, GRU or RNN layer, got {type(model).__name__}; pass its "
            "trace instead (forward(..., return_trace=True))"
        )
    with torch.no_grad():
        _, _, trace = model(input, hx, return_trace=True)
    return trace.detach()


def _resolve(source, input) -> Trace:
    if isinstance(source, (GateTrace, GRUTrace, RNNTrace)):
        if input is not None:
            raise TypeError("input is given with a trace; pass either a trace or (model, input)")
        return source
    if input is None:
        raise TypeError(
            f"got a {type(source).__name__} without input; pass a trace or (model, input)"
        )
    return trace_of(source, input)


def _time_major(trace: Trace) -> tuple[dict[str, Tensor], Tensor]:
    """-> ``{name: (L*D, T, B, H)}`` and ``mask (T, B)`` whatever the trace's layout."""
    fields = dict(trace.items())
    mask = trace.mask
    if mask.dim() == 1:  # unbatched: (L*D, T, H), mask (T,)
        fields = {k: v.unsqueeze(2) for k, v in fields.items()}
        mask = mask.unsqueeze(1)
    elif trace.batch_first:
        fields = {k: v.transpose(1, 2) for k, v in fields.items()}
        mask = mask.transpose(0, 1)
    return fields, mask


def saturation_thresholds(spec: CellSpec | None = None) -> tuple[float, float]:
    """``(low, high)``: 10% of the gate's range from either end.

    ``(0.1, 0.9)`` for sigmoid gates (Karpathy et al. 2015); ``(-0.8, 0.8)`` for the
    ``tanh_gates`` experiment, whose gates lie in (-1, 1).
    """
    lo, hi = (-1.0, 1.0) if spec is not None and spec.gate_activation == "tanh" else (0.0, 1.0)
    span = SATURATION_FRACTION * (hi - lo)
    return lo + span, hi - span


# --------------------------------------------------------------------------- saturation


@dataclass
class GateSaturation:
    """Saturation statistics of one gate in one layer-direction.

    Attributes:
        layer, direction, gate: which gate (``"input_gate"``, ...).
        left, right: ``(H,)`` fraction of real steps with value ``< low`` / ``> high``.
        mean: ``(H,)`` mean value over real steps.
        hist: ``(bins,)`` counts over all real steps and units; ``edges`` ``(bins + 1,)``.
        steps: real steps counted per unit (summed over the batch).
        low, high: the thresholds used.
    """

    layer: int
    direction: int
    gate: str
    left: Tensor
    right: Tensor
    mean: Tensor
    hist: Tensor
    edges: Tensor
    steps: int
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, for JSON: every field, tensors as nested lists."""
        return {
            f.name: v.tolist() if isinstance(v, Tensor) else v
            for f in dataclasses.fields(self)
            for v in (getattr(self, f.name),)
        }


def gate_saturation(
    source: Trace | nn.Module,
    input: Tensor | PackedSequence | None = None,
    *,
    gates: Sequence[str] | None = None,
    low: float | None = None,
    high: float | None = None,
    bins: int = 20,
) -> list[GateSaturation]:
    """Per layer, direction, gate and unit: how often each gate is saturated.

    Args:
        source: a trace, or a gatelab layer (then ``input`` is run through it).
        gates: trace fields to measure; default ``input_gate, forget_gate, output_gate``
            for an LSTM, ``reset_gate, update_gate`` for a GRU.
        low, high: thresholds; default :func:`saturation_thresholds` of the layer's spec
            (``0.1, 0.9`` for sigmoid gates).
        bins: histogram bins over the gate's range ((0, 1), or (-1, 1) when ``low < 0``).
    Returns:
        One :class:`GateSaturation` per (layer, direction, gate), layer-major.
    """
    spec = source.spec if isinstance(source, LSTM) else None
    trace = _resolve(source, input)
    if gates is None:
        if isinstance(trace, GateTrace):
            gates = LSTM_GATES
        elif isinstance(trace, GRUTrace):
            gates = GRU_GATES
        else:
            raise ValueError("a vanilla RNN has no gates to saturate; expected an LSTM or GRU")
    names = trace.names()
    for gate in gates:
        if gate not in names:
            raise ValueError(f"gate {gate!r} is not in this trace; expected one of {names}")
    default_low, default_high = saturation_thresholds(spec)
    low = default_low if low is None else float(low)
    high = default_high if high is None else float(high)
    if not low < high:
        raise ValueError(f"low={low}, high={high}; expected low < high")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r}; expected an int >= 1")
    fields, mask = _time_major(trace)
    steps = int(mask.sum())
    if steps == 0:
        raise ValueError("the trace has no real step (its mask is all False)")
    lo_range = -1.0 if low < 0 else 0.0
    m = mask.unsqueeze(-1).to(fields[gates[0]].dtype)  # (T, B, 1)
    out = []
    for k in range(fields[gates[0]].shape[0]):
        layer, direction = divmod(k, trace.num_directions)
        for gate in gates:
            v = fields[gate][k].detach().float()  # (T, B, H)
            left = ((v < low) * m).sum((0, 1)) / steps  # (H,)
            right = ((v > high) * m).sum((0, 1)) / steps
            mean = (v * m).sum((0, 1)) / steps
            real = v[mask]  # (N, H)
            hist = torch.histc(real, bins=bins, min=lo_range, max=1.0)
            edges = torch.linspace(lo_range, 1.0, bins + 1)
            out.append(
                GateSaturation(
                    layer, direction, gate, left, right, mean, hist, edges, steps, low, high
                )
            )
    return out


# --------------------------------------------------------------------------- cell flow


@dataclass
class CellFlow:
    """What one LSTM layer-direction keeps and writes at each step, ``c_t = keep + write``.

    Attributes:
        keep: ``(T, B, H)`` ``f_t ⊙ c_{t-1}``, what survives of the old cell.
        write: ``(T, B, H)`` ``i_t ⊙ g_t``, what is written into it.
        mask: ``(T, B)`` bool, True on real steps (padded steps are zero).
    """

    keep: Tensor
    write: Tensor
    mask: Tensor

    def per_step(self) -> tuple[Tensor, Tensor]:
        """Mean ``|keep|`` and ``|write|`` per step over units and real sequences: ``(T,)``
        each; a step that no sequence reaches is 0."""
        m = self.mask.to(self.keep.dtype)  # (T, B)
        n = (m.sum(1) * self.keep.shape[-1]).clamp_min(1)  # (T,)
        keep = (self.keep.abs().sum(-1) * m).sum(1) / n
        write = (self.write.abs().sum(-1) * m).sum(1) / n
        return keep, write

    def to_dict(self, sequence: int | None = None) -> dict[str, Any]:
        """Per-step means; with ``sequence`` also that sequence's ``(T, H)`` values."""
        keep, write = self.per_step()
        d: dict[str, Any] = {"keep": keep.tolist(), "write": write.tolist()}
        if sequence is not None:
            d["keep_units"] = self.keep[:, sequence].tolist()
            d["write_units"] = self.write[:, sequence].tolist()
        return d


def cell_flow(
    source: GateTrace | LSTM,
    input: Tensor | PackedSequence | None = None,
    *,
    layer: int = 0,
    direction: int = 0,
    c0: Tensor | None = None,
) -> CellFlow:
    """The keep-vs-write split of ``c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t`` for one layer.

    Args:
        source: an LSTM trace, or a gatelab LSTM (then ``input`` is run through it).
        layer, direction: which layer-direction.
        c0: ``(B, H)`` initial cell state of that layer-direction; zeros if omitted.
    Returns:
        A :class:`CellFlow`, time-major.
    """
    trace = _resolve(source, input)
    if not isinstance(trace, GateTrace):
        raise TypeError(f"cell_flow needs an LSTM trace, got a {type(trace).__name__}")
    fields, mask = _time_major(trace)
    trace.layer(layer, direction)  # validates the indices
    k = layer * trace.num_directions + direction
    f, i, g = fields["forget_gate"][k], fields["input_gate"][k], fields["candidate"][k]
    cell = fields["cell"][k]  # (T, B, H)
    if c0 is None:
        c0 = cell.new_zeros(cell.shape[1:])
    elif tuple(c0.shape) != tuple(cell.shape[1:]):
        raise ValueError(f"c0 has shape {tuple(c0.shape)}; expected {tuple(cell.shape[1:])}")
    lengths = mask.sum(0)  # (B,)
    if direction == 0:
        c_prev = torch.cat([c0.unsqueeze(0), cell[:-1]])  # (T, B, H)
    else:  # the reverse direction reads time backwards within each sequence's length
        rev = reverse_padded(cell, lengths)
        c_prev = reverse_padded(torch.cat([c0.unsqueeze(0), rev[:-1]]), lengths)
    m = mask.unsqueeze(-1)
    keep = torch.where(m, f * c_prev, 0.0)
    write = torch.where(m, i * g, 0.0)
    return CellFlow(keep=keep.detach(), write=write.detach(), mask=mask)


# --------------------------------------------------------------------------- gradient flow


@dataclass
class GradientFlow:
    """How much gradient reaches each step.

    Attributes:
        hidden: ``(L, T)`` mean over sequences of ``‖∂loss/∂h_t‖₂`` per layer (the total
            derivative: every path from ``h_t`` to the loss, through later steps too).
        input: ``(T,)`` mean over sequences of ``‖∂loss/∂x_t‖₂``.
        loss: the loss value.
    Steps past a sequence's length do not count; a step no sequence reaches is 0.
    """

    hidden: Tensor
    input: Tensor
    loss: float

    def to_dict(self) -> dict[str, Any]:
        return {"hidden": self.hidden.tolist(), "input": self.input.tolist(), "loss": self.loss}


def gradient_flow(
    model: LSTM | GRU | RNN,
    input: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    lengths: Tensor | None = None,
) -> GradientFlow:
    """``‖∂loss/∂h_t‖`` and ``‖∂loss/∂x_t‖`` against ``t`` for a unidirectional layer.

    The layer is rerun on the step equations of :mod:`gatelab.nn.equations` with a zero probe
    added to each ``h_t`` (:func:`gatelab.nn.probe.probed_layer`); the gradient at the probe
    is ``∂loss/∂h_t``. Dropout is off.

    Args:
        model: a gatelab ``LSTM``, ``GRU`` or ``RNN`` (unidirectional, any layers).
        input: ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``).
        loss_fn: ``loss_fn(output, last) -> scalar`` with ``output (T, B, P)`` the top
            layer's outputs, time-major, and ``last (B, P)`` each sequence's output at its
            last real step.
        lengths: ``(B,)`` real lengths for a padded batch; all ``T`` if omitted.
    Returns:
        A :class:`GradientFlow`.
    """
    if not isinstance(model, (LSTM, GRU, RNN)):
        raise TypeError(f"expected a gatelab LSTM, GRU or RNN, got {type(model).__name__}")
    if model.bidirectional:
        raise ValueError("gradient_flow runs unidirectional layers; got bidirectional=True")
    if not isinstance(input, Tensor) or input.dim() != 3:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input has shape {shape}; expected a batched 3-D tensor")
    x = input.transpose(0, 1) if model.batch_first else input
    x = x.detach().clone().requires_grad_(True)  # (T, B, I)
    T, B = x.shape[:2]
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"lengths={lengths.tolist()}; expected {B} ints in [1, {T}]")
    probes, layer_in = [], x
    for layer in range(model.num_layers):
        probe = x.new_zeros(T, B, model.output_size, requires_grad=True)  # (T, B, P)
        probes.append(probe)
        layer_in = probed_layer(model, layer, layer_in, probe, lengths)
    if lengths is None:
        last = layer_in[-1]
    else:
        last = layer_in[lengths - 1, torch.arange(B, device=x.device)]  # (B, P)
    loss = loss_fn(layer_in, last)
    grads = torch.autograd.grad(loss, [x, *probes])
    mask = torch.ones(T, B, dtype=torch.bool, device=x.device)
    if lengths is not None:
        mask = torch.arange(T, device=x.device)[:, None] < lengths[None, :]
    m = mask.to(x.dtype)
    n = m.sum(1).clamp_min(1)  # (T,)

    def mean_norm(grad: Tensor) -> Tensor:  # (T, B, F) -> (T,)
        return (grad.norm(dim=-1) * m).sum(1).detach() / n

    hidden = torch.stack([mean_norm(g) for g in grads[1:]])  # (L, T)
    return GradientFlow(hidden=hidden, input=mean_norm(grads[0]), loss=float(loss.detach()))
