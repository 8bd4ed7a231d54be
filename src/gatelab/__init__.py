"""gatelab: the LSTM you can see into, at full speed."""

from .cell import LSTMCell
from .cells import PRESETS, CellSpec, resolve_spec
from .layers import GRU, LSTM, RNN
from .trace import GateTrace, GRUTrace, RNNTrace

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "PRESETS",
    "RNN",
    "CellSpec",
    "GRUTrace",
    "GateTrace",
    "LSTMCell",
    "RNNTrace",
    "__version__",
    "resolve_spec",
]
