"""Batching: padded id sequences, translation pair batches, and stateful text streams.

* :func:`pad_sequences` pads a list of id sequences into ``(B, T)`` with their lengths
  (the text classifier's batches).
* :func:`collate_pairs` / :func:`pair_batches` pad ``(source, target)`` id pairs with
  the translator's specials, in batches of similar source length.
* :func:`stream_batches` cuts one long text into ``B`` contiguous streams walked in
  windows of ``T`` (truncated backpropagation through time, the char LM's), from a tensor
  or from ids on disk (:class:`gatelab.data.corpus.TokenIds`); :func:`stream_shard` (of a
  global batch) and :func:`shard_range` (of a batch per rank) are the part one rank of a
  data-parallel run reads.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from gatelab.data.corpus import CharCorpus, TokenIds, check_int, split_point
from gatelab.data.vocab import BOS_ID, EOS_ID, PAD_ID
from gatelab.errors import DataError

__all__ = [
    "PairBatches",
    "collate_pairs",
    "corpus_shard",
    "pad_sequences",
    "pair_batches",
    "pair_lengths",
    "shard_range",
    "stream_batches",
    "stream_shard",
]


# --------------------------------------------------------------------------- padding


def pad_sequences(
    seqs: Sequence[Sequence[int]] | Sequence[torch.Tensor],
    pad_value: int = 0,
    max_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad integer sequences into a batch.

    Args:
        seqs: B sequences of token ids, as lists of ints or 1-D integer tensors.
        pad_value: the id written after each sequence's end.
        max_len: if given (>= 1), sequences longer than this are truncated from the end
            (their first ``max_len`` ids are kept).

    Returns:
        ``(padded, lengths)``: ``padded`` a LongTensor ``(B, T)`` with
        ``T = max(lengths)``, ``padded[b, :lengths[b]]`` the (truncated) sequence ``b`` and
        the rest ``pad_value``; ``lengths`` a LongTensor ``(B,)``.

    Raises:
        DataError: no sequences, an empty sequence (its index is named: the model layers
            cannot take length 0, so drop it or give it a token, rather than pad it), a
            non-integer value, or a tensor that is not 1-D.
    """
    if max_len is not None and (
        isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1
    ):
        raise DataError(f"max_len must be an integer >= 1 or None, got {max_len!r}")
    if len(seqs) == 0:
        raise DataError("pad_sequences got no sequences; expected at least one")
    rows: list[torch.Tensor] = []
    for i, s in enumerate(seqs):
        if isinstance(s, torch.Tensor):
            if s.dim() != 1:
                raise DataError(f"sequence {i} is a tensor of shape {tuple(s.shape)}; expected 1-D")
            if s.dtype.is_floating_point or s.dtype.is_complex or s.dtype == torch.bool:
                raise DataError(f"sequence {i} has dtype {s.dtype}; expected integer ids")
            t = s.to(torch.long)
        else:
            if any(isinstance(v, bool) or not isinstance(v, int) for v in s):
                bad = next(v for v in s if isinstance(v, bool) or not isinstance(v, int))
                raise DataError(f"sequence {i} holds {bad!r}; expected integer ids")
            t = torch.tensor(list(s), dtype=torch.long)
        if t.numel() == 0:
            raise DataError(
                f"sequence {i} is empty; every sequence needs length >= 1 (the model "
                "layers cannot take length 0)"
            )
        rows.append(t[:max_len] if max_len is not None else t)
    lengths = torch.tensor([r.numel() for r in rows], dtype=torch.long)
    padded = torch.full((len(rows), int(lengths.max())), pad_value, dtype=torch.long)
    for i, r in enumerate(rows):
        padded[i, : r.numel()] = r
    return padded, lengths


# --------------------------------------------------------------------------- pairs


def collate_pairs(pairs: Sequence[tuple[list[int], list[int]]]) -> dict[str, Tensor]:
    """Pad a batch of ``(source ids, target ids)`` (each without specials).

    Returns ``src (B, S)`` (each source + ``</s>``), ``src_lengths (B,)``,
    ``tgt_in (B, T)`` (``<s>`` + target) and ``tgt_out (B, T)`` (target + ``</s>``),
    padded with ``<pad>`` (0).
    """
    B = len(pairs)
    S = max(len(s) for s, _ in pairs) + 1
    T = max(len(t) for _, t in pairs) + 1
    src = torch.full((B, S), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((B, T), PAD_ID, dtype=torch.long)
    lengths = torch.empty(B, dtype=torch.long)
    for b, (s, t) in enumerate(pairs):
        src[b, : len(s) + 1] = torch.tensor([*s, EOS_ID])
        tgt_in[b, : len(t) + 1] = torch.tensor([BOS_ID, *t])
        tgt_out[b, : len(t) + 1] = torch.tensor([*t, EOS_ID])
        lengths[b] = len(s) + 1
    return {"src": src, "src_lengths": lengths, "tgt_in": tgt_in, "tgt_out": tgt_out}


class PairBatches(Sequence):
    """Batches of :func:`collate_pairs`, padded one at a time when asked for.

    Only the order is kept (``order``, the pairs' positions, batch ``k`` the ``k``-th run
    of ``batch_size`` of them after shuffling the runs by ``runs``); a batch's pairs are
    read (from disk for :class:`gatelab.data.pair_corpus.PairIds`) and padded while it is
    used, so memory holds one batch, not an epoch's.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[list[int], list[int]]],
        order: np.ndarray,
        batch_size: int,
        runs: Sequence[int],
    ) -> None:
        self.pairs = pairs
        self.order = order
        self.batch_size = batch_size
        self.runs = runs

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        start = self.runs[k] * self.batch_size
        rows = self.order[start : start + self.batch_size].tolist()
        return collate_pairs([self.pairs[i] for i in rows])


def pair_lengths(pairs: Sequence[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """``(source lengths, target lengths)`` of id pairs, each ``(N,)`` integers; a sequence
    with a ``lengths()`` method (:class:`gatelab.data.pair_corpus.PairIds`) gives its own."""
    if hasattr(pairs, "lengths"):
        return pairs.lengths()
    n = len(pairs)
    src = np.fromiter((len(s) for s, _ in pairs), dtype=np.int64, count=n)
    return src, np.fromiter((len(t) for _, t in pairs), dtype=np.int64, count=n)


def pair_batches(
    pairs: Sequence[tuple[list[int], list[int]]], batch_size: int, *, seed: int | None = None
) -> PairBatches:
    """Batches of similar source length (less padding), in shuffled order when ``seed`` is
    given (sorted by length otherwise); each padded when it is read (:class:`PairBatches`).

    The order: the positions ``0..N-1`` shuffled by ``random.Random(seed)`` (when
    ``seed`` is given), stably sorted by (source length, target length) and cut into runs
    of ``batch_size``; the same generator then shuffles the runs. Memory: about 24 bytes a
    pair while the order is made, 8 after (an int64 array, never a Python list of ints).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1")
    src_len, tgt_len = pair_lengths(pairs)
    n = len(src_len)
    order = array("q", range(n))  # random.shuffle on 8 bytes a pair, not a list's ~36
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)  # random order among equal lengths
    perm = np.frombuffer(order, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    if n:  # a stable sort on one int64 key orders as the tuple (source, target) length
        key = src_len[perm].astype(np.int64) * (int(tgt_len.max()) + 1)
        key += tgt_len[perm]
        idx = np.argsort(key, kind="stable")
        del key
        perm = perm[idx]
        del idx
    del order
    runs = list(range(-(-n // batch_size)))
    if seed is not None:
        rng.shuffle(runs)
    return PairBatches(pairs, perm, batch_size, runs)


# --------------------------------------------------------------------------- streams

#: Ids read from disk at a time by :func:`stream_batches` (all streams together), so a
#: read costs one system call per stream every few windows.
_READ_IDS = 1 << 20


def stream_shard(
    n_ids: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> tuple[int, int, int]:
    """The part of a global batch of ``batch_size`` streams that rank ``rank`` walks.

    The text of ``N`` ids is cut into ``B = batch_size`` streams of ``n = (N - 1) // B``
    ids each (the last ``(N - 1) % B`` ids are dropped), as :func:`stream_batches` with
    ``batch_size = B`` cuts it. Rank ``r`` of ``W`` holds the contiguous block of streams
    ``lo = r * B // W .. hi = (r + 1) * B // W - 1`` (blocks differ in size by at most one),
    the ids ``[lo * n, hi * n + 1)`` (the ``+ 1`` is the last target). Then
    ``stream_batches(ids[start:stop], rows, T)`` gives rows ``lo..hi-1`` of every batch of
    ``stream_batches(ids, B, T)``: the ranks' batches, stacked in rank order, are the
    global batches, and a rank reads (and encodes) only its ids.

    Args:
        n_ids: ``N``, the length of the whole text.
        batch_size: ``B``, the streams of all ranks together (>= ``world_size``).
        rank, world_size: this rank (``0 <= rank < world_size``) and the number of ranks.

    Returns:
        ``(start, stop, rows)``: the ids to read and this rank's streams ``hi - lo``.

    Raises:
        ValueError: ``batch_size < world_size`` (a rank would have no stream), or a bad
            argument.
        DataError: the text is too short for ``B`` streams.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    world_size = check_int("world_size", world_size, 1)
    rank = check_int("rank", rank, 0, world_size)
    if batch_size < world_size:
        raise ValueError(
            f"batch_size={batch_size} for {world_size} ranks; expected at least one stream "
            "per rank (batch_size >= the number of ranks)"
        )
    n = (n_ids - 1) // batch_size
    if n < 1:
        raise DataError(
            f"a text of {n_ids} characters is too short for {batch_size} streams; "
            f"need at least {batch_size + 1}"
        )
    lo, hi = rank * batch_size // world_size, (rank + 1) * batch_size // world_size
    return lo * n, hi * n + 1, hi - lo


def corpus_shard(
    corpus: CharCorpus,
    batch_size: int,
    valid_fraction: float = 0.1,
    rank: int = 0,
    world_size: int = 1,
    *,
    what: str = "text",
) -> tuple[TokenIds, int, TokenIds | None]:
    """What rank ``rank`` of ``world_size`` reads of a corpus split into training text (the
    first ``1 - valid_fraction``) and held-out text: the ids of its streams of the global
    batch of ``batch_size`` (:func:`stream_shard` of the training text), their number, and
    on rank 0 the held-out ids (None on the others: rank 0 validates for all). Only those
    characters are read and encoded (:meth:`gatelab.data.corpus.CharCorpus.ids`).

    Returns:
        ``(train_ids, rows, valid_ids)``: ``stream_batches(train_ids, rows, T)`` are this
        rank's rows of every batch of ``stream_batches(train_text, batch_size, T)``.
    """
    cut = split_point(len(corpus), valid_fraction)
    start, stop, rows = stream_shard(cut, batch_size, rank, world_size)
    valid_ids = corpus.ids(cut, None, what=what) if rank == 0 else None
    return corpus.ids(start, stop, what=what), rows, valid_ids


def shard_range(n_ids: int, batch_size: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """The ids ``[start, stop)`` that rank ``rank`` of ``world_size`` reads when each rank
    walks ``batch_size`` streams: :func:`stream_shard` of the global batch
    ``batch_size * world_size``. ``stream_batches(ids[start:stop], batch_size, T)`` then
    equals ``stream_batches(ids, batch_size, T, rank=rank, world_size=world_size)``, so a
    rank can read (and encode) only its shard.

    Args:
        n_ids: ``N``, the length of the whole text.
        batch_size: streams per rank (>= 1).
        rank, world_size: this rank (``0 <= rank < world_size``) and the number of ranks.

    Returns:
        ``(start, stop)``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    world_size = check_int("world_size", world_size, 1)
    try:
        start, stop, _ = stream_shard(n_ids, batch_size * world_size, rank, world_size)
    except DataError:
        G = batch_size * world_size
        ranks = "" if world_size == 1 else f" ({world_size} ranks x {batch_size})"
        raise DataError(
            f"a text of {n_ids} characters is too short for {G} streams{ranks}; "
            f"need at least {G + 1}"
        ) from None
    return start, stop


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
