"""gatelab: the LSTM you can see into, at full speed."""

from .analysis import cell_flow, gate_saturation, gradient_flow
from .cells import PRESETS, CellSpec, resolve_spec
from .estimators import Forecaster, SeriesClassifier, TextClassifier
from .layers import GRU, LSTM, RNN
from .trace import GateTrace, GRUTrace, RNNTrace

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "PRESETS",
    "RNN",
    "CellSpec",
    "Forecaster",
    "GRUTrace",
    "GateTrace",
    "RNNTrace",
    "SeriesClassifier",
    "TextClassifier",
    "__version__",
    "cell_flow",
    "gate_saturation",
    "gradient_flow",
    "resolve_spec",
]
