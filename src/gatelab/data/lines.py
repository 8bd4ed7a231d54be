"""Reading text files as numbered lines, the way every loader in :mod:`gatelab.data` does.

Files are read as bytes and decoded as UTF-8 (a leading byte-order mark is dropped). A
file that is not valid UTF-8 is decoded as latin-1 instead, and a warning naming the file
is logged: never silently. Lines are split on ``"\\n"`` only and a trailing ``"\\r"`` is
removed (CRLF files); :meth:`str.splitlines` is never used, because real data holds
characters such as NEL (U+0085), form feed or U+2028 inside lines, and ``splitlines``
would break lines there.
"""

from __future__ import annotations

import codecs
import logging
import os
from codecs import BOM_UTF8
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gatelab.errors import DataError

__all__ = [
    "ASCII_WHITESPACE",
    "LINE_CHUNK_BYTES",
    "PAIRS_FACTOR",
    "TABLE_FACTOR",
    "UCR_FACTOR",
    "LineStream",
    "TextLines",
    "available_memory",
    "check_file",
    "check_fits_in_memory",
    "chunked_why",
    "decode_bytes",
    "decode_utf8",
    "read_bytes",
    "read_lines",
    "split_lines",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The whitespace loaders strip around lines and fields. Other Unicode whitespace (NEL
#: U+0085, U+2028, no-break space) is content: in latin-1 files NEL stands for an
#: ellipsis, so it is kept.
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


@dataclass(frozen=True)
class TextLines:
    """The lines of one text file.

    Attributes:
        path: the file read.
        lines: ``(line_number, text)`` pairs, 1-based line numbers as an editor shows
            them, the ``"\\n"`` and a trailing ``"\\r"`` removed. Blank lines (empty or
            ASCII whitespace only) are left out, so numbers can jump.
        encoding: ``"utf-8"`` or ``"latin-1"`` (the fallback).
        ends_with_newline: whether the file's last byte is ``"\\n"``.
    """

    path: Path
    lines: list[tuple[int, str]]
    encoding: str
    ends_with_newline: bool


def check_file(path: PathLike, *, what: str = "file") -> Path:
    """``path`` as a Path; a missing path, a directory or an empty file raises DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: '{p}' does not exist")
    if p.is_dir():
        raise DataError(f"{what} '{p}' is a directory; expected a file")
    if p.stat().st_size == 0:
        raise DataError(f"{what} '{p}' is empty (0 bytes); expected text")
    return p


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux ``MemAvailable``).

    ``None`` where it cannot be told (then no size check is made).
    """
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


#: How many times its size in bytes a text file takes in memory once read whole, decoded
#: and split into lines or fields (Python strings and lists). Peak RSS growth measured on
#: 20 MB files: labelled text (TSV) 9.8x, a .ts file 3.1x; sentence pairs ask for 16x
#: (the translator's pipeline, 13.9x), the series CSV reader for 80x (69x measured).
READ_WHOLE_FACTOR = 12.0

#: The same for the line-per-example formats read in chunks (:class:`LineStream`), where
#: memory holds only the result. Peak RSS growth measured on 20-30 MB files of short lines
#: (chunked; whole before): labelled text 6.0x (10.8x; the rows as Python objects, ~330
#: bytes for a line of 70), sentence pairs 4.2x (9.6x), UCR series 0.74x (3.2x).
TABLE_FACTOR = 8.0
PAIRS_FACTOR = 6.0
UCR_FACTOR = 1.5

#: Why a format read whole cannot be read in chunks, and what to do instead.
READ_WHOLE = (
    "This format is read whole; split the file, or use a streaming reader (the character "
    "LM streams a text corpus of any size: gatelab.data.corpus.CharCorpus)"
)


def check_fits_in_memory(
    path: PathLike,
    *,
    what: str = "file",
    factor: float = READ_WHOLE_FACTOR,
    why: str = READ_WHOLE,
) -> None:
    """Refuse, before reading, a file that needs more memory than the system has free.

    A loader whose result is held in memory (labelled text, series, sentence pairs)
    needs about ``factor`` times the file's size: the file's bytes, text and lines too
    for a format read whole, only the result for one read in chunks (a line per example);
    past the free memory the system would swap for minutes or kill the process, so a
    DataError says so at once.

    Args:
        path: the file.
        what: a few words saying what the file is for, used in messages.
        factor: the memory needed, in multiples of the file's size.
        why: the end of the message: why the format needs that much, and what to do.

    Raises:
        DataError: ``size * factor`` exceeds :func:`available_memory`; the message names
            the file, both sizes, the free memory and ``why``.
    """
    size = Path(path).stat().st_size
    free = available_memory()
    if free is None or size * factor <= free:
        return
    gib = 1024**3
    raise DataError(
        f"{what} '{path}' is {size / gib:.2f} GiB; reading it needs about "
        f"{size * factor / gib:.1f} GiB of memory ({factor:g}x its size) and only "
        f"{free / gib:.1f} GiB is available. {why}"
    )


def chunked_why(holds: str) -> str:
    """The ``why`` of :func:`check_fits_in_memory` for a format read in chunks whose result,
    ``holds``, does not fit."""
    return (
        f"The file is read in chunks, but {holds} stay in memory; split the file and "
        "train on a part, or on a machine with more memory"
    )


def read_bytes(
    path: PathLike, *, what: str = "file", factor: float = READ_WHOLE_FACTOR, why: str = READ_WHOLE
) -> bytes:
    """Read a whole file; a missing path, a directory or an empty file raises DataError.

    A file too big for the free memory is refused before it is read
    (:func:`check_fits_in_memory`).

    Args:
        path: the file.
        what: a few words saying what the file is for, used in messages.
        factor: the memory the caller needs, in multiples of the file's size.
        why: why the file is read whole, and what to do instead (in the refusal).

    Returns:
        The file's bytes (never empty).
    """
    p = check_file(path, what=what)
    check_fits_in_memory(p, what=what, factor=factor, why=why)
    return p.read_bytes()


def decode_bytes(data: bytes, path: PathLike) -> tuple[str, str]:
    """Decode file contents as UTF-8, falling back to latin-1 with a logged warning.

    Args:
        data: the raw bytes.
        path: the file they came from, named in the warning.

    Returns:
        ``(text, encoding)`` with encoding ``"utf-8"`` or ``"latin-1"``.
    """
    text, bad = decode_utf8(data)
    if text is not None:
        return text, "utf-8"
    logger.warning(
        "%s is not valid UTF-8 (byte 0x%02x at offset %d); decoding it as latin-1",
        path,
        data[bad],
        bad,
    )
    return data.decode("latin-1"), "latin-1"


def decode_utf8(data: bytes) -> tuple[str | None, int]:
    """Decode UTF-8, dropping a leading byte-order mark.

    Returns:
        ``(text, -1)``, or ``(None, offset)`` with the file offset of the first byte that
        is not UTF-8.
    """
    bom = len(BOM_UTF8) if data.startswith(BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8"), -1
    except UnicodeDecodeError as exc:
        return None, bom + exc.start


def split_lines(text: str, *, keep_blank: bool = False) -> list[tuple[int, str]]:
    """Split text on ``"\\n"`` only, strip one trailing ``"\\r"`` per line, number the lines.

    Args:
        text: decoded file contents.
        keep_blank: keep empty and ASCII-whitespace-only lines (default: drop them).

    Returns:
        ``(line_number, line)`` pairs with 1-based line numbers. The empty string after a
        final ``"\\n"`` is not a line.
    """
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    out: list[tuple[int, str]] = []
    for number, line in enumerate(parts, start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if keep_blank or line.strip(ASCII_WHITESPACE):
            out.append((number, line))
    return out


#: Bytes a :class:`LineStream` reads at a time (1 MiB).
LINE_CHUNK_BYTES = 1 << 20


class LineStream:
    """The numbered lines of a text file, read in chunks: memory holds one chunk and the
    line being assembled, whatever the file's size.

    Iterating gives what ``split_lines(decode_bytes(file)[0], keep_blank=keep_blank)``
    gives for the whole file (the rules of the module's docstring), each time it is
    iterated. The encoding is settled before the first line by a pass of chunked reads:
    UTF-8 if the whole file is UTF-8, else latin-1 (the warning of :func:`decode_bytes`,
    naming the byte and its offset), so that a late non-UTF-8 byte never leaves earlier
    lines decoded another way.

    Args:
        path: the file (a missing path, a directory or an empty file raises DataError).
        what: a few words saying what the file is for, used in messages.
        keep_blank: also yield empty and ASCII-whitespace-only lines.
        chunk_bytes: bytes read at a time (>= 1; default :data:`LINE_CHUNK_BYTES`).
        factor, holds: when ``factor`` is given, a file whose result (``holds``, kept in
            memory by the caller) would need more than the free memory, ``factor`` times
            the file's size, is refused before it is read (:func:`check_fits_in_memory`).

    Attributes:
        path, encoding (``"utf-8"`` or ``"latin-1"``), ends_with_newline, size (bytes).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        what: str = "file",
        keep_blank: bool = False,
        chunk_bytes: int | None = None,
        factor: float | None = None,
        holds: str = "the lines",
    ) -> None:
        if chunk_bytes is None:
            chunk_bytes = LINE_CHUNK_BYTES
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes={chunk_bytes!r}; expected an int >= 1")
        self.path = check_file(path, what=what)
        if factor is not None:
            check_fits_in_memory(self.path, what=what, factor=factor, why=chunked_why(holds))
        self.keep_blank = keep_blank
        self.chunk_bytes = chunk_bytes
        self.size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            self._bom = len(BOM_UTF8) if f.read(len(BOM_UTF8)) == BOM_UTF8 else 0
            f.seek(self.size - 1)
            self.ends_with_newline = f.read(1) == b"\n"
        self.encoding = self._settle_encoding()

    def _chunks(self, start: int) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            f.seek(start)
            while block := f.read(self.chunk_bytes):
                yield block

    def _settle_encoding(self) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = self._bom  # bytes handed to the decoder so far
        for block in self._chunks(self._bom):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad = offset - pending + exc.start
                logger.warning(
                    "%s is not valid UTF-8 (byte 0x%02x at offset %d); decoding it as latin-1",
                    self.path,
                    exc.object[exc.start],
                    bad,
                )
                return "latin-1"
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a character
            logger.warning(
                "%s is not valid UTF-8 (byte 0x%02x at offset %d); decoding it as latin-1",
                self.path,
                exc.object[exc.start],
                offset - len(exc.object) + exc.start,
            )
            return "latin-1"
        return "utf-8"

    def __iter__(self) -> Iterator[tuple[int, str]]:
        decoder = codecs.getincrementaldecoder(self.encoding)()
        start = self._bom if self.encoding == "utf-8" else 0
        number, tail = 0, ""
        for block in self._chunks(start):
            parts = (tail + decoder.decode(block)).split("\n")
            tail = parts.pop()  # the line still open at the chunk's end
            for line in parts:
                number += 1
                if line.endswith("\r"):
                    line = line[:-1]
                if self.keep_blank or line.strip(ASCII_WHITESPACE):
                    yield number, line
        tail += decoder.decode(b"", final=True)
        if tail:  # the last line, without a final newline
            if tail.endswith("\r"):
                tail = tail[:-1]
            if self.keep_blank or tail.strip(ASCII_WHITESPACE):
                yield number + 1, tail


def read_lines(path: PathLike, *, what: str = "file") -> TextLines:
    """Read a text file as numbered lines (see the module docstring for the rules).

    Args:
        path: the file.
        what: a few words saying what the file is for, used in messages.

    Returns:
        A :class:`TextLines`.

    Raises:
        DataError: the file is missing, a directory, empty, or holds only blank lines.
    """
    # read in chunks: memory holds the lines, not the file's bytes and text besides; the
    # callers (.ts files, one file per class) parse them all, so the whole-file check holds
    stream = LineStream(path, what=what, factor=READ_WHOLE_FACTOR, holds="the lines")
    lines = list(stream)
    if not lines:
        raise DataError(f"{what} '{stream.path}' holds only blank lines; expected text")
    return TextLines(
        path=stream.path,
        lines=lines,
        encoding=stream.encoding,
        ends_with_newline=stream.ends_with_newline,
    )
