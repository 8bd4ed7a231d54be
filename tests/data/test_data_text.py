"""Tests of gatelab.data.text: labelled text reading, tokenizer, vocabulary, labels, padding."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.data import (
    PAD_ID,
    UNK_ID,
    Labels,
    Tokenizer,
    Vocabulary,
    pad_sequences,
    read_labelled_text,
)
from gatelab.errors import DataError, GatelabError

FAST = settings(max_examples=60, deadline=None)


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------


def test_sst2_train_and_dev_counts(shared_data: Path) -> None:
    train = read_labelled_text(shared_data / "sentiment/sst2/train.tsv")
    dev = read_labelled_text(shared_data / "sentiment/sst2/dev.tsv")
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
def test_uci_sentences(shared_data: Path, name: str) -> None:
    ds = read_labelled_text(shared_data / f"sentiment/uci_labelled_sentences/{name}_labelled.txt")
    assert len(ds) == 1000
    assert Counter(ds.labels) == {"0": 500, "1": 500}
    assert not any("\r" in t for t in ds.texts)
    assert "sentence" not in ds.texts  # the header line is not a row


def test_uci_imdb_quirks_kept(shared_data: Path) -> None:
    ds = read_labelled_text(shared_data / "sentiment/uci_labelled_sentences/imdb_labelled.txt")
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


def test_rt_polarity_via_stem(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_labelled_text(shared_data / "sentiment/rt_polarity/rt-polarity")
    _check_rt(ds, caplog)


def test_rt_polarity_via_directory(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_labelled_text(shared_data / "sentiment/rt_polarity")
    _check_rt(ds, caplog)


def test_rt_polarity_via_file_list(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = shared_data / "sentiment/rt_polarity"
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


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


def test_tokenizer_tokens() -> None:
    tok = Tokenizer()
    assert tok("I don't think it's 3.5/10 -- 1,000 people’d say: WON'T!") == [
        "i", "do", "n't", "think", "it", "'s", "3.5", "/", "10", "-", "-",
        "1,000", "people", "'d", "say", ":", "wo", "n't", "!",
    ]  # fmt: skip
    # Already tokenised SST-2 / MR text tokenises the same way.
    assert tok("it 's not ca n't") == ["it", "'s", "not", "ca", "n't"]
    assert tok("  \x85 \n") == []
    assert tok("a\x85b") == ["a", "b"]
    assert Tokenizer(lower=False)("Don't GO") == ["Do", "n't", "GO"]


def test_tokenizer_dict_roundtrip() -> None:
    tok = Tokenizer(lower=False)
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "regex_word", "lower": False}
    assert Tokenizer.from_dict(d) == tok
    with pytest.raises(DataError, match="not a Tokenizer description"):
        Tokenizer.from_dict({"type": "bpe"})
    with pytest.raises(DataError, match="'lower' must be true or false, got 'yes'"):
        Tokenizer.from_dict({"type": "regex_word", "lower": "yes"})


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------


def test_vocabulary_order_and_limits() -> None:
    data = [["b", "a", "c", "b"], ["a", "b", "d", "<unk>"], ["c"]]
    v = Vocabulary.build(data)
    # b:3, a:2, c:2 (tie broken a < c), d:1; the literal '<unk>' is not counted.
    assert v.tokens == ["<pad>", "<unk>", "b", "a", "c", "d"]
    assert Vocabulary.build(data, min_freq=2).tokens == ["<pad>", "<unk>", "b", "a", "c"]
    assert Vocabulary.build(data, max_size=4).tokens == ["<pad>", "<unk>", "b", "a"]
    assert v.encode(["a", "zzz", "d", "<pad>"]) == [3, UNK_ID, 5, UNK_ID]
    assert v.decode([2, 3, PAD_ID]) == ["b", "a", "<pad>"]
    assert len(v) == 6
    assert v.unknown_fraction(["a", "x", "y", "b"]) == 0.5
    assert v.unknown_fraction([["a", "x"], ["y", "b", "c", "d"]]) == pytest.approx(2 / 6)


def test_vocabulary_dict_roundtrip_and_errors() -> None:
    v = Vocabulary.build([["x", "y", "x"]])
    d = json.loads(json.dumps(v.to_dict()))
    assert Vocabulary.from_dict(d) == v
    with pytest.raises(DataError, match=r"must start with '<pad>', '<unk>'; got \['x'"):
        Vocabulary(["x", "<pad>", "<unk>"])
    with pytest.raises(DataError, match=r"token 'x' appears twice \(ids 2 and 3\)"):
        Vocabulary(["<pad>", "<unk>", "x", "x"])
    with pytest.raises(DataError, match="token id 9 is out of range"):
        v.decode([9])
    with pytest.raises(DataError, match="min_freq must be an integer >= 1, got 0"):
        Vocabulary.build([["x"]], min_freq=0)
    with pytest.raises(DataError, match="max_size must be an integer >= 2"):
        Vocabulary.build([["x"]], max_size=1)
    with pytest.raises(DataError, match="item 0 is a str"):
        Vocabulary.build(["not tokenised"])
    with pytest.raises(DataError, match="no tokens"):
        v.unknown_fraction([])


@FAST
@given(st.lists(st.lists(st.text(min_size=1, max_size=4), max_size=8), max_size=8))
def test_vocabulary_encode_decode_roundtrip(token_lists: list[list[str]]) -> None:
    v = Vocabulary.build(token_lists)
    specials = {"<pad>", "<unk>"}
    for tokens in token_lists:
        known = [t for t in tokens if t not in specials]
        ids = v.encode(known)
        assert v.decode(ids) == known
        assert all(i >= 2 for i in ids)
    assert len(v) == 2 + len({t for ts in token_lists for t in ts} - specials)


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def test_labels_order_encode_decode() -> None:
    numeric = Labels.fit(["10", "9", "2", "9"])
    assert numeric.names == ("2", "9", "10")
    assert numeric.encode(["10", "2"]) == [2, 0]
    words = Labels.fit(["pos", "neg", "neutral"])
    assert words.names == ("neg", "neutral", "pos")
    assert words.decode([2, 0]) == ["pos", "neg"]
    assert Labels.from_dict(json.loads(json.dumps(words.to_dict()))) == words
    with pytest.raises(DataError, match=r"unknown class 'meh'; the known classes are"):
        words.encode(["meh"])
    with pytest.raises(DataError, match=r"class id 3 is out of range 0\.\.2"):
        words.decode([3])
    with pytest.raises(DataError, match=r"repeated: \['a'\]"):
        Labels(["a", "a"])


# --------------------------------------------------------------------------------------
# pad_sequences
# --------------------------------------------------------------------------------------


def test_pad_sequences_values() -> None:
    padded, lengths = pad_sequences([[5, 6, 7], [8], torch.tensor([9, 10])], pad_value=-1)
    assert padded.dtype == torch.long and lengths.dtype == torch.long
    assert padded.tolist() == [[5, 6, 7], [8, -1, -1], [9, 10, -1]]
    assert lengths.tolist() == [3, 1, 2]
    padded, lengths = pad_sequences([[1, 2, 3, 4], [5]], max_len=2)
    assert padded.tolist() == [[1, 2], [5, 0]]
    assert lengths.tolist() == [2, 1]


def test_pad_sequences_errors() -> None:
    with pytest.raises(DataError, match=r"sequence 1 is empty"):
        pad_sequences([[1], [], [2]])
    with pytest.raises(DataError, match="no sequences"):
        pad_sequences([])
    with pytest.raises(DataError, match=r"sequence 0 holds 1\.5"):
        pad_sequences([[1.5]])
    with pytest.raises(DataError, match=r"sequence 0 has dtype torch.float32"):
        pad_sequences([torch.ones(2)])
    with pytest.raises(DataError, match=r"shape \(2, 2\); expected 1-D"):
        pad_sequences([torch.ones(2, 2, dtype=torch.long)])
    with pytest.raises(DataError, match="max_len must be an integer >= 1"):
        pad_sequences([[1]], max_len=0)


@FAST
@given(
    st.lists(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=12), min_size=1),
    st.one_of(st.none(), st.integers(1, 15)),
)
def test_pad_sequences_roundtrip(seqs: list[list[int]], max_len: int | None) -> None:
    padded, lengths = pad_sequences(seqs, pad_value=7, max_len=max_len)
    expected = [s[:max_len] if max_len else s for s in seqs]
    assert lengths.tolist() == [len(s) for s in expected]
    assert padded.shape == (len(seqs), max(len(s) for s in expected))
    for row, n, s in zip(padded.tolist(), lengths.tolist(), expected):
        assert row[:n] == s
        assert row[n:] == [7] * (len(row) - n)
