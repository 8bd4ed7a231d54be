"""Sentence pairs streamed from disk: the translator's data for a pairs file of any size.

:class:`PairCorpus` walks a ``source<TAB>target`` file in chunked passes and never holds
its pairs: pass 1 validates and counts them (the rules and errors of
:func:`gatelab.data.pairs.read_sentence_pairs`); each later pass decides every pair's part
as it comes (:func:`gatelab.data.pairs.split_codes`, a function of the seed and the number
of pairs, so no per-pair state is kept between passes) and gives the tokens of a part (for
the vocabularies, counted as they come) or encodes parts into ids on disk
(:class:`PairIds`: an int32 id file and a 16-byte record a pair, both temporary files
read with ``os.pread``). Memory is O(batch + vocabulary + a block of pairs), flat in the
number of pairs.

:func:`share_pairs` is what rank 0 of a data-parallel job makes of the file for every
rank (:class:`SharedPairs`: the vocabularies and named id files that the other ranks open
without reading the pairs file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from gatelab.data.corpus import TokenIds
from gatelab.data.lines import LineStream
from gatelab.data.pairs import SPLIT_RULES, PairSplits, iter_pairs, split_codes
from gatelab.data.vocab import WordVocab, tokenize
from gatelab.errors import DataError

__all__ = ["PAIR_INDEX", "PAIR_PARTS", "PairCorpus", "PairIds", "SharedPairs", "share_pairs"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The parts of a split, in the order of :class:`gatelab.data.pairs.PairSplits`.
PAIR_PARTS = ("train", "valid", "test")

#: A pair's record in the index file of :class:`PairIds`: where its ids start in the id
#: file and its source and target lengths (16 bytes).
PAIR_INDEX = np.dtype([("offset", "<i8"), ("src", "<i4"), ("tgt", "<i4")])

#: Ids (and records) gathered in memory before they are written.
_WRITE_IDS = 1 << 18
_WRITE_RECORDS = 1 << 14


class PairIds(Sequence):
    """Encoded ``(source ids, target ids)`` pairs on disk, read a pair (or a block of
    records) at a time; nothing a pair is held in memory.

    ``ids[k]`` is ``(list of source ids, list of target ids)``, as the in-memory lists of
    ints; :meth:`records` gives the lengths (and id offsets) of a range of pairs, what
    :func:`gatelab.data.batching.pair_batches` sorts by, a chunk at a time.

    Args:
        ids: the ids of all pairs, each source then its target, in pair order (int32).
        index: ``(N,)`` records of :data:`PAIR_INDEX`, one a pair.

    Attributes:
        bytes_read: bytes of ids read so far (the records not counted).
    """

    def __init__(self, ids: TokenIds, index: TokenIds) -> None:
        if index.dtype != PAIR_INDEX:
            raise TypeError(f"index must hold {PAIR_INDEX} records, got {index.dtype}")
        self.ids, self.index = ids, index
        self.bytes_read = 0

    @classmethod
    def open(cls, ids_path: PathLike, index_path: PathLike) -> PairIds:
        """The pairs of an id file and its index file (as :func:`share_pairs` names them)."""
        return cls(TokenIds(ids_path, np.int32), TokenIds(index_path, PAIR_INDEX))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> tuple[list[int], list[int]]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"pair {k} out of range; {len(self)} pairs")
        k = k % len(self)
        return self.read(self.records(k, k + 1))[0]

    def records(self, a: int, b: int) -> np.ndarray:
        """The :data:`PAIR_INDEX` records of pairs ``a..b-1``, ``(b - a,)``."""
        return self.index.read(a, b)

    def read(self, records: np.ndarray) -> list[tuple[list[int], list[int]]]:
        """The pairs of ``records`` (with the ``offset``, ``src`` and ``tgt`` fields of
        :meth:`records`), in their order."""
        out = []
        fields = (records[key].tolist() for key in ("offset", "src", "tgt"))
        for offset, s, t in zip(*fields, strict=True):
            both = self.ids.read(offset, offset + s + t).tolist()
            self.bytes_read += 4 * (s + t)
            out.append((both[:s], both[s:]))
        return out


class PairCorpus:
    """A sentence pairs file, split into train/valid/test, read in chunked passes.

    Args:
        path: ``source<TAB>target`` lines (:func:`gatelab.data.pairs.read_sentence_pairs`).
        valid, test, seed, rule: the split (:func:`gatelab.data.pairs.split_codes`;
            ``rule="permutation"`` reads run folders made before the streamed rule, at 8
            bytes a pair in memory while a pass decides the parts).
        chunk_bytes: bytes read at a time (default: that of
            :class:`gatelab.data.lines.LineStream`).

    Attributes:
        path, encoding, skipped (``(line_number, line)`` of a cut-off last line),
        sizes (``{"train": ..., "valid": ..., "test": ...}``), rule.

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
        rule: str = "selection",
        chunk_bytes: int | None = None,
    ) -> None:
        if rule not in SPLIT_RULES:
            raise ValueError(f"rule={rule!r}; expected one of {SPLIT_RULES}")
        self._lines = LineStream(path, what="sentence pairs file", chunk_bytes=chunk_bytes)
        self.path, self.encoding = self._lines.path, self._lines.encoding
        self.skipped: list[tuple[int, str]] = []
        self._stat = _signature(self.path)
        n = sum(1 for _ in iter_pairs(self._lines, self.skipped))
        if n == 0:
            raise DataError(f"{self.path}: no sentence pairs; expected 'source<TAB>target' lines")
        self._n, self.rule, self._split = n, rule, (valid, test, seed)
        next(split_codes(n, valid, test, seed, "selection", block=1))  # checks the sizes
        self.sizes = {"train": n - valid - test, "valid": valid, "test": test}
        logger.info("read %d sentence pairs from %s (%d skipped)", n, self.path, len(self.skipped))

    def __len__(self) -> int:
        return self._n

    def _codes(self) -> Iterator[int]:
        """Each pair's part, in file order (decided again in every pass)."""
        for block in split_codes(self._n, *self._split, self.rule):
            yield from block.tolist()

    def _each(self) -> Iterator[tuple[int, tuple[str, str]]]:
        """Every pair with its part, in one pass over the file; a file that changed since
        the first pass (its size or modification time, or its number of pairs) is refused:
        the split and the ids were made for the file as it was."""
        changed = DataError(
            f"{self.path} changed while it was being read (the split was made for the file "
            "as it was): train again from a file that does not change"
        )
        if _signature(self.path) != self._stat:
            raise changed
        codes = self._codes()
        k = -1
        for k, pair in enumerate(iter_pairs(self._lines, [], log=False)):
            if k >= self._n:
                raise changed
            yield next(codes), pair
        if k + 1 != self._n:
            raise changed

    def _pairs(self, part: str) -> Iterator[tuple[str, str]]:
        """The pairs of ``part`` in file order (one pass)."""
        code = _code(part)
        for c, pair in self._each():
            if c == code:
                yield pair

    def texts(self, part: str) -> list[tuple[str, str]]:
        """The ``(source, target)`` strings of ``part`` (in memory: for the test pairs)."""
        return list(self._pairs(part))

    def splits(self) -> PairSplits:
        """All three parts as strings, as :func:`~gatelab.data.pairs.split_pairs` gives
        them (in memory: for files that fit)."""
        parts: list[list[tuple[str, str]]] = [[], [], []]
        for c, pair in self._each():
            parts[c].append(pair)
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
        keep: bool = False,
    ) -> list[PairIds]:
        """Encode the pairs of ``parts`` into ids on disk, in one pass.

        A pair whose source or target has no token is left out (as the in-memory path
        leaves it). The id and index files are temporary ones in ``cache_dir`` (default:
        the system's temporary folder), unlinked at once and freed with the last view,
        unless ``keep`` (then other processes may open them by their names,
        :meth:`PairIds.open`, until :meth:`SharedPairs.unlink` removes them).

        Returns:
            A :class:`PairIds` per part, in the order of ``parts``.
        """
        codes = {_code(part): i for i, part in enumerate(parts)}
        writers = [_PairWriter(cache_dir) for _ in parts]
        try:
            for c, (src, tgt) in self._each():
                i = codes.get(c)
                if i is None:
                    continue
                s, t = tokenize(src), tokenize(tgt)
                if s and t:
                    writers[i].add(src_vocab.encode(s), tgt_vocab.encode(t))
            return [w.close(keep) for w in writers]
        except BaseException:
            for w in writers:
                w.discard()
            raise


@dataclass
class SharedPairs:
    """What :func:`share_pairs` made of a pairs file on rank 0, for every rank: small,
    sent whole to the others (they never read the pairs file).

    Attributes:
        src_vocab, tgt_vocab: the vocabularies.
        pairs, sizes, skipped: the number of pairs, the parts' sizes and the skipped line
            numbers (as :class:`PairCorpus` has them).
        files: ``{part: (id file, index file)}``, named files that each rank opens
            (:meth:`open`) before rank 0 removes them (:meth:`unlink`).
        rule: the split rule.
    """

    src_vocab: WordVocab
    tgt_vocab: WordVocab
    pairs: int
    sizes: dict[str, int]
    skipped: list[int]
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    rule: str = "selection"

    def open(self, part: str) -> PairIds:
        """The encoded pairs of ``part``; a missing file names what to do."""
        ids, index = self.files[part]
        try:
            return PairIds.open(ids, index)
        except FileNotFoundError:
            raise DataError(
                f"the encoded {part} pairs '{ids}' are not there: the first rank writes them "
                "to its temporary folder, which every rank must see (on several machines, "
                "set TMPDIR to a folder they share)"
            ) from None

    def unlink(self) -> None:
        """Remove the named files (the ranks' open descriptors keep the data)."""
        for names in self.files.values():
            for name in names:
                _remove(name)


def share_pairs(
    path: PathLike,
    *,
    valid: int,
    test: int,
    seed: int,
    min_freq: int,
    rule: str = "selection",
    vocabs: tuple[WordVocab, WordVocab] | None = None,
    cache_dir: PathLike | None = None,
) -> SharedPairs:
    """Read a pairs file for a translator: split it (:class:`PairCorpus`), build the
    vocabularies on the training pairs (unless ``vocabs`` gives them) and encode the train
    and valid pairs into named files (:meth:`PairCorpus.encode` with ``keep``): three
    passes over the file (validation, both vocabularies, encoding), memory O(vocabulary +
    a block). Run by rank 0 of a job (or the only process); the result is small and goes
    to every rank."""
    corpus = PairCorpus(path, valid=valid, test=test, seed=seed, rule=rule)
    if vocabs is None:  # both sides counted in one pass over the training pairs
        counts: tuple[Counter, Counter] = (Counter(), Counter())
        for pair in corpus._pairs("train"):
            counts[0].update(tokenize(pair[0]))
            counts[1].update(tokenize(pair[1]))
        vocabs = tuple(WordVocab.from_counts(c, min_freq) for c in counts)
    encoded = corpus.encode(*vocabs, ("train", "valid"), cache_dir=cache_dir, keep=True)
    return SharedPairs(
        *vocabs,
        pairs=len(corpus),
        sizes=corpus.sizes,
        skipped=[n for n, _ in corpus.skipped],
        files={
            p: (e.ids.path.as_posix(), e.index.path.as_posix())
            for p, e in zip(("train", "valid"), encoded, strict=True)
        },
        rule=rule,
    )


def _signature(path: os.PathLike) -> tuple[int, int]:
    """What tells a file changed between two passes: its size and modification time."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _code(part: str) -> int:
    if part not in PAIR_PARTS:
        raise ValueError(f"part={part!r}; expected one of {PAIR_PARTS}")
    return PAIR_PARTS.index(part)


class _PairWriter:
    """Appends encoded pairs to a temporary id file and their records to an index file,
    a block at a time."""

    def __init__(self, cache_dir: PathLike | None) -> None:
        self.files = []
        for suffix in (".ids", ".index"):
            fd, name = tempfile.mkstemp(prefix="gatelab-pairs-", suffix=suffix, dir=cache_dir)
            self.files.append((name, os.fdopen(fd, "wb")))
        self.ids: list[int] = []
        self.records: list[tuple[int, int, int]] = []
        self.offset = 0

    def add(self, s: list[int], t: list[int]) -> None:
        self.ids += s
        self.ids += t
        self.records.append((self.offset, len(s), len(t)))
        self.offset += len(s) + len(t)
        if len(self.ids) >= _WRITE_IDS or len(self.records) >= _WRITE_RECORDS:
            self._flush()

    def _flush(self) -> None:
        self.files[0][1].write(np.asarray(self.ids, dtype=np.int32).tobytes())
        self.files[1][1].write(np.array(self.records, dtype=PAIR_INDEX).tobytes())
        self.ids, self.records = [], []

    def close(self, keep: bool = False) -> PairIds:
        self._flush()
        for _, f in self.files:
            f.close()
        pairs = PairIds.open(self.files[0][0], self.files[1][0])
        if not keep:
            self.discard()  # the open descriptors keep the data until they are closed
            for name, _ in self.files:
                if os.path.exists(name):  # pragma: no cover - cannot unlink an open file
                    weakref.finalize(pairs, _remove, name)
        return pairs

    def discard(self) -> None:
        for name, f in self.files:
            if not f.closed:
                f.close()
            _remove(name)


def _remove(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)
