"""Tests of gatelab.data.lines: files read as numbered lines, UTF-8 with a latin-1
fallback, split on ``"\\n"`` only, and refused before reading when too big."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gatelab.data.lines as lines
from gatelab.data.lines import (
    ASCII_WHITESPACE,
    LineStream,
    check_file,
    check_fits_in_memory,
    decode_bytes,
    decode_utf8,
    read_bytes,
    read_lines,
    split_lines,
)
from gatelab.errors import DataError

FAST = settings(max_examples=60, deadline=None)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------


def test_split_lines_numbers_lines_and_splits_on_newline_only() -> None:
    text = "a\r\n\nb\x85c\u2028d\x0ce\n  \t\nlast\r"
    assert split_lines(text) == [(1, "a"), (3, "b\x85c\u2028d\x0ce"), (5, "last")]
    assert split_lines(text, keep_blank=True) == [
        (1, "a"),
        (2, ""),
        (3, "b\x85c\u2028d\x0ce"),
        (4, "  \t"),
        (5, "last"),
    ]
    # the empty string after a final newline is not a line; one \r is stripped, not two
    assert split_lines("x\n") == [(1, "x")]
    assert split_lines("x\r\r\n") == [(1, "x\r")]
    assert split_lines("") == []


@FAST
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r")), max_size=8))
def test_split_lines_inverts_joining_with_newlines(parts: list[str]) -> None:
    text = "\n".join(parts)
    kept = split_lines(text, keep_blank=True)
    expected = parts[:-1] if parts and parts[-1] == "" else parts
    assert [line for _, line in kept] == expected
    assert [n for n, _ in kept] == list(range(1, len(expected) + 1))
    blank_free = [(n, s) for n, s in kept if s.strip(ASCII_WHITESPACE)]
    assert split_lines(text) == blank_free


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def test_decode_utf8_drops_a_byte_order_mark_and_names_the_first_bad_byte() -> None:
    assert decode_utf8("\ufeffdéjà".encode()) == ("déjà", -1)
    assert decode_utf8(b"ab\xe9cd") == (None, 2)
    assert decode_utf8(b"\xef\xbb\xbfab\xff") == (None, 5)  # offset counts the BOM


def test_decode_bytes_falls_back_to_latin1_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert decode_bytes("café".encode(), "f.txt") == ("café", "utf-8")
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="gatelab.data.lines"):
        text, encoding = decode_bytes(b"caf\xe9 \x85", "f.txt")
    assert (text, encoding) == ("café \x85", "latin-1")
    [record] = caplog.records
    assert record.getMessage() == (
        "f.txt is not valid UTF-8 (byte 0xe9 at offset 3); decoding it as latin-1"
    )


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def test_read_lines_of_a_crlf_latin1_file(tmp_path: Path) -> None:
    p = write(tmp_path / "t.txt", b"one\r\n\r\ntw\xf6\r\nthree")
    got = read_lines(p, what="test file")
    assert got.path == p
    assert got.lines == [(1, "one"), (3, "twö"), (4, "three")]
    assert got.encoding == "latin-1"
    assert got.ends_with_newline is False
    assert read_lines(write(tmp_path / "u.txt", b"x\n")).ends_with_newline is True


def test_missing_directory_empty_and_blank_files_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"test file not found: '.*nope' does not exist"):
        check_file(tmp_path / "nope", what="test file")
    with pytest.raises(DataError, match=r"test file '.*' is a directory; expected a file"):
        read_bytes(tmp_path, what="test file")
    with pytest.raises(DataError, match=r"'.*empty.txt' is empty \(0 bytes\)"):
        read_lines(write(tmp_path / "empty.txt", b""))
    with pytest.raises(DataError, match=r"'.*blank.txt' holds only blank lines"):
        read_lines(write(tmp_path / "blank.txt", b"  \n\t\r\n"))
    assert check_file(write(tmp_path / "ok.txt", b"x")) == tmp_path / "ok.txt"


def test_a_file_bigger_than_free_memory_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write(tmp_path / "big.txt", b"x" * 1000)
    monkeypatch.setattr(lines, "available_memory", lambda: 11_999)
    with pytest.raises(DataError, match=r"big file '.*big.txt' is 0.00 GiB.*12x its size"):
        read_bytes(p, what="big file")
    with pytest.raises(DataError, match=r"\(12x its size\).*read in chunks, but the lines stay"):
        read_lines(p, what="big file")
    check_fits_in_memory(p, factor=11.0)  # 11,000 bytes fit in 11,999
    monkeypatch.setattr(lines, "available_memory", lambda: None)  # unknown: no check
    assert read_bytes(p) == b"x" * 1000


# --------------------------------------------------------------------------------------
# Chunked reading
# --------------------------------------------------------------------------------------

PIECES = [b"a", b"\n", b"\r\n", b"\r", b" ", b"\t", "é".encode(), "中".encode(), "😀".encode()]
PIECES += [b"\xef\xbb\xbf", b"\xf6", b"\x85", "\u2028".encode()]


def whole_file_lines(path: Path, keep_blank: bool) -> tuple[list[tuple[int, str]], str]:
    """The oracle: the file read whole, decoded, split (the readers before chunking)."""
    data = path.read_bytes()
    text, encoding = decode_bytes(data, path)
    return split_lines(text, keep_blank=keep_blank), encoding


@FAST
@given(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=40),
    st.integers(1, 9),
    st.booleans(),
)
def test_line_stream_equals_the_whole_file_reader(tmp_path_factory, pieces, chunk, keep_blank):
    path = write(tmp_path_factory.mktemp("s") / "t.txt", b"".join(pieces))
    want, encoding = whole_file_lines(path, keep_blank)
    stream = LineStream(path, keep_blank=keep_blank, chunk_bytes=chunk)
    assert (list(stream), stream.encoding) == (want, encoding)
    assert list(stream) == want  # iterable again
    assert stream.ends_with_newline == path.read_bytes().endswith(b"\n")


def test_line_stream_warns_of_latin1_at_the_offset_of_the_whole_file_reader(tmp_path, caplog):
    path = write(tmp_path / "t.txt", "ok é\n".encode() * 5 + b"tw\xf6\n")
    with caplog.at_level(logging.WARNING, logger="gatelab.data.lines"):
        decode_bytes(path.read_bytes(), path)
        LineStream(path, chunk_bytes=4)
    first, second = (r.getMessage() for r in caplog.records)
    assert first == second and "byte 0xf6 at offset 32" in first
    with pytest.raises(ValueError, match="chunk_bytes=0; expected an int >= 1"):
        LineStream(path, chunk_bytes=0)
