"""The native backend: PyTorch's own fused recurrent kernels (oneDNN on CPU, cuDNN on GPU).

It runs the standard LSTM, the GRU and the tanh/ReLU RNN. Without a trace the whole stack
is one call, exactly as ``torch.nn.LSTM`` makes it. With a trace, each layer-direction is
run natively and its gates are *replayed*: given the outputs ``h_t`` of all steps, the
gate pre-activations of all steps come from one GEMM each for ``x`` and ``h_{t-1}``; only
the cell state needs a (cheap, element-wise) scan.
"""

from __future__ import annotations

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from gatelab.nn.backends import _checks
from gatelab.nn.equations import gru_step, input_projection, lstm_input_projection, lstm_step
from gatelab.nn.masks import step_mask

_VF_FN = {"lstm": _VF.lstm, "gru": _VF.gru, "rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu}


def run_stack(
    mode: str,
    input: Tensor | PackedSequence,
    hx: Tensor | tuple[Tensor, Tensor],
    flat_weights: list[Tensor],
    bias: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    batch_first: bool,
):
    """The whole stack in one framework call, with torch.nn's argument conventions.

    ``input`` is batched (``(T, B, I)``, or ``(B, T, I)`` with ``batch_first``) or packed;
    ``hx`` is in the caller's batch order. Returns ``(output, h_n)`` or, for the LSTM,
    ``(output, (h_n, c_n))``, like torch.nn.
    """
    fn = _VF_FN[mode]
    packed = isinstance(input, PackedSequence)
    if packed and input.sorted_indices is not None:
        hx = _permute(hx, input.sorted_indices)
    args = (flat_weights, bias, num_layers, dropout, training, bidirectional)
    if packed:
        result = fn(input.data, input.batch_sizes, hx, *args)
    else:
        result = fn(input, hx, *args, batch_first)
    output, state = result[0], (result[1:] if mode == "lstm" else result[1])
    if mode == "lstm":
        state = (state[0], state[1])
    if packed:
        output = PackedSequence(
            output, input.batch_sizes, input.sorted_indices, input.unsorted_indices
        )
        if input.unsorted_indices is not None:
            state = _permute(state, input.unsorted_indices)
    return output, state


def _permute(hx, index: Tensor):
    if isinstance(hx, tuple):
        return tuple(h.index_select(1, index) for h in hx)
    return hx.index_select(1, index)


def _run_single(mode, x, hx, weights, lengths):
    """One layer, one direction, time-major ``x (T, B, I)``; prefix-masked by ``lengths``."""
    bias = len(weights) >= 4
    if lengths is None:
        return run_stack(mode, x, hx, weights, bias, 1, 0.0, False, False, False)
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    out, state = run_stack(mode, packed, hx, weights, bias, 1, 0.0, False, False, False)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    return out, state


def _weights(p: dict[str, Tensor | None]) -> list[Tensor]:
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    return [p[k] for k in names if p.get(k) is not None]


def _previous(out: Tensor, h0: Tensor) -> Tensor:
    """``h_{t-1}`` for every t: ``(T, B, P)``."""
    return torch.cat([h0.unsqueeze(0), out[:-1]], dim=0)


def _zero_padded(tr: dict[str, Tensor], lengths: Tensor | None) -> dict[str, Tensor]:
    mask = step_mask(lengths, next(iter(tr.values())).shape[0])
    if mask is None:
        return tr
    return {k: torch.where(mask, v, 0.0) for k, v in tr.items()}


def lstm_layer(spec, x, h0, c0, p, lengths, need_trace):
    """One standard-LSTM layer-direction; same contract as ``reference.lstm_layer``."""
    lengths = _checks.lstm_args("native.lstm_layer", spec, x, h0, c0, p, lengths)
    if not spec.is_standard:
        raise ValueError(f"the native backend runs only the standard LSTM; got {spec}")
    out, (h_n, c_n) = _run_single("lstm", x, (h0[None], c0[None]), _weights(p), lengths)
    h_n, c_n = h_n[0], c_n[0]
    if not need_trace:
        return out, h_n, c_n, None
    # The standard gates do not depend on c_{t-1}: one batched step over all T gives them.
    xw = lstm_input_projection(spec, x, p)  # (T, B, 4H)
    c_any = xw.new_zeros(*xw.shape[:2], c0.shape[-1])  # unused by the standard gates
    _, _, gates = lstm_step(spec, xw, _previous(out, h0), c_any, p)
    ig = gates.i * gates.g
    cells, c = [], c0
    for t in range(x.shape[0]):
        c = gates.f[t] * c + ig[t]
        cells.append(c)
    tr = {"input_gate": gates.i, "forget_gate": gates.f, "candidate": gates.g}
    tr.update(output_gate=gates.o, cell=torch.stack(cells), hidden=out)
    return out, h_n, c_n, _zero_padded(tr, lengths)


def gru_layer(x, h0, p, lengths, need_trace):
    """One GRU layer-direction; same contract as ``reference.gru_layer``."""
    lengths = _checks.gru_args("native.gru_layer", x, h0, p, lengths)
    out, h_n = _run_single("gru", x, h0[None], _weights(p), lengths)
    if not need_trace:
        return out, h_n[0], None
    xw = input_projection(x, p)  # (T, B, 3H)
    _, tr = gru_step(xw, _previous(out, h0), p)  # all T at once: gates need only h_{t-1}
    tr["hidden"] = out
    return out, h_n[0], _zero_padded(tr, lengths)


def rnn_layer(x, h0, p, lengths, need_trace, nonlinearity="tanh"):
    """One Elman RNN layer-direction; same contract as ``reference.rnn_layer``."""
    lengths = _checks.rnn_args("native.rnn_layer", x, h0, p, lengths, nonlinearity)
    out, h_n = _run_single(f"rnn_{nonlinearity}", x, h0[None], _weights(p), lengths)
    return out, h_n[0], {"hidden": out} if need_trace else None
