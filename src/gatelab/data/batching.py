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


def collate_pairs(
    pairs: Sequence[tuple[list[int], list[int]]], S: int | None = None, T: int | None = None
) -> dict[str, Tensor]:
    """Pad a batch of ``(source ids, target ids)`` (each without specials).

    Returns ``src (B, S)`` (each source + ``</s>``), ``src_lengths (B,)``,
    ``tgt_in (B, T)`` (``<s>`` + target) and ``tgt_out (B, T)`` (target + ``</s>``),
    padded with ``<pad>`` (0). ``S`` and ``T`` default to the longest source and target
    + 1; a rank's rows of a batch are padded to the whole batch's.
    """
    B = len(pairs)
    S = max(len(s) for s, _ in pairs) + 1 if S is None else S
    T = max(len(t) for _, t in pairs) + 1 if T is None else T
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


#: Batches a chunk of :func:`pair_batches` holds (its pairs shuffled, then sorted by length).
CHUNK_BATCHES = 100


class PairBatches(Sequence):
    """The batches of :func:`pair_batches`, made a chunk at a time and padded one batch at
    a time while they are used: memory holds a chunk's lengths and one batch.

    Iterating walks the chunks in order; the batches' order depends on the generator's
    state, so ``batches[k]`` walks from the start (iterate, rather than index, an epoch).

    With ``world_size`` > 1 each batch is this rank's rows of the global batch (every
    ``world_size``-th from ``rank``, as :func:`gatelab.train.tbptt.fit_loop` takes them)
    padded to the global batch's lengths, and only those pairs are read; a rank with no
    row of a short batch gets row 0 with ``"standin": True`` (to weigh 0).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[list[int], list[int]]],
        batch_size: int,
        seed: int | None,
        chunk_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.pairs, self.batch_size, self.seed = pairs, batch_size, seed
        self.chunk_size, self.rank, self.world_size = chunk_size, rank, world_size
        n, C, B = len(pairs), chunk_size, batch_size
        self._len = (n // C) * (-(-C // B)) + -(-(n % C) // B)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(f"batch {k} out of range; {len(self)} batches")
        k %= len(self)
        for i, batch in enumerate(self):
            if i == k:
                return batch
        raise AssertionError("unreachable")  # pragma: no cover

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for rows in self.order():
            yield self._collate(rows)

    def order(self) -> Iterator[np.ndarray]:
        """Each batch's records ``(B,)`` of ``(position, id offset, source length, target
        length)`` (a structured array, positions in ``pairs``), in batch order: the chunks
        ``[c C, (c + 1) C)`` in an order shuffled by ``random.Random(seed)``; within a
        chunk, its positions shuffled by the same generator, stably sorted by (source
        length, target length), cut into runs of ``batch_size`` and the runs shuffled.
        Without ``seed`` nothing is shuffled. One chunk (``N <= C``) is the rule of the
        whole-data sort that :func:`pair_batches` had before chunks."""
        n, C, B = len(self.pairs), self.chunk_size, self.batch_size
        rng = random.Random(self.seed)
        chunks = list(range(-(-n // C)))
        if self.seed is not None:
            rng.shuffle(chunks)
        for c in chunks:
            lengths = _chunk_lengths(self.pairs, c * C, min(n, (c + 1) * C))  # (C,)
            order = array("q", range(len(lengths)))
            if self.seed is not None:
                rng.shuffle(order)  # random order among equal lengths
            perm = np.frombuffer(order, dtype=np.int64) if len(order) else np.zeros(0, np.int64)
            perm = perm[np.lexsort((lengths["tgt"][perm], lengths["src"][perm]))]
            runs = list(range(-(-len(perm) // B)))
            if self.seed is not None:
                rng.shuffle(runs)
            for r in runs:
                batch = lengths[perm[r * B : (r + 1) * B]]
                batch["pos"] += c * C
                yield batch

    def _collate(self, rows: np.ndarray) -> dict[str, Tensor]:
        S, T = int(rows["src"].max()) + 1, int(rows["tgt"].max()) + 1
        mine = rows[self.rank :: self.world_size]
        standin = len(mine) == 0
        if standin:
            mine = rows[:1]
        if hasattr(self.pairs, "read"):  # on disk: one read a pair, of this rank's rows
            pairs = self.pairs.read(mine)
        else:
            pairs = [self.pairs[i] for i in mine["pos"].tolist()]
        batch = collate_pairs(pairs, S, T)
        if standin:
            batch["standin"] = True
        return batch


#: A pair's record while batches are made: its position, where its ids start on disk
#: (for :class:`gatelab.data.pair_corpus.PairIds`) and its lengths.
_LENGTHS = np.dtype([("pos", "<i8"), ("offset", "<i8"), ("src", "<i4"), ("tgt", "<i4")])


def _chunk_lengths(pairs, a: int, b: int) -> np.ndarray:
    """``(b - a,)`` records of :data:`_LENGTHS` of pairs ``a..b-1`` (positions from 0)."""
    out = np.zeros(b - a, dtype=_LENGTHS)
    out["pos"] = np.arange(b - a)
    if hasattr(pairs, "records"):  # on disk: one read of the chunk's index
        records = pairs.records(a, b)
        for key in ("offset", "src", "tgt"):
            out[key] = records[key]
    else:
        out["src"] = [len(s) for s, _ in pairs[a:b]]
        out["tgt"] = [len(t) for _, t in pairs[a:b]]
    return out


def pair_batches(
    pairs: Sequence[tuple[list[int], list[int]]],
    batch_size: int,
    *,
    seed: int | None = None,
    chunk_batches: int = CHUNK_BATCHES,
    rank: int = 0,
    world_size: int = 1,
) -> PairBatches:
    """Batches of similar source length (less padding), in shuffled order when ``seed`` is
    given (sorted by length otherwise), each padded when it is read (:class:`PairBatches`).

    The "bucket iterator": the pairs are cut into chunks of ``C = chunk_batches *
    batch_size`` consecutive ones, walked in a seeded order; each chunk's pairs are
    shuffled, sorted by length and cut into batches, whose order is shuffled within the
    chunk (:meth:`PairBatches.order`). Every pair is in one batch an epoch; only the last
    chunk's last batch may be short. Memory: a chunk's records (24 bytes a pair of it) and
    a batch, whatever the number of pairs; no whole-data sort or permutation.

    Args:
        pairs: ``(source ids, target ids)`` pairs: a list, or
            :class:`gatelab.data.pair_corpus.PairIds` on disk.
        batch_size: ``B``, pairs a (global) batch (>= 1).
        seed: the order's seed (None: sorted, not shuffled).
        chunk_batches: batches a chunk (>= 1).
        rank, world_size: give this rank's rows of each batch
            (:class:`PairBatches`), reading only those pairs.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    chunk_batches = check_int("chunk_batches", chunk_batches, 1)
    world_size = check_int("world_size", world_size, 1)
    rank = check_int("rank", rank, 0, world_size)
    return PairBatches(pairs, batch_size, seed, chunk_batches * batch_size, rank, world_size)


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
