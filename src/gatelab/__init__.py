"""gatelab: the LSTM you can see into, at full speed."""

from .analysis import cell_flow, gate_saturation, gradient_flow
from .cell import LSTMCell
from .cells import PRESETS, CellSpec, resolve_spec
from .charlm import CharCorpus, CharLM, CharVocab
from .estimators import Forecaster, SeriesClassifier, TextClassifier
from .interop import from_keras, to_keras_weights, to_onnx
from .layers import GRU, LSTM, RNN
from .seq2seq import Seq2Seq, WordVocab
from .trace import GateTrace, GRUTrace, RNNTrace

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "PRESETS",
    "RNN",
    "CellSpec",
    "CharCorpus",
    "CharLM",
    "CharVocab",
    "Forecaster",
    "GRUTrace",
    "GateTrace",
    "LSTMCell",
    "RNNTrace",
    "Seq2Seq",
    "SeriesClassifier",
    "TextClassifier",
    "WordVocab",
    "__version__",
    "cell_flow",
    "from_keras",
    "gate_saturation",
    "gradient_flow",
    "resolve_spec",
    "to_keras_weights",
    "to_onnx",
]
