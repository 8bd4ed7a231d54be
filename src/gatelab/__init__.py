"""gatelab: the LSTM you can see into, at full speed."""

from .cells import PRESETS, CellSpec, resolve_spec
from .charlm import CharLM, CharVocab
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
    "CharLM",
    "CharVocab",
    "GRUTrace",
    "GateTrace",
    "RNNTrace",
    "Seq2Seq",
    "WordVocab",
    "__version__",
    "resolve_spec",
]
