"""Tests of gatelab.data.text: labelled text reading."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from gatelab.data import read_labelled_text
from gatelab.errors import DataError, GatelabError
from tests.helpers import shared_data


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------


def test_sst2_train_and_dev_counts() -> None:
    train = read_labelled_text(shared_data() / "sentiment/sst2/train.tsv")
    dev = read_labelled_text(shared_data() / "sentiment/sst2/dev.tsv")
    assert len(train) == 67_349
    assert len(dev) == 872
    # Counted independently with awk on the label column.
    assert Counter(train.labels) == {"1": 37_569, "0": 29_780}
    assert Counter(dev.labels) == {"1": 444, "0": 428}
    assert train.classes == ["0", "1"]
    assert train.texts[0] == "hide new secretions from the parental units"
    assert dev.texts[0] == "one long string of cliches ."
    # train.tsv is CRLF with header 'label\tsentence'; dev.tsv is LF with 'label\tcontent'.
    assert not any("\r" in t for t in train.texts)
    assert train.encoding == dev.encoding == "utf-8"


@pytest.mark.parametrize("name", ["amazon_cells", "imdb", "yelp"])
def test_uci_sentences(name: str) -> None:
    ds = read_labelled_text(shared_data() / f"sentiment/uci_labelled_sentences/{name}_labelled.txt")
    assert len(ds) == 1000
    assert Counter(ds.labels) == {"0": 500, "1": 500}
    assert not any("\r" in t for t in ds.texts)
    assert "sentence" not in ds.texts  # the header line is not a row


def test_uci_imdb_quirks_kept() -> None:
    ds = read_labelled_text(shared_data() / "sentiment/uci_labelled_sentences/imdb_labelled.txt")
    # File line 180 holds a NEL (U+0085) inside the sentence: still one row.
    assert ds.texts[178] == "The script is\x85was there a script?"
    assert ds.labels[178] == "0"
    assert sum(t.count("\x85") for t in ds.texts) == 2
    # File line 21 opens with an unbalanced quote: read literally, no CSV quoting in TSV.
    assert ds.texts[19].startswith('" The structure of this film')
    assert ds.labels[19] == "1"


def _check_rt(ds, caplog: pytest.LogCaptureFixture) -> None:
    assert len(ds) == 10_662
    assert Counter(ds.labels) == {"neg": 5331, "pos": 5331}
    assert ds.encoding == "latin-1"
    assert ds.classes == ["neg", "pos"]
    pos = [t for t, lab in zip(ds.texts, ds.labels) if lab == "pos"]
    neg = [t for t, lab in zip(ds.texts, ds.labels) if lab == "neg"]
    # 0x85 bytes counted in the raw files (13 and 10) survive inside lines as U+0085.
    assert sum(t.count("\x85") for t in pos) == 13
    assert sum(t.count("\x85") for t in neg) == 10
    assert neg[0] == "simplistic , silly and tedious ."
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert {Path(str(r.args[0])).name for r in warned} == {"rt-polarity.pos", "rt-polarity.neg"}
    assert all("latin-1" in r.getMessage() for r in warned)


def test_rt_polarity_via_stem(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_labelled_text(shared_data() / "sentiment/rt_polarity/rt-polarity")
    _check_rt(ds, caplog)


def test_rt_polarity_via_directory(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_labelled_text(shared_data() / "sentiment/rt_polarity")
    _check_rt(ds, caplog)


def test_rt_polarity_via_file_list(caplog: pytest.LogCaptureFixture) -> None:
    d = shared_data() / "sentiment/rt_polarity"
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_labelled_text([d / "rt-polarity.pos", d / "rt-polarity.neg"])
    _check_rt(ds, caplog)


# --------------------------------------------------------------------------------------
# Small files
# --------------------------------------------------------------------------------------


def test_csv_with_header_and_quoting(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.csv",
        'Review,Sentiment\n"hello, world",pos\n"she said ""hi""",neg\n'
        '"two\nlines",pos\nplain,neg\n',
    )
    ds = read_labelled_text(f)
    assert ds.texts == ["hello, world", 'she said "hi"', "two\nlines", "plain"]
    assert ds.labels == ["pos", "neg", "pos", "neg"]
    assert ds.path == f


def test_tsv_header_crlf_blank_lines_and_odd_characters(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.tsv",
        "LABEL\tText\r\n1\tone\x85two\r\n\r\n   \r\n0\tthree\u2028four\x0cfive\r\n",
    )
    ds = read_labelled_text(f)
    assert ds.texts == ["one\x85two", "three\u2028four\x0cfive"]
    assert ds.labels == ["1", "0"]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", b"\xef\xbb\xbftext\tlabel\nx y\ta\nz\tb\n")
    ds = read_labelled_text(f)
    assert ds.texts == ["x y", "z"]
    assert ds.encoding == "utf-8"


def test_headerless_two_columns_label_last_and_first(tmp_path: Path) -> None:
    last = write(tmp_path / "last.tsv", "good film\t1\nbad film\t0\nok film\t1\nmeh\t0\n")
    first = write(
        tmp_path / "first.csv", "neg,awful movie\npos,great movie\nneg,dull one\npos,fine one\n"
    )
    ds = read_labelled_text(last)
    assert ds.texts == ["good film", "bad film", "ok film", "meh"]
    assert ds.labels == ["1", "0", "1", "0"]
    ds = read_labelled_text(first)
    assert ds.texts == ["awful movie", "great movie", "dull one", "fine one"]
    assert ds.labels == ["neg", "pos", "neg", "pos"]


def test_columns_by_name_and_index(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "id\tphrase\tclass\n1\tx y\tA\n2\tz w\tB\n")
    by_name = read_labelled_text(f, text_column="Phrase", label_column="class")
    assert by_name.texts == ["x y", "z w"]
    assert by_name.labels == ["A", "B"]
    by_index = read_labelled_text(f, text_column=1, label_column=2)
    assert by_index.texts == by_name.texts
    assert by_index.labels == by_name.labels
    headerless = write(tmp_path / "b.tsv", "1\tx y\tA\n2\tz w\tB\n3\tv\tA\n")
    ds = read_labelled_text(headerless, text_column=1, label_column=2)
    assert ds.texts == ["x y", "z w", "v"]
    assert ds.labels == ["A", "B", "A"]


def test_guessed_header_is_explained(tmp_path: Path) -> None:
    # Two headerless rows with different labels: the first line cannot be told from an
    # unnamed header, and the error says why it was taken as one.
    f = write(tmp_path / "b.tsv", "1\tx y\tA\n2\tz w\tB\n")
    with pytest.raises(DataError, match=r"line 1 was taken as a header: its label 'A'"):
        read_labelled_text(f, text_column=1, label_column=2)


def test_header_with_one_known_name_two_columns(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "phrase\tlabel\nx y\t1\nz\t0\n")
    ds = read_labelled_text(f)
    assert ds.texts == ["x y", "z"]
    assert ds.labels == ["1", "0"]


def test_explicit_delimiter(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "text;label\na, b\tc;x\nd;y\n")
    ds = read_labelled_text(f, delimiter=";")
    assert ds.texts == ["a, b\tc", "d"]
    assert ds.labels == ["x", "y"]


def test_latin1_fallback_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\ncaf\xe9\tpos\nna\xefve\tneg\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_labelled_text(f)
    assert ds.texts == ["café", "naïve"]
    assert ds.encoding == "latin-1"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(f) in caplog.records[0].getMessage()
    assert "byte 0xe9 at offset 14" in caplog.records[0].getMessage()


def test_per_class_files_tmp(tmp_path: Path) -> None:
    write(tmp_path / "mr.pos", "good\n\nfine film\n")
    write(tmp_path / "mr.neg", "bad\r\n")
    write(tmp_path / "other.txt", "not read\n")
    ds = read_labelled_text(tmp_path / "mr")
    assert ds.texts == ["bad", "good", "fine film"]
    assert ds.labels == ["neg", "pos", "pos"]
    assert ds.files == (tmp_path / "mr.neg", tmp_path / "mr.pos")
    assert ds.encoding == "utf-8"


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_error_is_a_value_error() -> None:
    assert issubclass(DataError, GatelabError)
    assert issubclass(DataError, ValueError)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.tsv"):
        read_labelled_text(tmp_path / "nope.tsv")


def test_empty_file(tmp_path: Path) -> None:
    f = write(tmp_path / "empty.tsv", b"")
    with pytest.raises(DataError, match=r"empty\.tsv' is empty"):
        read_labelled_text(f)
    blank = write(tmp_path / "blank.tsv", "\n \r\n")
    with pytest.raises(DataError, match="only blank lines"):
        read_labelled_text(blank)


def test_unrecognised_header_lists_header_and_accepted_names(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "phrase\tclass\nx y\t1\nz w\t0\n")
    with pytest.raises(DataError) as info:
        read_labelled_text(f)
    msg = str(info.value)
    assert "['phrase', 'class']" in msg
    assert "'sentence'" in msg and "'sentiment'" in msg


def test_header_without_text_column(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "id\tLabel\tbody\n1\t0\tx\n2\t1\ty\n")
    with pytest.raises(
        DataError, match=r"no recognisable text column in the header \['id', 'Label', 'body'\]"
    ):
        read_labelled_text(f)
    assert read_labelled_text(f, text_column="body").texts == ["x", "y"]


def test_no_label_like_column_headerless(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "a b\tc d\ne f\tg h\n")
    with pytest.raises(DataError, match="no recognisable text/label columns"):
        read_labelled_text(f)


def test_three_columns_headerless_needs_columns(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "1\tx y\tA\n2\tz w\tB\n")
    with pytest.raises(DataError, match="3 columns"):
        read_labelled_text(f)


def test_single_class(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\nx\tpos\ny\tpos\n")
    with pytest.raises(DataError, match=r"single class 'pos' in all 2 rows"):
        read_labelled_text(f)


def test_wrong_number_of_columns_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\nx\t1\n\ny\t0\textra\nz\t1\n")
    with pytest.raises(DataError, match=r"line 4: found 3 columns .* expected 2"):
        read_labelled_text(f)


def test_unterminated_quote_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", 'text,label\nx,1\n"open,0\n')
    with pytest.raises(DataError, match=r"line 3"):
        read_labelled_text(f)


def test_line_numbers_after_multiline_field(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", 'text,label\n"a\nb\nc",1\nd,0,9\n')
    with pytest.raises(DataError, match=r"line 5: found 3 columns"):
        read_labelled_text(f)


def test_empty_text_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\nx\t1\n \t0\n")
    with pytest.raises(DataError, match=r"line 3: empty text"):
        read_labelled_text(f)


def test_header_only(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\n")
    with pytest.raises(DataError, match="no data rows"):
        read_labelled_text(f)


def test_no_delimiter(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "just text\nmore text\n")
    with pytest.raises(DataError, match="neither a tab nor a comma"):
        read_labelled_text(f)


def test_bad_column_name_and_index(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\nx\t1\ny\t0\n")
    with pytest.raises(DataError, match=r"no column named 'body'.*\['text', 'label'\]"):
        read_labelled_text(f, text_column="body")
    with pytest.raises(DataError, match=r"column index 5 is out of range"):
        read_labelled_text(f, label_column=5)


def test_ambiguous_header(tmp_path: Path) -> None:
    f = write(tmp_path / "a.tsv", "text\tlabel\tsentiment\nx\t1\tpos\ny\t0\tneg\n")
    with pytest.raises(DataError, match=r"several label columns \('label', 'sentiment'\)"):
        read_labelled_text(f)
    ds = read_labelled_text(f, label_column="sentiment")
    assert ds.labels == ["pos", "neg"]


def test_stem_without_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'mr\.<class>'"):
        read_labelled_text(tmp_path / "mr")


def test_one_class_directory(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x\n")
    write(tmp_path / "b.txt", "y\n")
    with pytest.raises(DataError, match=r"single class 'txt'"):
        read_labelled_text(tmp_path)


def test_per_class_file_without_suffix(tmp_path: Path) -> None:
    f = write(tmp_path / "README", "x\n")
    with pytest.raises(DataError, match=r"README' has no suffix"):
        read_labelled_text([f, write(tmp_path / "x.pos", "y\n")])


def test_per_class_empty_file_named(tmp_path: Path) -> None:
    write(tmp_path / "mr.pos", "good\n")
    write(tmp_path / "mr.neg", b"")
    with pytest.raises(DataError, match=r"mr\.neg' is empty"):
        read_labelled_text(tmp_path / "mr")


def test_table_options_rejected_for_per_class(tmp_path: Path) -> None:
    write(tmp_path / "mr.pos", "good\n")
    write(tmp_path / "mr.neg", "bad\n")
    with pytest.raises(DataError, match="text_column=0 given"):
        read_labelled_text(tmp_path / "mr", text_column=0)
