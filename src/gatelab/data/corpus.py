"""Text corpora of any size: read whole, or scanned and encoded as ids on disk.

:func:`read_text_corpus` reads a text into memory; :func:`scan_text_corpus` and
:func:`encode_corpus` stream a file of any size (one chunked pass for the characters,
ids in a temporary file read a window at a time, :class:`TokenIds`), and
:class:`CharCorpus` puts the two together for a character model. Sentence pairs for
translation are read by :mod:`gatelab.data.pairs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import weakref
from codecs import BOM_UTF8
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatelab.data.lines import check_file, decode_utf8, read_bytes
from gatelab.data.vocab import CharVocab
from gatelab.errors import DataError

__all__ = [
    "CHUNK_BYTES",
    "CharCorpus",
    "CorpusScan",
    "TokenIds",
    "encode_corpus",
    "read_text_corpus",
    "scan_text_corpus",
    "split_point",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


def read_text_corpus(path: PathLike) -> str:
    """Read a UTF-8 text corpus (e.g. tiny-shakespeare for character models).

    Args:
        path: the text file.

    The whole text is held in memory; :func:`scan_text_corpus` and
    :func:`encode_corpus` stream a file of any size instead.

    Returns:
        The decoded text, unchanged (line endings included); a leading UTF-8 byte-order
        mark is dropped.

    Raises:
        DataError: a missing or empty file, a file holding only whitespace, or binary
            content: a NUL byte or bytes that are not UTF-8 (the file and the byte
            offset are named).
    """
    p = Path(path)
    data = read_bytes(p, what="text corpus", factor=5.0)  # bytes + str: measured 3x
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"text corpus '{p}' looks binary: NUL byte at offset {nul}; expected UTF-8 text"
        )
    text, bad = decode_utf8(data)
    if text is None:
        raise DataError(
            f"text corpus '{p}' is not UTF-8: byte 0x{data[bad]:02x} at offset {bad}; "
            "expected UTF-8 text"
        )
    if not text.strip():
        raise DataError(f"text corpus '{p}' holds only whitespace; expected text")
    logger.info("read a text corpus of %d characters from %s", len(text), p)
    return text


# --------------------------------------------------------------------------- streaming

#: Bytes read at a time when a corpus is streamed from disk (4 MiB).
CHUNK_BYTES = 1 << 22

#: Code points counted or mapped at a time: numpy turns them into 8-byte indices first.
_BLOCK = 1 << 20

_MAX_CODE = 0x110000  # one past the last Unicode code point


def _utf8_cut(chunk: bytes) -> int:
    """Length of the longest prefix of ``chunk`` that ends on a UTF-8 character boundary.

    A character whose bytes straddle the end of a chunk is carried to the next one, so
    that every chunk decodes on its own. Invalid bytes are left for the decoder to report.
    """
    n = len(chunk)
    for back in range(1, min(4, n) + 1):
        b = chunk[n - back]
        if b < 0x80:  # ASCII: the chunk ends with a whole character
            return n
        if b >= 0xC0:  # a lead byte: how many bytes does its character take?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if need <= back else n - back
    return n  # only continuation bytes: invalid, the decoder names the offset


def _code_chunks(
    f, p: Path, start: int, chunk_bytes: int, what: str
) -> Iterator[tuple[int, np.ndarray]]:
    """Read ``f`` from byte ``start`` on; yield ``(byte_offset, code_points)`` per chunk.

    ``code_points`` is ``uint8`` for an ASCII chunk and ``uint32`` otherwise; every chunk
    starts on a character boundary. NUL bytes and bytes that are not UTF-8 raise
    DataError naming the file and the byte offset.
    """
    f.seek(start)
    carry = b""
    offset = start
    while True:
        block = f.read(chunk_bytes)
        data = carry + block
        if not data:
            return
        cut = _utf8_cut(data) if block else len(data)
        chunk, carry = data[:cut], data[cut:]
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise DataError(
                f"{what} '{p}' looks binary: NUL byte at offset {offset + nul}; expected UTF-8 text"
            )
        if chunk.isascii():
            codes = np.frombuffer(chunk, dtype=np.uint8)
        else:
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{what} '{p}' is not UTF-8: byte 0x{chunk[exc.start]:02x} at offset "
                    f"{offset + exc.start}; expected UTF-8 text"
                ) from None
            codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        if len(codes):
            yield offset, codes
        offset += len(chunk)
        if not block and not carry:
            return


def check_int(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``low..high - 1`` (no upper bound when ``high`` is None);
    ValueError naming ``name`` and the range otherwise (bools are refused)."""
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if bad or value < low or (high is not None and value >= high):
        expected = f">= {low}" if high is None else f"in {low}..{high - 1}"
        raise ValueError(f"{name}={value!r}; expected an int {expected}")
    return int(value)


@dataclass(frozen=True)
class CorpusScan:
    """What one streaming pass over a UTF-8 text corpus learned (:func:`scan_text_corpus`).

    Attributes:
        path: the file.
        chars: the distinct characters, sorted by code point (the order of
            :class:`gatelab.CharVocab`).
        counts: ``(V,)`` int64, how often each of ``chars`` occurs.
        n_chars: the number of characters (a leading byte-order mark not counted).
        n_bytes: the file's size.
        byte_offsets, char_offsets: ``(K,)`` int64, the byte and character offsets of
            the start of every chunk read, so that a range of characters can be read
            again without decoding the file from its start.
    """

    path: Path
    chars: list[str]
    counts: np.ndarray
    n_chars: int
    n_bytes: int
    byte_offsets: np.ndarray
    char_offsets: np.ndarray


def scan_text_corpus(
    path: PathLike, *, chunk_bytes: int = CHUNK_BYTES, what: str = "text corpus"
) -> CorpusScan:
    """Count the characters of a UTF-8 text file in one pass of chunked reads.

    Memory stays ``O(chunk_bytes)`` whatever the file's size. The checks and messages
    are those of :func:`read_text_corpus`: a missing, empty, whitespace-only or binary
    file raises DataError naming the file (and the byte offset).

    Args:
        path: the text file.
        chunk_bytes: bytes read at a time (>= 1; a multi-byte character cut by a chunk
            boundary is carried to the next chunk).
        what: a few words saying what the file is for, used in messages.

    Returns:
        A :class:`CorpusScan`.
    """
    chunk_bytes = check_int("chunk_bytes", chunk_bytes)
    p = check_file(path, what=what)
    counts = np.zeros(_MAX_CODE, dtype=np.int64)
    byte_offsets: list[int] = []
    char_offsets: list[int] = []
    n_chars = 0
    with open(p, "rb") as f:
        start = len(BOM_UTF8) if f.read(len(BOM_UTF8)) == BOM_UTF8 else 0
        for offset, codes in _code_chunks(f, p, start, chunk_bytes, what):
            byte_offsets.append(offset)
            char_offsets.append(n_chars)
            # a bincount is ~50x faster than np.unique on a chunk: no sort
            for i in range(0, len(codes), _BLOCK):
                seen = np.bincount(codes[i : i + _BLOCK])
                counts[: len(seen)] += seen
            n_chars += len(codes)
    present = np.flatnonzero(counts)
    chars = [chr(c) for c in present]
    if all(c.isspace() for c in chars):  # also true for a file holding only a BOM
        raise DataError(f"{what} '{p}' holds only whitespace; expected text")
    size = p.stat().st_size
    logger.info("scanned a text corpus of %d characters (%d bytes) in %s", n_chars, size, p)
    return CorpusScan(
        path=p,
        chars=chars,
        counts=counts[present],
        n_chars=n_chars,
        n_bytes=size,
        byte_offsets=np.asarray(byte_offsets, dtype=np.int64),
        char_offsets=np.asarray(char_offsets, dtype=np.int64),
    )


def _id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds ids ``0..vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"a vocabulary of {vocab_size} entries does not fit 32-bit ids")


class TokenIds:
    """A read-only array of token ids in a file, read a window at a time.

    Reads are ``os.pread`` calls, so the ids never enter the process's resident memory
    as a whole (a memory map would: every page touched counts towards its RSS). Slicing
    with a step of 1 gives a view on the same file.

    Args:
        path: a file of ``dtype`` ids (native byte order, no header).
        dtype: the id type (``uint8``, ``uint16``, ``uint32``).
        start, stop: the ids in view (default: all of them).

    Shapes: ``len(ids) == ids.numel() == N``; ``ids.read(a, b)`` -> ``(b - a,)``.
    """

    def __init__(
        self,
        path: PathLike,
        dtype: Any,
        start: int = 0,
        stop: int | None = None,
        *,
        _base: TokenIds | None = None,
    ) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        if _base is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
        else:
            self._fd = _base._fd
        self._base = _base  # a view keeps its base, and so the descriptor, alive
        total = os.fstat(self._fd).st_size // self.dtype.itemsize
        stop = total if stop is None else stop
        if not 0 <= start <= stop <= total:
            raise ValueError(f"ids [{start}:{stop}] out of range; the file holds {total}")
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def numel(self) -> int:
        """The number of ids (as :meth:`torch.Tensor.numel`)."""
        return len(self)

    def __repr__(self) -> str:
        return f"TokenIds({len(self)} x {self.dtype.name}, '{self.path}')"

    def __getitem__(self, key: slice) -> TokenIds:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"TokenIds take a slice with step 1, got {key!r}")
        a, b, _ = key.indices(len(self))
        b = max(a, b)
        return TokenIds(
            self.path,
            self.dtype,
            self.start + a,
            self.start + b,
            _base=self._base or self,
        )

    def read(self, a: int, b: int) -> np.ndarray:
        """Ids ``a..b-1`` of this view, as a fresh ``(b - a,)`` array."""
        if not 0 <= a <= b <= len(self):
            raise ValueError(f"read({a}, {b}) out of range; expected 0 <= a <= b <= {len(self)}")
        size = self.dtype.itemsize
        want = (b - a) * size
        data = os.pread(self._fd, want, (self.start + a) * size)
        if len(data) != want:
            raise DataError(
                f"'{self.path}' was cut short while being read: {len(data)} of {want} bytes"
            )
        return np.frombuffer(data, dtype=self.dtype).copy()


def encode_corpus(
    scan: CorpusScan,
    index: Sequence[str] | dict[str, int],
    start: int = 0,
    stop: int | None = None,
    *,
    cache_dir: PathLike | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    what: str = "text",
) -> TokenIds:
    """Write the ids of characters ``start..stop-1`` of a scanned corpus to a file.

    Reads only the bytes of that range (from the nearest chunk start of ``scan``), one
    chunk at a time. The file is a temporary one in ``cache_dir`` (default: the system's
    temporary folder), removed from the folder at once and freed when the returned
    :class:`TokenIds` and its views are gone; it holds ``stop - start`` ids of the
    smallest type that fits (``uint8`` up to 256 characters, then ``uint16``, ``uint32``).

    Args:
        scan: from :func:`scan_text_corpus` (the file must not have changed since).
        index: the characters in id order (a list, id ``k`` is ``index[k]``) or a
            ``{char: id}`` mapping.
        start, stop: the character range (default: the whole corpus).
        cache_dir: where the temporary id file goes.
        chunk_bytes: bytes read at a time.
        what: names the text in the error for characters missing from ``index``.

    Returns:
        The ids, ``(stop - start,)``.

    Raises:
        DataError: characters missing from ``index`` (named, with their first position
            counted from ``start``, as :meth:`gatelab.CharVocab.encode` does).
    """
    chunk_bytes = check_int("chunk_bytes", chunk_bytes)
    mapping = index if isinstance(index, dict) else {c: k for k, c in enumerate(index)}
    stop = scan.n_chars if stop is None else stop
    if not 0 <= start <= stop <= scan.n_chars:
        raise ValueError(
            f"characters [{start}:{stop}] out of range; expected 0 <= start <= stop <= "
            f"{scan.n_chars}"
        )
    dtype = _id_dtype(max(mapping.values(), default=0) + 1)
    lut = np.full(_MAX_CODE, -1, dtype=np.int32)
    for c, k in mapping.items():
        lut[ord(c)] = k
    fd, name = tempfile.mkstemp(prefix="gatelab-ids-", suffix=".bin", dir=cache_dir)
    ids = None
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            if stop > start:
                _encode_range(scan, lut, start, stop, out, dtype, chunk_bytes, what)
        ids = TokenIds(name, dtype)
    finally:
        os.close(fd)
        try:
            os.unlink(name)  # the open descriptor keeps the data until it is closed
        except OSError:  # pragma: no cover - systems that cannot unlink an open file
            if ids is not None:
                weakref.finalize(ids, _remove, name)
    logger.info("encoded %d characters of %s as %s ids", stop - start, scan.path, dtype.name)
    return ids


def _remove(name: str) -> None:  # pragma: no cover - see encode_corpus
    with contextlib.suppress(OSError):
        os.unlink(name)


def _encode_range(scan, lut, start, stop, out, dtype, chunk_bytes, what) -> None:
    k = int(np.searchsorted(scan.char_offsets, start, side="right")) - 1
    pos = int(scan.char_offsets[k])
    unseen: dict[str, int] = {}
    with open(scan.path, "rb") as f:
        for _, codes in _code_chunks(f, scan.path, int(scan.byte_offsets[k]), chunk_bytes, what):
            a, b = max(start - pos, 0), min(stop - pos, len(codes))
            if b > a:
                for i in range(a, b, _BLOCK):
                    ids = lut[codes[i : min(i + _BLOCK, b)]]
                    if ids.min() < 0:  # keep reading to name every unseen character
                        for j in np.flatnonzero(ids < 0):
                            unseen.setdefault(chr(codes[i + j]), pos + i + int(j) - start)
                    elif not unseen:
                        out.write(ids.astype(dtype).data)
            pos += len(codes)
            if pos >= stop:
                break
        else:
            raise DataError(
                f"'{scan.path}' changed since it was scanned: it ends before character {stop}"
            )
    if unseen:
        listed = ", ".join(f"{c!r} (first at position {p})" for c, p in unseen.items())
        raise DataError(
            f"{what} holds {len(unseen)} character(s) never seen in training: {listed}; "
            f"the model knows {int((lut >= 0).sum())} characters"
        )


# --------------------------------------------------------------------------- char corpus


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
    :func:`gatelab.data.batching.stream_batches`. Memory stays ``O(chunk + vocabulary)``
    while reading and ``O(batch x window)`` while training, whatever the file's size; the
    disk holds one id per character of the ranges asked for.

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
        self._setup(scan_text_corpus(path, chunk_bytes=chunk_bytes), vocab, cache_dir, chunk_bytes)

    def _setup(self, scan: CorpusScan, vocab, cache_dir, chunk_bytes: int) -> None:
        self.scan = scan
        self.vocab = vocab if vocab is not None else CharVocab.from_scan(scan)
        self.cache_dir = cache_dir
        self.chunk_bytes = chunk_bytes

    @classmethod
    def from_scan(
        cls,
        scan: CorpusScan,
        vocab: CharVocab | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> CharCorpus:
        """A corpus of a file scanned before (here or by another process, e.g. rank 0 of
        a data-parallel job, which sends the scan to the others): nothing is read until
        :meth:`ids` encodes a range, and then only that range's bytes (from the nearest
        chunk start of ``scan``)."""
        if not isinstance(scan, CorpusScan):
            raise TypeError(f"scan must be a CorpusScan, got {type(scan).__name__}")
        if vocab is not None and not isinstance(vocab, CharVocab):
            raise TypeError(f"vocab must be a CharVocab or None, got {type(vocab).__name__}")
        corpus = cls.__new__(cls)
        corpus._setup(scan, vocab, cache_dir, check_int("chunk_bytes", chunk_bytes))
        return corpus

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
