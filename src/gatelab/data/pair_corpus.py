"""Sentence pairs streamed from disk: the translator's data for a pairs file of any size.

:class:`PairCorpus` walks a ``source<TAB>target`` file in chunked passes and never holds
its pairs: pass 1 validates and counts them (the rules and errors of
:func:`gatelab.data.pairs.read_sentence_pairs`) and splits their positions as
:func:`gatelab.data.pairs.split_pairs` does (a byte a pair says which part it is in);
later passes give the tokens of a part (for the vocabularies, counted as they come) and
encode parts into ids on disk (:class:`PairIds`: a temporary int32 file and per-pair
lengths and offsets). Memory is O(batch + vocabulary + ~17 bytes a pair), the results
those of the in-memory path (same split, vocabularies, ids and batches).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import weakref
from array import array
from collections.abc import Iterator, Sequence

import numpy as np

from gatelab.data.corpus import TokenIds
from gatelab.data.lines import LineStream
from gatelab.data.pairs import PairSplits, iter_pairs, split_indices
from gatelab.data.vocab import WordVocab, tokenize
from gatelab.errors import DataError

__all__ = ["PAIR_PARTS", "PairCorpus", "PairIds"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The parts of a split, in the order of :class:`gatelab.data.pairs.PairSplits`.
PAIR_PARTS = ("train", "valid", "test")

#: Ids gathered in memory before they are written to the id file.
_WRITE_IDS = 1 << 20


class PairIds(Sequence):
    """Encoded ``(source ids, target ids)`` pairs in a file, read a pair at a time.

    ``ids[k]`` is ``(list of source ids, list of target ids)``, as the in-memory lists of
    ints; :meth:`lengths` gives every pair's lengths without reading the file (what
    :func:`gatelab.data.batching.pair_batches` sorts by).

    Args:
        ids: the ids of all pairs, each source then its target, in pair order.
        src_len, tgt_len: ``(N,)`` lengths of each pair's source and target.
    """

    def __init__(self, ids: TokenIds, src_len: np.ndarray, tgt_len: np.ndarray) -> None:
        self.ids = ids
        self.src_len = src_len.astype(np.int32, copy=False)  # (N,)
        self.tgt_len = tgt_len.astype(np.int32, copy=False)  # (N,)
        self.offsets = np.zeros(len(src_len) + 1, dtype=np.int64)  # (N + 1,)
        np.cumsum(self.src_len, out=self.offsets[1:], dtype=np.int64)
        self.offsets[1:] += np.cumsum(self.tgt_len, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.src_len)

    def __getitem__(self, k: int) -> tuple[list[int], list[int]]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"pair {k} out of range; {len(self)} pairs")
        k = k % len(self)
        a = int(self.offsets[k])
        both = self.ids.read(a, int(self.offsets[k + 1])).tolist()
        s = int(self.src_len[k])
        return both[:s], both[s:]

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """``(source lengths, target lengths)``, each ``(N,)`` int32 (not copies)."""
        return self.src_len, self.tgt_len


class PairCorpus:
    """A sentence pairs file, split into train/valid/test, read in chunked passes.

    Args:
        path: ``source<TAB>target`` lines (:func:`gatelab.data.pairs.read_sentence_pairs`).
        valid, test, seed: the split (:func:`gatelab.data.pairs.split_pairs`).
        chunk_bytes: bytes read at a time (default: that of
            :class:`gatelab.data.lines.LineStream`).

    Attributes:
        path, encoding, skipped (``(line_number, line)`` of a cut-off last line),
        sizes (``{"train": ..., "valid": ..., "test": ...}``).

    Raises:
        DataError: as :func:`~gatelab.data.pairs.read_sentence_pairs` and
            :func:`~gatelab.data.pairs.split_pairs`.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        valid: int = 1000,
        test: int = 1000,
        seed: int = 0,
        chunk_bytes: int | None = None,
    ) -> None:
        self._lines = LineStream(path, what="sentence pairs file", chunk_bytes=chunk_bytes)
        self.path, self.encoding = self._lines.path, self._lines.encoding
        self.skipped: list[tuple[int, str]] = []
        self._stat = _signature(self.path)
        n = sum(1 for _ in iter_pairs(self._lines, self.skipped))
        if n == 0:
            raise DataError(f"{self.path}: no sentence pairs; expected 'source<TAB>target' lines")
        self._part = np.zeros(n, dtype=np.uint8)  # (N,) 0 train, 1 valid, 2 test
        _, valid_idx, test_idx = split_indices(n, valid=valid, test=test, seed=seed)
        self._part[valid_idx], self._part[test_idx] = 1, 2
        counts = np.bincount(self._part, minlength=3).tolist()
        self.sizes = dict(zip(PAIR_PARTS, counts, strict=True))
        logger.info("read %d sentence pairs from %s (%d skipped)", n, self.path, len(self.skipped))

    def __len__(self) -> int:
        return len(self._part)

    def _each(self) -> Iterator[tuple[int, tuple[str, str]]]:
        """Every pair with its index, in one pass over the file; a file that changed since
        the first pass (its size or modification time, or its number of pairs) is refused:
        the split and the ids were made for the file as it was."""
        changed = DataError(
            f"{self.path} changed while it was being read (the split was made for the file "
            "as it was): train again from a file that does not change"
        )
        if _signature(self.path) != self._stat:
            raise changed
        k = -1
        for k, pair in enumerate(iter_pairs(self._lines, [], log=False)):
            if k >= len(self._part):
                raise changed
            yield k, pair
        if k + 1 != len(self._part):
            raise changed

    def _pairs(self, part: str) -> Iterator[tuple[str, str]]:
        """The pairs of ``part`` in file order (one pass)."""
        code = _code(part)
        for k, pair in self._each():
            if self._part[k] == code:
                yield pair

    def texts(self, part: str) -> list[tuple[str, str]]:
        """The ``(source, target)`` strings of ``part`` (in memory: for the test pairs)."""
        return list(self._pairs(part))

    def splits(self) -> PairSplits:
        """All three parts as strings, as :func:`~gatelab.data.pairs.split_pairs` gives
        them (in memory: for files that fit)."""
        parts: list[list[tuple[str, str]]] = [[], [], []]
        for k, pair in self._each():
            parts[self._part[k]].append(pair)
        return PairSplits(*parts)

    def tokens(self, part: str, side: int) -> Iterator[list[str]]:
        """The tokenised sources (``side=0``) or targets (``side=1``) of ``part``, one
        pass, a pair at a time (what :meth:`WordVocab.build` counts)."""
        for pair in self._pairs(part):
            yield tokenize(pair[side])

    def encode(
        self,
        src_vocab: WordVocab,
        tgt_vocab: WordVocab,
        parts: Sequence[str] = ("train", "valid"),
        *,
        cache_dir: PathLike | None = None,
    ) -> list[PairIds]:
        """Encode the pairs of ``parts`` into ids on disk, in one pass.

        A pair whose source or target has no token is left out (as the in-memory path
        leaves it). The id files are temporary ones in ``cache_dir`` (default: the
        system's temporary folder), unlinked at once and freed with the last view.

        Returns:
            A :class:`PairIds` per part, in the order of ``parts``.
        """
        codes = {_code(part): i for i, part in enumerate(parts)}
        writers = [_PairWriter(cache_dir) for _ in parts]
        try:
            for k, (src, tgt) in self._each():
                i = codes.get(int(self._part[k]))
                if i is None:
                    continue
                s, t = tokenize(src), tokenize(tgt)
                if s and t:
                    writers[i].add(src_vocab.encode(s), tgt_vocab.encode(t))
            return [w.close() for w in writers]
        finally:
            for w in writers:
                w.discard()


def _signature(path: os.PathLike) -> tuple[int, int]:
    """What tells a file changed between two passes: its size and modification time."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _code(part: str) -> int:
    if part not in PAIR_PARTS:
        raise ValueError(f"part={part!r}; expected one of {PAIR_PARTS}")
    return PAIR_PARTS.index(part)


class _PairWriter:
    """Appends encoded pairs to a temporary id file and their lengths to int32 arrays."""

    def __init__(self, cache_dir: PathLike | None) -> None:
        fd, self.name = tempfile.mkstemp(prefix="gatelab-pairs-", suffix=".bin", dir=cache_dir)
        self.file = os.fdopen(fd, "wb")
        self.buffer: list[int] = []
        self.src_len, self.tgt_len = array("i"), array("i")

    def add(self, s: list[int], t: list[int]) -> None:
        self.buffer += s
        self.buffer += t
        self.src_len.append(len(s))
        self.tgt_len.append(len(t))
        if len(self.buffer) >= _WRITE_IDS:
            self._flush()

    def _flush(self) -> None:
        self.file.write(np.asarray(self.buffer, dtype=np.int32).tobytes())
        self.buffer = []

    def close(self) -> PairIds:
        self._flush()
        self.file.close()
        ids = TokenIds(self.name, np.int32)
        self.discard()  # the open descriptor of ``ids`` keeps the data until it is closed
        src = np.frombuffer(self.src_len, dtype=np.int32)  # views: no copy of the index
        tgt = np.frombuffer(self.tgt_len, dtype=np.int32)
        if os.path.exists(self.name):  # pragma: no cover - cannot unlink an open file
            weakref.finalize(ids, _remove, self.name)
        return PairIds(ids, src, tgt)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.name)


def _remove(name: str) -> None:  # pragma: no cover - see _PairWriter.close
    with contextlib.suppress(OSError):
        os.unlink(name)
