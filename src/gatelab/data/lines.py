"""Reading text files as numbered lines, the way every loader in :mod:`gatelab.data` does.

Files are read as bytes and decoded as UTF-8 (a leading byte-order mark is dropped). A
file that is not valid UTF-8 is decoded as latin-1 instead, and a warning naming the file
is logged: never silently. Lines are split on ``"\\n"`` only and a trailing ``"\\r"`` is
removed (CRLF files); :meth:`str.splitlines` is never used, because real data holds
characters such as NEL (U+0085), form feed or U+2028 inside lines, and ``splitlines``
would break lines there.
"""

from __future__ import annotations

import logging
import os
from codecs import BOM_UTF8
from dataclasses import dataclass
from pathlib import Path

from gatelab.errors import DataError

__all__ = [
    "ASCII_WHITESPACE",
    "TextLines",
    "available_memory",
    "check_file",
    "check_fits_in_memory",
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


def check_fits_in_memory(
    path: PathLike, *, what: str = "file", factor: float = READ_WHOLE_FACTOR
) -> None:
    """Refuse, before reading, a file that needs more memory than the system has free.

    A loader whose result is held in memory whole (labelled text, series, sentence
    pairs) needs about ``factor`` times the file's size; past the free memory the system
    would swap for minutes or kill the process, so a DataError says so at once.

    Raises:
        DataError: ``size * factor`` exceeds :func:`available_memory`; the message names
            the file, both sizes, and the loaders that stream instead.
    """
    size = Path(path).stat().st_size
    free = available_memory()
    if free is None or size * factor <= free:
        return
    gib = 1024**3
    raise DataError(
        f"{what} '{path}' is {size / gib:.2f} GiB; reading it whole needs about "
        f"{size * factor / gib:.1f} GiB of memory ({factor:g}x its size) and only "
        f"{free / gib:.1f} GiB is available. This format is read whole; split the file, "
        "or use a streaming reader (the character LM streams a text corpus of any size: "
        "gatelab.data.corpus.CharCorpus)"
    )


def read_bytes(path: PathLike, *, what: str = "file", factor: float = READ_WHOLE_FACTOR) -> bytes:
    """Read a whole file; a missing path, a directory or an empty file raises DataError.

    A file too big for the free memory is refused before it is read
    (:func:`check_fits_in_memory`).

    Args:
        path: the file.
        what: a few words saying what the file is for, used in messages.
        factor: the memory the caller needs, in multiples of the file's size.

    Returns:
        The file's bytes (never empty).
    """
    p = check_file(path, what=what)
    check_fits_in_memory(p, what=what, factor=factor)
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
    p = Path(path)
    data = read_bytes(p, what=what)
    text, encoding = decode_bytes(data, p)
    lines = split_lines(text)
    if not lines:
        raise DataError(f"{what} '{p}' holds only blank lines; expected text")
    return TextLines(path=p, lines=lines, encoding=encoding, ends_with_newline=data.endswith(b"\n"))
