"""Tests of gatelab.data.series, series_csv and windows: .ts files, numeric CSV columns,
forecasting windows, splits, scaling."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gatelab.data import Scaler, make_windows, read_series_csv, read_ts, split_series
from gatelab.errors import DataError
from tests.helpers import shared_data

FAST = settings(max_examples=60, deadline=None)

HEADER = "#comment\n@problemName Toy\n@timeStamps false\n@missing true\n"


def write(path: Path, content: str) -> Path:
    path.write_bytes(content.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# .ts files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "n", "counts"), [("TRAIN", 67, (34, 33)), ("TEST", 1029, (513, 516))]
)
def test_italy_power_demand(split: str, n: int, counts: tuple) -> None:
    ds = read_ts(shared_data() / f"timeseries/ucr/ItalyPowerDemand_{split}.ts")
    assert len(ds) == n
    assert ds.problem_name == "ItalyPowerDemand"
    assert ds.class_labels == ["1", "2"]
    # Label counts from `grep -c ':1$'` / `grep -c ':2$'` on the file.
    assert (ds.labels.count("1"), ds.labels.count("2")) == counts
    assert ds.n_channels == 1
    X, lengths = ds.to_padded()
    assert X.shape == (n, 24, 1) and X.dtype == np.float32
    assert lengths.tolist() == [24] * n
    assert not np.isnan(X).any()
    if split == "TRAIN":
        assert X[0, :3, 0].tolist() == pytest.approx([-0.71051757, -1.1833204, -1.3724416])
        assert ds.labels[:3] == ["1", "1", "2"]
    else:
        assert X[-1, 0, 0] == pytest.approx(-0.58214415)


def test_ts_multivariate_variable_length_missing(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.ts",
        HEADER + "@univariate false\n@equalLength false\n@classLabel true up down\n@data\n"
        "1,2,3:4,5,6:up\n\n7,?:8,9:down\r\n",
    )
    ds = read_ts(f)
    assert ds.labels == ["up", "down"]
    assert ds.class_labels == ["up", "down"]
    assert ds.series[0].tolist() == [[1, 4], [2, 5], [3, 6]]
    assert ds.series[0].dtype == np.float32
    assert ds.series[1][0].tolist() == [7, 8]
    assert np.isnan(ds.series[1][1, 0]) and ds.series[1][1, 1] == 9
    X, lengths = ds.to_padded(pad_value=-1.0)
    assert X.shape == (2, 3, 2)
    assert lengths.tolist() == [3, 2]
    assert X[1, 2].tolist() == [-1.0, -1.0]
    assert ds.header["problemname"] == "Toy"


def test_ts_without_labels(tmp_path: Path) -> None:
    f = write(tmp_path / "a.ts", "@classLabel false\n@data\n1,2\n3,4,5\n")
    ds = read_ts(f)
    assert ds.labels == []
    assert ds.lengths.tolist() == [2, 3]


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("1,2,x:a\n", r"line 3: bad value 'x'"),
        ("1,2:a\n1,,2:b\n", r"line 4: bad value ''"),
        ("1,2:c\n", r"line 3: class label 'c' is not declared by @classLabel \['a', 'b'\]"),
        ("1,2\n", r"line 3: no class label"),
        ("1,2:3,4:a\n1,2:b\n", r"line 4: 1 channels, expected 2 like line 3"),
        ("1,2:3:a\n", r"line 3: the channels have different lengths \[2, 1\]"),
        ("1,2:a\n@data\n", r"line 4: header '@data' after '@data'"),
    ],
)
def test_ts_malformed_lines(tmp_path: Path, body: str, pattern: str) -> None:
    f = write(tmp_path / "bad.ts", "@classLabel true a b\n@data\n" + body)
    with pytest.raises(DataError, match=pattern):
        read_ts(f)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("1,2:a\n", r"line 1: expected a '#' comment or an '@' header"),
        ("@classLabel true a\n", r"no '@data' line"),
        ("@classLabel true a\n@data\n", r"no series after '@data'"),
        ("@data\n1:a\n", r"line 1: '@data' before any '@classLabel'"),
        ("@classLabel true\n@data\n", r"line 1: '@classLabel true' lists no classes"),
        ("@classLabel maybe\n@data\n", r"line 1: @classLabel must be true or false, got 'maybe'"),
        ("@timeStamps true\n", r"line 1: '@timeStamps true' is not supported"),
        ("@seriesLength x\n", r"line 1: @seriesLength must be a positive integer, got 'x'"),
        ("@univariate true\n@classLabel true a\n@data\n1:2:a\n", r"'@univariate true' but .* 2"),
        ("@equalLength true\n@classLabel false\n@data\n1,2\n1\n", r"series 1 has length 1"),
        (
            "@equalLength true\n@seriesLength 3\n@classLabel false\n@data\n1,2\n",
            r"'@seriesLength 3' but the series have length 2",
        ),
    ],
)
def test_ts_bad_headers(tmp_path: Path, content: str, pattern: str) -> None:
    f = write(tmp_path / "bad.ts", content)
    with pytest.raises(DataError, match=pattern):
        read_ts(f)


def test_ts_missing_declared_false_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path / "a.ts", "@missing false\n@classLabel false\n@data\n1,?\n")
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        ds = read_ts(f)
    assert np.isnan(ds.series[0][1, 0])
    assert any("'@missing false' but some values are '?'" in r.getMessage() for r in caplog.records)


def test_ts_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"gone\.ts"):
        read_ts(tmp_path / "gone.ts")
    with pytest.raises(DataError, match=r"empty\.ts' is empty"):
        read_ts(write(tmp_path / "empty.ts", ""))


# --------------------------------------------------------------------------------------
# CSV columns
# --------------------------------------------------------------------------------------


def test_sunspots() -> None:
    s = read_series_csv(shared_data() / "timeseries/sunspots.csv")
    assert s.shape == (309,) and s.dtype == np.float64
    assert s[0] == 5.0  # 1700,5 (file line 2)
    assert s[-1] == 2.9  # 2008,2.9 (file line 310)
    assert s.sum() == pytest.approx(15373.4)  # awk sum of the column
    by_name = read_series_csv(shared_data() / "timeseries/sunspots.csv", "sunactivity")
    np.testing.assert_array_equal(by_name, s)
    years = read_series_csv(shared_data() / "timeseries/sunspots.csv", 0)
    assert years[0] == 1700 and years[-1] == 2008


def test_airline() -> None:
    a = read_series_csv(shared_data() / "timeseries/airline.csv")
    assert a.shape == (144,)
    assert a[:3].tolist() == [112.0, 118.0, 132.0]
    assert a[-1] == 432.0
    assert a.sum() == 40363.0


def test_csv_quoted_header_and_tab(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", '"When","Value"\r\n2001-01,1.5\r\n2001-02,-2\r\n')
    assert read_series_csv(f).tolist() == [1.5, -2.0]
    t = write(tmp_path / "a.tsv", "t\tx\n1\t3\n2\t4\n")
    assert read_series_csv(t, "x").tolist() == [3.0, 4.0]


def test_csv_missing_values_and_fill(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", "date,y\n2000,1\n2001,\n2002,NA\n2003,7\n")
    with pytest.raises(DataError, match=r"line 3, column 'y': missing value ''"):
        read_series_csv(f)
    assert read_series_csv(f, fill="ffill").tolist() == [1.0, 1.0, 1.0, 7.0]
    assert read_series_csv(f, fill="interpolate").tolist() == [1.0, 3.0, 5.0, 7.0]


def test_csv_unfillable_ends(tmp_path: Path) -> None:
    lead = write(tmp_path / "a.csv", "y\nnan\n2\n")
    with pytest.raises(DataError, match=r"line 2, column 'y': the first value is missing"):
        read_series_csv(lead, fill="ffill")
    trail = write(tmp_path / "b.csv", "y\n1\n2\n?\n")
    with pytest.raises(DataError, match=r"line 4, column 'y': the last value is missing"):
        read_series_csv(trail, fill="interpolate")
    assert read_series_csv(trail, fill="ffill").tolist() == [1.0, 2.0, 2.0]


def test_csv_errors(tmp_path: Path) -> None:
    two = write(tmp_path / "two.csv", "a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match=r"several numeric non-date columns among 'a' \(numeric"):
        read_series_csv(two)
    with pytest.raises(DataError, match=r"no column named 'c'; the columns are \['a', 'b'\]"):
        read_series_csv(two, "c")
    with pytest.raises(DataError, match=r"column index 2 is out of range"):
        read_series_csv(two, 2)
    with pytest.raises(DataError, match=r"fill must be one of"):
        read_series_csv(two, "a", fill="zero")
    word = write(tmp_path / "w.csv", "a,b\n1,x\n2,3\n")
    with pytest.raises(DataError, match=r"line 2, column 'b': 'x' is not a number"):
        read_series_csv(word, "b")
    ragged = write(tmp_path / "r.csv", "a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"line 3: found 1 fields, expected 2"):
        read_series_csv(ragged)
    only = write(tmp_path / "o.csv", "a,b\n")
    with pytest.raises(DataError, match=r"only the header \['a', 'b'\]"):
        read_series_csv(only)
    with pytest.raises(DataError, match=r"empty\.csv' is empty"):
        read_series_csv(write(tmp_path / "empty.csv", ""))
    dates = write(tmp_path / "d.csv", "Date,name\n1949-01,x\n")
    with pytest.raises(DataError, match=r"no numeric non-date columns among 'Date' \(date\)"):
        read_series_csv(dates)


# --------------------------------------------------------------------------------------
# Windows, splits, scaling
# --------------------------------------------------------------------------------------


def test_make_windows_values() -> None:
    X, Y = make_windows(np.arange(6), history=3, horizon=2)
    assert X.dtype == Y.dtype == np.float32
    assert X.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert Y.tolist() == [[3, 4], [4, 5]]
    with pytest.raises(DataError, match=r"length 4 is too short for history=3 \+ horizon=2"):
        make_windows(np.arange(4), 3, 2)
    with pytest.raises(DataError, match="history must be an integer >= 1, got 0"):
        make_windows(np.arange(4), 0, 2)
    with pytest.raises(DataError, match=r"must be 1-D \(N,\), got shape \(2, 2\)"):
        make_windows(np.ones((2, 2)), 1, 1)


def test_make_windows_in_float64_keeps_large_values_exact() -> None:
    """A meter reading of 12 million moving by 0.1: float32 (24 bits) rounds it to whole
    units, float64 keeps it (what a forecaster's linear part and its scores read)."""
    series = 12_345_678.9 + 0.1 * np.arange(8)
    X, Y = make_windows(series, 3, 2, np.float64)
    assert X.dtype == Y.dtype == np.float64
    np.testing.assert_array_equal(X[:, 0], series[:4])
    np.testing.assert_array_equal(Y[:, 1], series[4:])
    X32, _ = make_windows(series, 3, 2)
    assert np.abs(X32[:, 0].astype(np.float64) - series[:4]).max() > 0.05  # why it matters


@FAST
@given(
    hnp.arrays(np.float64, st.integers(2, 60), elements=st.floats(-1e6, 1e6)),
    st.integers(1, 20),
    st.integers(1, 20),
)
def test_make_windows_identities(series: np.ndarray, history: int, horizon: int) -> None:
    if len(series) < history + horizon:
        with pytest.raises(DataError):
            make_windows(series, history, horizon)
        return
    X, Y = make_windows(series, history, horizon)
    n = len(series) - history - horizon + 1
    assert X.shape == (n, history) and Y.shape == (n, horizon)
    s = series.astype(np.float32)
    np.testing.assert_array_equal(X[1:, :-1], X[:-1, 1:])  # X[k+1, :-1] == X[k, 1:]
    np.testing.assert_array_equal(Y[1:, :-1], Y[:-1, 1:])
    np.testing.assert_array_equal(X[:, 0], s[:n])
    np.testing.assert_array_equal(Y[:, -1], s[history + horizon - 1 :])
    np.testing.assert_array_equal(np.concatenate([X, Y], axis=1)[0], s[: history + horizon])


def test_split_series() -> None:
    train, test = split_series(np.arange(10), 3)
    assert train.tolist() == list(range(7)) and test.tolist() == [7, 8, 9]
    train, test = split_series(np.arange(10), 0.25)  # round(2.5) == 2
    assert len(train) == 8 and test.tolist() == [8, 9]
    with pytest.raises(DataError, match=r"test_size=10 holds out 10 of 10 steps"):
        split_series(np.arange(10), 10)
    with pytest.raises(DataError, match=r"in \(0, 1\), got 1\.5"):
        split_series(np.arange(10), 1.5)


def test_scaler_fits_training_part_only() -> None:
    train, test = split_series(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), 1)
    sc = Scaler().fit(train)
    assert float(sc.mean) == 2.5
    assert float(sc.scale) == pytest.approx(np.sqrt(1.25))
    assert sc.transform(test).tolist() == pytest.approx([(100 - 2.5) / np.sqrt(1.25)])
    z = sc.transform(train)
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    restored = Scaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_allclose(restored.inverse_transform(z), train)
    assert sc.transform(np.float32([2.5])).dtype == np.float32


def test_scaler_per_channel_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    x = np.array([[0.0, 5.0], [2.0, 5.0]])
    with caplog.at_level(logging.WARNING, logger="gatelab.data"):
        sc = Scaler().fit(x)
    assert "constant data" in caplog.records[0].getMessage()
    assert sc.mean.tolist() == [1.0, 5.0] and sc.scale.tolist() == [1.0, 1.0]
    assert sc.transform(x).tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(DataError, match="fitted on 2 channels, got shape"):
        sc.transform(np.ones((2, 3)))
    with pytest.raises(DataError, match="not fitted"):
        Scaler().transform([1.0])
    with pytest.raises(DataError, match="got 1 NaN/inf values"):
        Scaler().fit([1.0, np.nan])
    with pytest.raises(DataError, match="not a Scaler description"):
        Scaler.from_dict({"type": "minmax"})


@FAST
@given(hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e3, 1e3)))
def test_scaler_roundtrip(x: np.ndarray) -> None:
    sc = Scaler().fit(x)
    np.testing.assert_allclose(sc.inverse_transform(sc.transform(x)), x, rtol=1e-9, atol=1e-9)
