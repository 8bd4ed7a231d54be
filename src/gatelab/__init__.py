"""gatelab: the LSTM you can see into, at full speed."""

from gatelab._version import __version__
from gatelab.data.corpus import CharCorpus
from gatelab.data.pair_corpus import PairCorpus
from gatelab.data.vocab import CharVocab, WordVocab
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier
from gatelab.insight.analysis import cell_flow, gate_saturation, gradient_flow
from gatelab.interop import from_keras, to_keras_weights, to_onnx
from gatelab.models.charlm import CharLM
from gatelab.models.seq2seq import Seq2Seq
from gatelab.nn.cell import LSTMCell
from gatelab.nn.equations import PRESETS, CellSpec, resolve_spec
from gatelab.nn.layers import GRU, LSTM, RNN
from gatelab.nn.trace import GateTrace, GRUTrace, RNNTrace

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
    "PairCorpus",
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
