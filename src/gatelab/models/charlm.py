"""A character language model: embedding -> :class:`gatelab.LSTM` -> Dense over characters.

Trained with truncated backpropagation through time (TBPTT) on one long text, *stateful*
in Keras's sense: the text is cut into ``B`` contiguous streams, batch ``k`` holds the
``k``-th window of ``T`` characters of every stream, and the LSTM state at the end of
batch ``k`` (detached from the graph) is the initial state of batch ``k + 1``. So the
model sees context far beyond ``T`` characters while gradients flow back at most ``T``
steps (Williams & Peng 1990; Karpathy's char-rnn, 2015).

Quality is reported in bits per character: the mean cross-entropy in nats divided by
``ln 2``. A model that predicts the uniform distribution over ``V`` characters scores
exactly ``log2(V)``.

Characters never seen in training are refused (:class:`gatelab.errors.DataError` naming
them and their first position): a character model has no sensible ``<unk>`` to predict.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.data.batching import stream_batches
from gatelab.data.corpus import TokenIds
from gatelab.data.vocab import CharVocab
from gatelab.errors import DataError
from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import LSTM
from gatelab.nn.trace import GateTrace

__all__ = [
    "CharLM",
    "CharLMConfig",
    "bits_per_char",
    "detach_state",
    "evaluate_loss",
    "sample_next",
]

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)

State = tuple[Tensor, ...]  # (h, c); the sLSTM's (h, c, n, m)


@dataclass
class CharLMConfig:
    """Everything that shapes a :class:`CharLM` (saved whole in a run folder)."""

    vocab_size: int
    embedding_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    variant: str = "standard"
    forget_bias: float | None = None
    backend: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CharLM(nn.Module):
    """Embedding -> ``gatelab.LSTM`` (any variant) -> Dense over the characters.

    Args:
        vocab: the characters (:class:`CharVocab`); ``V = len(vocab)``.
        embedding_dim: ``E``, the size of a character's embedding.
        hidden_size, num_layers, dropout: of the LSTM (``H``, ``L``; dropout between layers
            and on the LSTM output before the Dense layer).
        variant, forget_bias, backend: passed to :class:`gatelab.LSTM`.

    Shapes: ``forward(ids (B, T), state)`` -> ``logits (B, T, V)``, ``state = (h, c)``
    each ``(L, B, H)``.
    """

    def __init__(
        self,
        vocab: CharVocab,
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        *,
        variant: str | CellSpec = "standard",
        forget_bias: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(vocab, CharVocab):
            raise TypeError(f"vocab must be a CharVocab, got {type(vocab).__name__}")
        self.vocab = vocab
        V = len(vocab)
        self.config = CharLMConfig(
            V,
            embedding_dim,
            hidden_size,
            num_layers,
            float(dropout),
            variant if isinstance(variant, str) else str(variant),
            forget_bias,
            backend,
        )
        self.embedding = nn.Embedding(V, embedding_dim)
        self.lstm = LSTM(
            embedding_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            variant=variant,
            forget_bias=forget_bias,
            backend=backend,
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, V)

    @classmethod
    def from_config(cls, vocab: CharVocab, config: CharLMConfig | dict[str, Any]) -> CharLM:
        """Rebuild a model from a saved config (the vocabulary must match its size)."""
        if isinstance(config, dict):
            config = CharLMConfig(**config)
        if config.vocab_size != len(vocab):
            raise DataError(
                f"config says vocab_size={config.vocab_size} but the vocabulary holds "
                f"{len(vocab)} characters"
            )
        kw = config.to_dict()
        del kw["vocab_size"]  # the vocabulary's own
        return cls(vocab, **kw)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self.embedding(ids)  # (B, T, E)
        out, state = self.lstm(x, state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)

    # ----------------------------------------------------------------- generation

    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        """Continue ``prompt`` by ``length`` characters, one at a time.

        Args:
            prompt: non-empty text whose characters were all seen in training (others
                raise DataError naming them).
            length: how many characters to generate (>= 0).
            temperature: divides the logits; ``0`` picks the most probable character
                (argmax), and small positive values approach it.
            top_k: if given, only the ``top_k`` most probable characters can be drawn.
            generator: a ``torch.Generator`` for reproducible draws.

        Returns:
            The generated characters (without the prompt).
        """
        if not isinstance(prompt, str) or not prompt:
            raise DataError(f"prompt must be non-empty text, got {prompt!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length={length!r}; expected an int >= 0")
        ids = self.vocab.encode(prompt, what="the prompt")
        was_training = self.training
        self.eval()
        try:
            logits, state = self(ids[None, :])  # (1, P, V)
            last = logits[0, -1]  # (V,)
            out: list[int] = []
            for _ in range(length):
                k = sample_next(last, temperature, top_k, generator)
                out.append(k)
                logits, state = self(torch.tensor([[k]]), state)
                last = logits[0, -1]
        finally:
            self.train(was_training)
        return self.vocab.decode(out)

    # ----------------------------------------------------------------- insight

    @torch.no_grad()
    def trace(self, text: str) -> tuple[list[str], GateTrace]:
        """The gates of every layer while the model reads ``text``.

        Args:
            text: non-empty, only characters seen in training (others raise DataError).

        Returns:
            ``(chars, trace)``: the characters of ``text`` as a list of length ``T`` and an
            unbatched :class:`gatelab.GateTrace` whose tensors are ``(L, T, H)`` (step
            ``t`` is the state after reading ``chars[t]``).
        """
        if not isinstance(text, str) or not text:
            raise DataError(f"text to trace must be non-empty, got {text!r}")
        ids = self.vocab.encode(text, what="the text to trace")
        was_training = self.training
        self.eval()
        try:
            x = self.embedding(ids)  # (T, E), unbatched
            _, _, trace = self.lstm(x, return_trace=True)
        finally:
            self.train(was_training)
        return list(text), trace


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one id from ``logits (V,)`` at ``temperature``, among the ``top_k`` best.

    ``temperature == 0`` returns the argmax. Ties at the ``top_k`` boundary are broken by
    :func:`torch.topk`, so never more than ``top_k`` ids can be drawn.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}")
    if not temperature >= 0 or math.isinf(temperature):
        raise ValueError(f"temperature={temperature}; expected a finite number >= 0")
    V = logits.shape[-1]
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r}; expected None or an int >= 1")
    if temperature == 0 and top_k is not None:
        raise ValueError(
            f"top_k={top_k} with temperature=0: only random draws use it (temperature 0 "
            "picks the most likely character); drop top_k"
        )
    logits = logits.detach().double()
    if temperature == 0:
        return int(logits.argmax())
    if top_k is not None and top_k < V:
        top = torch.topk(logits, top_k)
        probs = F.softmax(top.values / temperature, dim=-1)
        return int(top.indices[torch.multinomial(probs, 1, generator=generator)])
    probs = F.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def detach_state(state: State | None) -> State | None:
    """Cut the graph between TBPTT windows; values are kept."""
    return None if state is None else tuple(s.detach() for s in state)


@torch.no_grad()
def evaluate_loss(
    model: CharLM, ids: Tensor | TokenIds, batch_size: int = 32, seq_len: int = 200
) -> float:
    """Mean cross-entropy in nats per character of ``model`` on ``ids (N,)``, stateful.

    The text is read as ``batch_size`` streams like in training (state carried), and every
    predicted character counts equally.
    """
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    try:
        B = max(1, min(batch_size, (ids.numel() - 1) // 2))
        for x, y in stream_batches(ids, B, seq_len):
            logits, state = model(x, state)  # (B, T, V)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += y.numel()
    finally:
        model.train(was_training)
    return total / count


def bits_per_char(
    model: CharLM, ids: Tensor | TokenIds, batch_size: int = 32, seq_len: int = 200
) -> float:
    """Bits per character of ``model`` on ``ids (N,)``: :func:`evaluate_loss` / ln 2."""
    return evaluate_loss(model, ids, batch_size, seq_len) / LN2
