"""The reference backend: a Python loop over the step equations; autograd does backward.

It is the oracle every other backend is checked against, and it runs every spec.

Every backend runs ONE layer in ONE direction over a time-major, prefix-masked batch; the
layer (:mod:`gatelab.nn.layers`) handles stacking, directions, reversal and dropout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gatelab.nn.backends import _checks
from gatelab.nn.equations import (
    CellSpec,
    gru_step,
    input_projection,
    lstm_input_projection,
    lstm_step,
    rnn_step,
    slstm_step,
)
from gatelab.nn.masks import mask_padding, step_mask

State = tuple[Tensor, ...]
# one step: (xw_t (B, G*H), state) -> (new state, out_t = new state[0], trace of this step)
Step = Callable[[Tensor, State], tuple[State, Tensor, dict[str, Tensor]]]


def lstm_stepper(spec: CellSpec, p: dict[str, Tensor | None]) -> Step:
    """The LSTM step over state ``(h, c)``; trace ``{input_gate, forget_gate, candidate,
    output_gate, cell}``."""

    def step(xw_t: Tensor, state: State):
        h, c, gates = lstm_step(spec, xw_t, state[0], state[1], p)
        tr = {"input_gate": gates.i, "forget_gate": gates.f, "candidate": gates.g}
        tr.update(output_gate=gates.o, cell=c)
        return (h, c), h, tr

    return step


def slstm_stepper(spec: CellSpec, p: dict[str, Tensor | None]) -> Step:
    """The sLSTM step over state ``(h, c, n, m)``; trace as :func:`slstm_layer`'s."""

    def step(xw_t: Tensor, state: State):
        new_state, tr = slstm_step(spec, xw_t, state, p)
        return new_state, new_state[0], tr

    return step


def gru_stepper(p: dict[str, Tensor | None], reset_after: bool = True) -> Step:
    """The GRU step over state ``(h,)``; trace ``{reset_gate, update_gate, candidate}``."""

    def step(xw_t: Tensor, state: State):
        h, tr = gru_step(xw_t, state[0], p, reset_after)
        return (h,), h, tr

    return step


def rnn_stepper(p: dict[str, Tensor | None], nonlinearity: str = "tanh") -> Step:
    """The Elman RNN step over state ``(h,)``; no trace of its own."""

    def step(xw_t: Tensor, state: State):
        h = rnn_step(xw_t, state[0], p, nonlinearity)
        return (h,), h, {}

    return step


def scan(
    step: Step,
    xw: Tensor,
    state: State,
    lengths: Tensor | None,
    need_trace: bool,
) -> tuple[Tensor, State, dict[str, Tensor]]:
    """Run ``step`` over ``xw`` ``(T, B, *)``.

    On padded steps (``t >= lengths[b]``) the state is carried unchanged and the output and
    trace are zero, so the final state is the state at each sequence's last real step.
    Returns ``out (T, B, H_out)``, the final state and the stacked trace ``{name: (T, B, H)}``.
    """
    mask = step_mask(lengths, xw.shape[0])
    outs: list[Tensor] = []
    traces: dict[str, list[Tensor]] = {}
    for t in range(xw.shape[0]):
        if mask is None:
            state, out, tr = step(xw[t], state)
        else:
            m = mask[t]  # (B, 1)
            # a padded row steps from a zero state: its (discarded) step must not turn a NaN
            # state into NaN weight gradients (0 * NaN), as it cannot in a PackedSequence
            new_state, out, tr = step(xw[t], tuple(torch.where(m, s, 0.0) for s in state))
            state = tuple(torch.where(m, n, s) for n, s in zip(new_state, state))
            out = torch.where(m, out, 0.0)
            if need_trace:
                tr = {k: torch.where(m, v, 0.0) for k, v in tr.items()}
        outs.append(out)
        if need_trace:
            for k, v in tr.items():
                traces.setdefault(k, []).append(v)
    stacked = {k: torch.stack(v) for k, v in traces.items()}
    return torch.stack(outs), state, stacked


def lstm_layer(
    spec: CellSpec,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    p: dict[str, Tensor | None],
    lengths: Tensor | None,
    need_trace: bool,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
    """One LSTM layer-direction. ``x (T, B, I)``, ``h0 (B, P)``, ``c0 (B, H)``.

    Returns ``out (T, B, P)``, ``h_n (B, P)``, ``c_n (B, H)`` and, if asked, the trace
    ``{input_gate, forget_gate, candidate, output_gate, cell, hidden}`` each ``(T, B, H)``
    (``hidden`` is ``(T, B, P)``). Raises ``ValueError`` / ``TypeError`` for arguments that
    disagree (:mod:`gatelab.nn.backends._checks`), and for ``T = 0``.
    """
    lengths = _checks.lstm_args("reference.lstm_layer", spec, x, h0, c0, p, lengths)
    x = mask_padding(x, lengths)
    xw = lstm_input_projection(spec, x, p)  # (T, B, G*H)
    out, (h_n, c_n), tr = scan(lstm_stepper(spec, p), xw, (h0, c0), lengths, need_trace)
    if not need_trace:
        return out, h_n, c_n, None
    tr["hidden"] = out
    return out, h_n, c_n, tr


def slstm_layer(
    spec: CellSpec,
    x: Tensor,
    state0: tuple[Tensor, Tensor, Tensor, Tensor],
    p: dict[str, Tensor | None],
    lengths: Tensor | None,
    need_trace: bool,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
    """One sLSTM layer-direction (``spec.normalizer``). ``x (T, B, I)``, ``state0 = (h0,
    c0, n0, m0)`` each ``(B, H)``.

    Returns ``out (T, B, H)``, the final ``(h, c, n, m)`` and, if asked, the trace
    ``{input_gate, forget_gate, candidate, output_gate, cell, normalizer, stabilizer,
    hidden}`` of ``(T, B, H)`` tensors (the gates are the stabilised ``i', f'``).
    """
    xw = lstm_input_projection(spec, x, p)  # (T, B, 4H)
    out, state_n, tr = scan(slstm_stepper(spec, p), xw, tuple(state0), lengths, need_trace)
    if not need_trace:
        return out, state_n, None
    tr["hidden"] = out
    return out, state_n, tr


def gru_layer(
    x: Tensor,
    h0: Tensor,
    p: dict[str, Tensor | None],
    lengths: Tensor | None,
    need_trace: bool,
    reset_after: bool = True,
) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
    """One GRU layer-direction; trace ``{reset_gate, update_gate, candidate, hidden}``.

    ``reset_after`` as :func:`gatelab.nn.equations.gru_step`.
    """
    lengths = _checks.gru_args("reference.gru_layer", x, h0, p, lengths)
    x = mask_padding(x, lengths)
    xw = input_projection(x, p)  # (T, B, 3H)
    out, (h_n,), tr = scan(gru_stepper(p, reset_after), xw, (h0,), lengths, need_trace)
    if need_trace:
        tr["hidden"] = out
    return out, h_n, tr if need_trace else None


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    p: dict[str, Tensor | None],
    lengths: Tensor | None,
    need_trace: bool,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
    """One Elman RNN layer-direction; trace ``{hidden}``."""
    lengths = _checks.rnn_args("reference.rnn_layer", x, h0, p, lengths, nonlinearity)
    x = mask_padding(x, lengths)
    xw = input_projection(x, p)  # (T, B, H)
    out, (h_n,), _ = scan(rnn_stepper(p, nonlinearity), xw, (h0,), lengths, False)
    return out, h_n, {"hidden": out} if need_trace else None
