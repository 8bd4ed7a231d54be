"""UCR text files (label first: old space-separated .txt, 2018 .tsv, comma-separated),
format detection from the content, and ``LABEL ||| text`` files (SST)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatelab.data import (
    detect_series_format,
    read_labelled_series,
    read_labelled_text,
    read_ts,
    read_ucr_text,
)
from gatelab.errors import DataError
from tests.helpers import shared_data


def write(path: Path, content: str) -> Path:
    path.write_bytes(content.encode("utf-8"))
    return path


ROWS = [("1", [0.5, -1.0, 2.0, 3.25]), ("2", [1.0, 1.5, -2.0, 0.0]), ("1", [4.0, 3.0, 2.0, 1.0])]


def as_old_ucr(rows) -> str:
    # the old archive: label as a float, values in %e, runs of spaces, leading spaces
    return "".join(
        "  " + "  ".join(f"{v: .7e}" for v in [float(lab), *vals]) + "\n" for lab, vals in rows
    )


def as_sep(rows, sep: str) -> str:
    return "".join(sep.join([lab, *(repr(v) for v in vals)]) + "\n" for lab, vals in rows)


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (as_old_ucr(ROWS), "ucr-text"),
        (as_sep(ROWS, "\t"), "ucr-tsv"),
        (as_sep(ROWS, ","), "ucr-csv"),
    ],
)
def test_ucr_formats_read_the_same_values(tmp_path, content, fmt):
    # a misleading name: the content decides, never the suffix
    path = write(tmp_path / "Toy_TRAIN.ts", content)
    assert detect_series_format(path) == fmt
    ds = read_labelled_series(path)
    assert ds.format == fmt
    assert ds.labels == ["1", "2", "1"]
    assert ds.class_labels == ["1", "2"]
    assert ds.line_numbers == [1, 2, 3]
    for s, (_, vals) in zip(ds.series, ROWS):
        assert s.shape == (4, 1) and s.dtype == np.float32
        np.testing.assert_array_equal(s[:, 0], np.float32(vals))


def test_ts_content_under_a_txt_name_is_read_as_ts(tmp_path):
    content = "# c\n@problemName T\n@classLabel true a b\n@data\n1,2,3:a\n4,5,6:b\n"
    path = write(tmp_path / "T_TRAIN.txt", content)
    assert detect_series_format(path) == "ts"
    ds = read_labelled_series(path)
    ref = read_ts(path)
    assert ds.format == "ts" and ds.labels == ref.labels == ["a", "b"]
    assert ds.line_numbers == [5, 6]
    np.testing.assert_array_equal(ds.series[1][:, 0], [4, 5, 6])


def test_tsv_trailing_nan_is_padding_of_an_unequal_length_series(tmp_path):
    path = write(tmp_path / "U.tsv", "3\t1\t2\t3\tNaN\tNaN\n-1\t1\tNaN\t3\t4\t5\n")
    ds = read_ucr_text(path)
    assert [len(s) for s in ds.series] == [3, 5]
    assert ds.class_labels == ["-1", "3"]  # numeric order, not string order
    assert np.isnan(ds.series[1][1, 0])  # an inner NaN stays missing


def test_errors_name_the_line_and_token(tmp_path):
    bad = write(tmp_path / "bad.tsv", "1\t1\t2\n2\t1\tx\n")
    with pytest.raises(DataError, match=r"line 2: bad value 'x'"):
        read_ucr_text(bad)
    text = write(tmp_path / "words.txt", "hello world\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_labelled_series(text)
    empty = write(tmp_path / "nan.tsv", "1\tNaN\tNaN\n")
    with pytest.raises(DataError, match="only missing values"):
        read_ucr_text(empty)
    with pytest.raises(DataError, match="fmt='xls'"):
        read_ucr_text(bad, "xls")


def test_coffee_old_ucr_format():
    path = shared_data() / "timeseries/ucr/Coffee_TRAIN.txt"
    ds = read_labelled_series(path)
    assert ds.format == "ucr-text"
    assert len(ds) == 28 and ds.class_labels == ["0", "1"]
    assert {s.shape for s in ds.series} == {(286, 1)}
    # an independent parse of the first line
    first = path.read_text().split("\n")[0].split()
    assert ds.labels[0] == str(int(float(first[0])))
    np.testing.assert_array_equal(ds.series[0][:, 0], np.asarray(first[1:], dtype=np.float32))


def test_real_ts_files_still_read_as_ts():
    ds = read_labelled_series(shared_data() / "timeseries/ucr/PickupGestureWiimoteZ_TRAIN.ts")
    assert ds.format == "ts" and len(ds) == 50 and len(set(ds.lengths.tolist())) > 1


# ----------------------------------------------------------------------- LABEL ||| text


def test_sst_separator_is_sniffed_and_ptb_escapes_undone(tmp_path):
    path = write(
        tmp_path / "t.txt",
        '3 ||| a co-writer\\/director \'s film , 1\\/2 good\n0 ||| dull , "flat" \\* bad\n'
        "4 ||| truly great\n3 ||| quite fine\n0 ||| so meh\n4 ||| wow wow\n3 ||| ok then\n",
    )
    ds = read_labelled_text(path)
    assert ds.labels == ["3", "0", "4", "3", "0", "4", "3"]
    assert ds.texts == [
        "a co-writer/director 's film , 1/2 good",
        'dull , "flat" * bad',
        "truly great",
        "quite fine",
        "so meh",
        "wow wow",
        "ok then",
    ]
    same = read_labelled_text(path, delimiter="|||")
    assert same.texts == ds.texts


def test_separator_errors(tmp_path):
    path = write(tmp_path / "t.txt", "3 ||| good ||| extra\n0 ||| bad\n")
    with pytest.raises(DataError, match="line 2: found 2 columns"):
        read_labelled_text(path, text_column=1, label_column=0)
    with pytest.raises(DataError, match="delimiter must be a non-blank string"):
        read_labelled_text(path, delimiter=" ")


def test_sst5_real_files():
    folder = shared_data() / "sentiment/sst5"
    sizes = {"train": 8544, "dev": 1101, "test": 2210}
    for split, n in sizes.items():
        ds = read_labelled_text(folder / f"{split}.txt")
        assert len(ds) == n and ds.classes == ["0", "1", "2", "3", "4"]
        assert not any("\\/" in t for t in ds.texts)
    lines = (folder / "train.txt").read_text(encoding="utf-8").split("\n")
    ds = read_labelled_text(folder / "train.txt")
    label, _, text = lines[0].partition(" ||| ")
    assert (ds.labels[0], ds.texts[0]) == (label, text.strip().replace("\\/", "/"))
