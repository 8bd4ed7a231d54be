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
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.data.corpus import (
    CHUNK_BYTES,
    CorpusScan,
    TokenIds,
    check_int,
    encode_corpus,
    scan_text_corpus,
)
from gatelab.errors import DataError
from gatelab.nn.equations import CellSpec
from gatelab.nn.layers import LSTM
from gatelab.nn.trace import GateTrace

__all__ = [
    "CharCorpus",
    "CharLM",
    "CharLMConfig",
    "CharVocab",
    "bits_per_char",
    "detach_state",
    "evaluate_loss",
    "sample_next",
    "shard_range",
    "split_point",
    "stream_batches",
]

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)

State = tuple[Tensor, ...]  # (h, c); the sLSTM's (h, c, n, m)


class CharVocab:
    """The characters of a text, in sorted order; id ``k`` is ``chars[k]``.

    Args:
        chars: the distinct characters (any order; they are sorted).
    """

    def __init__(self, chars: Sequence[str]) -> None:
        chars = sorted(set(chars))
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise DataError(f"a character vocabulary holds single characters; got {bad[:5]!r}")
        if not chars:
            raise DataError("a character vocabulary needs at least one character, got none")
        self.chars: list[str] = chars
        self.index: dict[str, int] = {c: k for k, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of every character in ``text``."""
        return cls(list(set(text)))

    @classmethod
    def from_scan(cls, scan: CorpusScan) -> CharVocab:
        """The vocabulary of a file scanned by :func:`gatelab.data.corpus.scan_text_corpus`.

        Equal to ``from_text`` of the file's text: both sort by code point.
        """
        return cls(scan.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"

    def encode(self, text: str, *, what: str = "text") -> Tensor:
        """``text`` -> ids ``(len(text),)`` int64; unseen characters raise DataError."""
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError:
            unseen: dict[str, int] = {}
            for pos, c in enumerate(text):
                if c not in self.index and c not in unseen:
                    unseen[c] = pos
            listed = ", ".join(f"{c!r} (first at position {p})" for c, p in unseen.items())
            raise DataError(
                f"{what} holds {len(unseen)} character(s) never seen in training: {listed}; "
                f"the model knows {len(self)} characters"
            ) from None

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Ids -> text."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.chars[k] for k in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chars", "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharVocab:
        if not isinstance(d, dict) or d.get("kind") != "chars" or "chars" not in d:
            raise DataError(
                f"not a character vocabulary: expected {{'kind': 'chars', ...}}, got {d!r:.80}"
            )
        return cls(d["chars"])


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
        return cls(
            vocab,
            config.embedding_dim,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            variant=config.variant,
            forget_bias=config.forget_bias,
            backend=config.backend,
        )

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
    logits = logits.detach().double()
    if temperature == 0:
        return int(logits.argmax())
    if top_k is not None and top_k < V:
        top = torch.topk(logits, top_k)
        probs = F.softmax(top.values / temperature, dim=-1)
        return int(top.indices[torch.multinomial(probs, 1, generator=generator)])
    probs = F.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


# --------------------------------------------------------------------------- batching

#: Ids read from disk at a time by :func:`stream_batches` (all streams together), so a
#: read costs one system call per stream every few windows.
_READ_IDS = 1 << 20


def shard_range(n_ids: int, batch_size: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """The ids ``[start, stop)`` that rank ``rank`` of ``world_size`` reads.

    The text is cut into ``G = batch_size * world_size`` streams of ``n = (N - 1) // G``
    ids each (the last ``(N - 1) % G`` ids are dropped); rank ``r`` holds streams
    ``r * batch_size .. (r + 1) * batch_size - 1``, the contiguous ids
    ``[r * batch_size * n, (r + 1) * batch_size * n + 1)`` (the ``+ 1`` is the last
    target). ``stream_batches(ids[start:stop], batch_size, T)`` then equals
    ``stream_batches(ids, batch_size, T, rank=rank, world_size=world_size)``, so a rank
    can read (and encode) only its shard.

    Args:
        n_ids: ``N``, the length of the whole text.
        batch_size: streams per rank (>= 1).
        rank, world_size: this rank (``0 <= rank < world_size``) and the number of ranks.

    Returns:
        ``(start, stop)``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    world_size = check_int("world_size", world_size, 1)
    rank = check_int("rank", rank, 0, world_size)
    G = batch_size * world_size
    n = (n_ids - 1) // G
    if n < 1:
        ranks = "" if world_size == 1 else f" ({world_size} ranks x {batch_size})"
        raise DataError(
            f"a text of {n_ids} characters is too short for {G} streams{ranks}; "
            f"need at least {G + 1}"
        )
    start = rank * batch_size * n
    return start, start + batch_size * n + 1


def stream_batches(
    ids: Tensor | TokenIds,
    batch_size: int,
    seq_len: int,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Cut a long text into ``batch_size`` contiguous streams and walk them in windows.

    Args:
        ids: the text as ids ``(N,)``: a tensor, or :class:`gatelab.data.corpus.TokenIds`
            on disk (then only ``batch_size`` windows are in memory at a time, read a
            block of windows per stream at once; the batches are the same).
        batch_size: ``B``, the number of parallel streams (of this rank); stream ``b`` is
            ``ids[b*n : (b+1)*n + 1]`` with ``n = (N - 1) // B`` (the last ``(N-1) % B``
            characters are dropped).
        seq_len: ``T``, the window (TBPTT length). The last window may be shorter.
        rank, world_size: read only this rank's shard (:func:`shard_range`): the text
            is cut into ``B * world_size`` streams and this rank walks streams
            ``rank * B .. (rank + 1) * B - 1``. The ranks' batches, stacked along the
            batch axis in rank order, are the batches of ``batch_size = B * world_size``.

    Yields:
        ``(x, y)`` each ``(B, T)``: inputs and next-character targets; window ``k + 1``
        continues window ``k`` of the same stream, so the LSTM state can be carried.
    """
    seq_len = check_int("seq_len", seq_len, 1)
    if not isinstance(ids, (Tensor, TokenIds)):
        raise TypeError(f"ids must be a Tensor or TokenIds, got {type(ids).__name__}")
    start, stop = shard_range(ids.numel(), batch_size, rank, world_size)
    B, n = batch_size, (stop - start - 1) // batch_size
    if isinstance(ids, TokenIds):
        yield from _disk_windows(ids, start, B, n, seq_len)
        return
    x = ids[start : start + n * B].view(B, n)  # (B, n)
    y = ids[start + 1 : start + n * B + 1].view(B, n)  # (B, n)
    for t in range(0, n, seq_len):
        yield x[:, t : t + seq_len], y[:, t : t + seq_len]


def _disk_windows(
    ids: TokenIds, start: int, B: int, n: int, T: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """The windows of :func:`stream_batches`, read a block of ``k`` windows at a time."""
    k = max(1, _READ_IDS // (B * (T + 1)))
    for t0 in range(0, n, k * T):
        span = min(k * T, n - t0)
        block = np.empty((B, span + 1), dtype=np.int64)  # (B, span + 1)
        for b in range(B):
            a = start + b * n + t0
            block[b] = ids.read(a, a + span + 1)
        block = torch.from_numpy(block)
        for t in range(0, span, T):
            L = min(T, span - t)
            yield block[:, t : t + L], block[:, t + 1 : t + 1 + L]


def split_point(n_chars: int, valid_fraction: float = 0.1) -> int:
    """Where a text of ``n_chars`` splits into ``1 - f`` training and ``f`` held-out text.

    Raises:
        ValueError: ``valid_fraction`` is not a number in (0, 1).
        DataError: the text is too short to leave 2 characters on each side.
    """
    if (
        isinstance(valid_fraction, bool)
        or not isinstance(valid_fraction, (int, float))
        or not 0.0 < valid_fraction < 1.0
    ):
        raise ValueError(
            f"valid_fraction={valid_fraction!r}; expected a number with 0 < valid_fraction < 1"
        )
    cut = round(n_chars * (1.0 - valid_fraction))
    if cut < 2 or n_chars - cut < 2:
        raise DataError(
            f"a text of {n_chars} characters is too short to split {1 - valid_fraction:.0%}"
            f"/{valid_fraction:.0%}; expected at least 2 characters on each side"
        )
    return cut


class CharCorpus:
    """A UTF-8 text file of any size as character ids, streamed from disk.

    Opening it reads the file once in chunks to count its characters (the vocabulary);
    :meth:`ids` then encodes a range of characters into a temporary id file
    (``uint8`` for up to 256 characters) read a window at a time by
    :func:`stream_batches`. Memory stays ``O(chunk + vocabulary)`` while reading and
    ``O(batch x window)`` while training, whatever the file's size; the disk holds one
    id per character of the ranges asked for.

    Args:
        path: the text file (the checks of :func:`gatelab.data.read_text_corpus`).
        vocab: the characters of a trained model; ``None`` takes the file's own
            (equal to ``CharVocab.from_text`` of its text).
        cache_dir: where the temporary id files go (default: the system's temporary
            folder; they are unlinked at once and freed with the last view).
        chunk_bytes: bytes read at a time.

    Attributes:
        scan: the :class:`gatelab.data.corpus.CorpusScan` of the file.
        vocab: the :class:`CharVocab` used to encode.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        vocab: CharVocab | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if vocab is not None and not isinstance(vocab, CharVocab):
            raise TypeError(f"vocab must be a CharVocab or None, got {type(vocab).__name__}")
        self.scan = scan_text_corpus(path, chunk_bytes=chunk_bytes)
        self.vocab = vocab if vocab is not None else CharVocab.from_scan(self.scan)
        self.cache_dir = cache_dir
        self.chunk_bytes = chunk_bytes

    def __len__(self) -> int:
        return self.scan.n_chars

    def __repr__(self) -> str:
        return f"CharCorpus('{self.scan.path}', {len(self)} characters, {self.vocab!r})"

    def ids(self, start: int = 0, stop: int | None = None, *, what: str = "text") -> TokenIds:
        """Characters ``start..stop-1`` as ids on disk; unseen characters raise DataError."""
        return encode_corpus(
            self.scan,
            self.vocab.index,
            start,
            stop,
            cache_dir=self.cache_dir,
            chunk_bytes=self.chunk_bytes,
            what=what,
        )

    def split(
        self, valid_fraction: float = 0.1, *, what: str = "text"
    ) -> tuple[TokenIds, TokenIds]:
        """``(train, valid)`` ids: the first ``1 - f`` and the last ``f`` of the text."""
        cut = split_point(len(self), valid_fraction)
        return self.ids(0, cut, what=what), self.ids(cut, None, what=what)


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
