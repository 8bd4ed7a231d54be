"""Tests of gatelab.data.corpus (text corpus) and gatelab.data.pairs (sentence pairs,
pair splits)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.data import PairsDataset, read_sentence_pairs, read_text_corpus, split_pairs
from gatelab.errors import DataError
from tests.helpers import shared_data

FAST = settings(max_examples=40, deadline=None)


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Text corpus
# --------------------------------------------------------------------------------------


def test_tinyshakespeare() -> None:
    text = read_text_corpus(shared_data() / "text/tinyshakespeare.txt")
    assert len(text) == 1_115_394  # ASCII: one character a byte
    assert text.count("\n") == 40_000
    assert text.startswith("First Citizen:\nBefore we proceed")
    assert len(set(text)) == 65


def test_text_corpus_kept_unchanged(tmp_path: Path) -> None:
    f = write(tmp_path / "c.txt", "\ufeffa\r\nb\x85c\n")
    assert read_text_corpus(f) == "a\r\nb\x85c\n"


def test_text_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.txt"):
        read_text_corpus(tmp_path / "missing.txt")
    with pytest.raises(DataError, match=r"e\.txt' is empty"):
        read_text_corpus(write(tmp_path / "e.txt", b""))
    with pytest.raises(DataError, match=r"bin\.txt' looks binary: NUL byte at offset 3"):
        read_text_corpus(write(tmp_path / "bin.txt", b"abc\x00def"))
    with pytest.raises(DataError, match=r"l1\.txt' is not UTF-8: byte 0xe9 at offset 3"):
        read_text_corpus(write(tmp_path / "l1.txt", b"caf\xe9\n"))
    with pytest.raises(DataError, match=r"bom\.txt' is not UTF-8: byte 0x85 at offset 5"):
        read_text_corpus(write(tmp_path / "bom.txt", b"\xef\xbb\xbfab\x85\n"))
    with pytest.raises(DataError, match=r"ws\.txt' holds only whitespace"):
        read_text_corpus(write(tmp_path / "ws.txt", " \n\n"))


# --------------------------------------------------------------------------------------
# Sentence pairs
# --------------------------------------------------------------------------------------


def test_eng_fra(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_sentence_pairs(shared_data() / "translation/eng-fra.txt")
    # 18,066 lines, all with one tab; the last is cut off mid-sentence ("Ils l'ont ").
    assert len(ds) == 18_065
    assert ds.skipped == [(18_066, "They did it again.\tIls l'ont ")]
    assert ds.pairs[0] == ("Go.", "Va !")
    assert ds.pairs[-1] == ("They deported Tom.", "Ils ont déporté Tom.")
    # Line 17924 lacks final punctuation but is whole: kept.
    assert ds.pairs[17_923] == ("The answer is yes.", "La réponse est : oui")
    assert ds.encoding == "utf-8"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "line 18066" in warnings[0]


def test_pairs_extra_columns_crlf_blank(tmp_path: Path) -> None:
    f = write(
        tmp_path / "p.txt",
        "Hi.\tSalut.\tCC-BY #1\r\n\r\nRun!\tCours\u00a0!\tCC-BY #2\r\nUh\x85oh.\tAïe.\tCC #3\r\n",
    )
    ds = read_sentence_pairs(f)
    assert ds.pairs == [("Hi.", "Salut."), ("Run!", "Cours\u00a0!"), ("Uh\x85oh.", "Aïe.")]
    assert ds.skipped == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("A.\tB.\nC.\tD.\nE. cut", "no tab"),
        ("A.\tB.\nC.\tD.\nE.\tF ends \n", "ends in whitespace"),
        ("A.\tB.\nC.\tD.\nE.\t\n", "one side is empty"),
        ("A.\tB.\tx\nC.\tD.\ty\nE.\tF.\n", "2 tab-separated fields, the other lines 3"),
        ("A.\tB.\nC.\tD.\nE.\tF mid", "without a newline"),
    ],
)
def test_cut_off_last_line_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, reason: str
) -> None:
    f = write(tmp_path / "p.txt", content)
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_sentence_pairs(f)
    assert ds.pairs == [("A.", "B."), ("C.", "D.")]
    assert [n for n, _ in ds.skipped] == [3]
    assert ds.skipped[0][1] == content.split("\n")[2]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "line 3" in message and reason in message


def test_whole_last_line_kept_without_newline(tmp_path: Path) -> None:
    ds = read_sentence_pairs(write(tmp_path / "p.txt", "A.\tB.\nC.\tD."))
    assert ds.pairs == [("A.", "B."), ("C.", "D.")]
    assert ds.skipped == []


def test_pairs_errors(tmp_path: Path) -> None:
    no_tab = write(tmp_path / "a.txt", "A.\tB.\nno tab here\nC.\tD.\n")
    with pytest.raises(DataError, match=r"line 2: no tab; expected 'source<TAB>target'"):
        read_sentence_pairs(no_tab)
    empty_side = write(tmp_path / "b.txt", "A.\tB.\n\n \tD.\nE.\tF.\n")
    with pytest.raises(DataError, match=r"line 3: empty source"):
        read_sentence_pairs(empty_side)
    with pytest.raises(DataError, match=r"c\.txt' is empty"):
        read_sentence_pairs(write(tmp_path / "c.txt", b""))
    with pytest.raises(DataError, match=r"d\.txt"):
        read_sentence_pairs(tmp_path / "d.txt")
    with pytest.raises(DataError, match="no sentence pairs"):
        read_sentence_pairs(write(tmp_path / "e.txt", "just a cut line"))


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 200),
    valid=st.integers(0, 50),
    test=st.integers(0, 50),
    seed=st.integers(0, 99),
)
def test_split_pairs_properties(n: int, valid: int, test: int, seed: int) -> None:
    pairs = [(f"s{i}", f"t{i}") for i in range(n)]
    if valid + test >= n:
        with pytest.raises(DataError, match="leaves no training pair"):
            split_pairs(pairs, valid=valid, test=test, seed=seed)
        return
    parts = split_pairs(pairs, valid=valid, test=test, seed=seed)
    assert (len(parts.valid), len(parts.test)) == (valid, test)
    assert len(parts.train) == n - valid - test
    joined = parts.train + parts.valid + parts.test
    assert sorted(joined) == sorted(pairs)  # disjoint and complete
    for part in parts:
        idx = [int(s[1:]) for s, _ in part]
        assert idx == sorted(idx)  # file order kept
    assert split_pairs(pairs, valid=valid, test=test, seed=seed) == parts


def test_split_pairs_defaults_and_errors(tmp_path: Path) -> None:
    pairs = [(str(i), str(i)) for i in range(2500)]
    train, valid, test = split_pairs(pairs)
    assert (len(train), len(valid), len(test)) == (500, 1000, 1000)
    assert split_pairs(pairs, seed=1).test != test
    ds = PairsDataset(pairs=pairs[:10])
    assert len(split_pairs(ds, valid=2, test=3).train) == 5
    with pytest.raises(DataError, match="valid must be an integer >= 0, got -1"):
        split_pairs(pairs, valid=-1)
