"""The torch modules a Keras model becomes, and what they share with the readers and writer.

:class:`Dense` (a ``Linear`` with Keras's activation), :class:`Recurrent` (a gatelab layer
with Keras's ``return_sequences`` / ``return_state`` / ``Bidirectional`` merge flags) and
:class:`KerasModel` (their ``Sequential``); the layer classes gatelab reads
(:data:`SUPPORTED_LAYERS`), Keras's activations by name, and the lazy ``h5py`` import.
Public through :mod:`gatelab.interop.keras`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.nn.layers import GRU, LSTM, RNN

SUPPORTED_LAYERS = (
    "InputLayer",
    "Embedding",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Bidirectional",
    "Dense",
    "Dropout",
)
RECURRENT = ("LSTM", "GRU", "SimpleRNN")
MERGE_MODES = ("concat", "sum", "mul", "ave", None)
WEIGHTS_FILE = "model.weights.h5"

# Keras 3's activation by its serialized name -> the same function in torch. Keras's
# defaults where the name carries no argument: leaky_relu's slope is 0.2, gelu is exact,
# softmax and log_softmax act on the last axis, hard_sigmoid is relu6(x + 3) / 6.
DENSE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "sigmoid": torch.sigmoid,
    "log_sigmoid": F.logsigmoid,
    "hard_sigmoid": F.hardsigmoid,
    "hard_silu": F.hardswish,
    "hard_swish": F.hardswish,
    "hard_tanh": F.hardtanh,
    "tanh": torch.tanh,
    "exponential": torch.exp,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
}

# LSTM `recurrent_activation` -> CellSpec.gate_activation; `activation` -> the spec's
# candidate and output activation (Keras uses one activation for both).
_LSTM_GATE_ACTIVATIONS = {"sigmoid": "sigmoid", "tanh": "tanh"}
_LSTM_ACTIVATIONS = {"tanh": "tanh", "linear": "identity"}


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "reading and writing Keras weight files needs h5py, which is not installed; "
            "install it with `pip install gatelab[interop]`"
        ) from err
    return h5py


# ---------------------------------------------------------------------------- modules


class Dense(nn.Linear):
    """A Keras ``Dense`` layer: ``activation(x W^T + b)`` on the last axis.

    Args:
        in_features, out_features, bias: as ``torch.nn.Linear``.
        activation: a Keras activation name, one of :data:`DENSE_ACTIVATIONS`.

    Shapes: ``(*, in_features) -> (*, out_features)``. ``weight`` is ``(O, I)``, Keras's
    ``kernel (I, O)`` transposed.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        device=None,
        dtype=None,
    ) -> None:
        if activation not in DENSE_ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r}; expected one of {', '.join(DENSE_ACTIVATIONS)}"
            )
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return DENSE_ACTIVATIONS[self.activation](super().forward(x))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}"


class Recurrent(nn.Module):
    """A Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` layer, or ``Bidirectional`` of one,
    running on a gatelab layer (``self.rnn``, one layer, ``batch_first=True``).

    Args:
        rnn: a one-layer :class:`gatelab.LSTM`, :class:`gatelab.GRU` or
            :class:`gatelab.RNN` with ``batch_first=True`` (``bidirectional=True`` for a
            Keras ``Bidirectional``).
        return_sequences, return_state, go_backwards: as the Keras layer.
        merge_mode: for a bidirectional ``rnn``, how Keras's ``Bidirectional`` merges the
            two directions: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or None (both
            returned).

    Shapes: input ``(B, T, I)``. Output ``(B, T, D*H)`` with ``return_sequences``, else
    ``(B, D*H)`` (``D = 2`` for ``concat``, else 1); with ``return_state`` Keras's list
    as a tuple: ``(output, h, c)`` for an LSTM, ``(output, h)`` otherwise, the forward
    direction's states before the backward's; ``merge_mode=None`` gives the two outputs
    in place of one.
    """

    def __init__(
        self,
        rnn: LSTM | GRU | RNN,
        *,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        merge_mode: str | None = "concat",
    ) -> None:
        super().__init__()
        if not isinstance(rnn, (LSTM, GRU, RNN)):
            raise TypeError(f"rnn must be a gatelab LSTM, GRU or RNN, got {type(rnn).__name__}")
        if rnn.num_layers != 1 or not rnn.batch_first or rnn.proj_size:
            raise ValueError(
                f"rnn={rnn}; expected one layer with batch_first=True and no projection, as a "
                "Keras recurrent layer"
            )
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode={merge_mode!r}; expected one of {MERGE_MODES}")
        if rnn.bidirectional and go_backwards:
            raise ValueError("go_backwards=True applies to a unidirectional rnn only")
        self.rnn = rnn
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.merge_mode = merge_mode

    def forward(self, x: Tensor):
        if not isinstance(x, Tensor) or x.dim() != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"input has shape {got}; expected (batch, time, features)")
        if self.go_backwards:
            x = x.flip(1)  # Keras returns the steps in the order it ran them
        out, state = self.rnn(x)  # out (B, T, D*H)
        states = state if isinstance(state, tuple) else (state,)  # each (D, B, H)
        if not self.rnn.bidirectional:
            y = out if self.return_sequences else states[0][0]
            return (y, *(s[0] for s in states)) if self.return_state else y
        H = self.rnn.hidden_size
        if self.return_sequences:
            fw, bw = out[..., :H], out[..., H:]  # the backward half is already time-aligned
        else:
            fw, bw = states[0][0], states[0][1]
        if self.merge_mode == "concat":
            merged: tuple[Tensor, ...] = (torch.cat([fw, bw], dim=-1),)
        elif self.merge_mode == "sum":
            merged = (fw + bw,)
        elif self.merge_mode == "mul":
            merged = (fw * bw,)
        elif self.merge_mode == "ave":
            merged = ((fw + bw) / 2,)
        else:
            merged = (fw, bw)
        if self.return_state:
            return (*merged, *(s[0] for s in states), *(s[1] for s in states))
        return merged[0] if len(merged) == 1 else merged

    def extra_repr(self) -> str:
        flags = ("return_sequences", "return_state", "go_backwards")
        s = ", ".join(f"{k}=True" for k in flags if getattr(self, k))
        if self.rnn.bidirectional:
            s += (", " if s else "") + f"merge_mode={self.merge_mode!r}"
        return s


class KerasModel(nn.Sequential):
    """A Keras ``Sequential`` (or single-chain functional) model as torch modules, in
    Keras's layer order and under Keras's layer names: :class:`Recurrent`,
    :class:`Dense`, ``torch.nn.Embedding``, ``torch.nn.Dropout``.

    ``forward`` takes what the Keras model takes, batch first (token ids ``(B, T)`` for a
    model that starts with an ``Embedding``, else ``(B, T, I)``), and returns what Keras
    returns.
    """
