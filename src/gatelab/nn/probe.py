"""One layer of a gatelab ``LSTM``, ``GRU`` or ``RNN`` rerun on the step equations with a
probe added to each output: how :mod:`gatelab.insight.analysis` measures gradient flow
without reaching into a backend.

The probe is a ``(T, B, P)`` tensor of zeros that requires grad; ``∂loss/∂probe[t]`` is
then ``∂loss/∂h_t``, the total derivative through every later step.
"""

from __future__ import annotations

from torch import Tensor

from gatelab.nn.backends import reference
from gatelab.nn.equations import input_projection, lstm_input_projection
from gatelab.nn.layers import GRU, LSTM, RNN
from gatelab.nn.masks import mask_padding

__all__ = ["probed_layer"]


def probed_layer(
    module: LSTM | GRU | RNN,
    layer: int,
    x: Tensor,
    probe: Tensor,
    lengths: Tensor | None = None,
) -> Tensor:
    """Layer ``layer`` (forward direction) of ``module`` over ``x (T, B, I)`` from a zero
    state, on the reference step equations (autograd: differentiable in ``x``, ``probe``
    and the parameters), with ``probe[t]`` added to ``h_t`` before the next step reads it.

    Args:
        module: a gatelab ``LSTM`` (any variant, the sLSTM too), ``GRU`` or ``RNN``.
        layer: which layer, ``0 <= layer < module.num_layers``.
        x: ``(T, B, I)`` time-major input of that layer (the layer below's output above 0).
        probe: ``(T, B, P)`` with ``P = module.output_size``.
        lengths: ``(B,)`` real lengths, or None: padded steps carry the state and output 0.
    Returns:
        ``out (T, B, P)``: the layer's outputs ``h_t`` (probe included), zero on padding.
    """
    if not isinstance(module, (LSTM, GRU, RNN)):
        raise TypeError(f"expected a gatelab LSTM, GRU or RNN, got {type(module).__name__}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}: {layer!r}")
    if not 0 <= layer < module.num_layers:
        raise ValueError(f"layer={layer}; expected 0 <= layer < num_layers={module.num_layers}")
    T, B = x.shape[:2]
    if tuple(probe.shape) != (T, B, module.output_size):
        raise ValueError(
            f"probe has shape {tuple(probe.shape)}; expected (T, B, P) = "
            f"{(T, B, module.output_size)}"
        )
    p = module.layer_parameters(layer)
    x = mask_padding(x, lengths)
    if isinstance(module, LSTM):
        step = (reference.slstm_stepper if module.spec.normalizer else reference.lstm_stepper)(
            module.spec, p
        )
        xw = lstm_input_projection(module.spec, x, p)  # (T, B, G*H)
    else:
        if isinstance(module, GRU):
            step = reference.gru_stepper(p, module.reset_after)
        else:
            step = reference.rnn_stepper(p, module.nonlinearity)
        xw = input_projection(x, p)  # (T, B, G*H)
    state0 = tuple(x.new_zeros(B, size) for size in module._state_sizes())
    probes = iter(probe.unbind(0))

    def probed(xw_t: Tensor, state: reference.State):
        new_state, h, _ = step(xw_t, state)
        h = h + next(probes)
        return (h, *new_state[1:]), h, {}

    out, _, _ = reference.scan(probed, xw, state0, lengths, False)
    return out
