"""The estimator kinds' readers (gatelab.tasks.estimator_kinds): .ts files fill missing
values by the same policy as the CSV reader (gatelab.data.series_csv.fill_missing)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gatelab.cli import _register, app
from gatelab.data.series_csv import fill_missing, read_series_csv
from gatelab.errors import DataError
from gatelab.tasks.estimator_kinds import read_series_file
from tests.helpers import write_series_csv, write_ts

_register()


def _gappy(tmp_path, values):
    """The same series as a CSV column and as the one series of a .ts file ('?' = gap)."""
    csv = write_series_csv(tmp_path / "s.csv", values)
    text = csv.read_text().replace("nan", "")
    csv.write_text(text)
    ts = write_ts(tmp_path / "s.ts", np.nan_to_num(np.asarray([values]), nan=-999.0), ["a"])
    ts.write_text(ts.read_text().replace("-999.00000", "?"))
    return csv, ts


@pytest.mark.parametrize("fill", ["ffill", "interpolate"])
def test_both_readers_fill_a_gap_alike(tmp_path, fill):
    values = [1.0, np.nan, np.nan, 7.0, 8.0]
    csv, ts = _gappy(tmp_path, values)
    from_csv = read_series_csv(csv, fill=fill)
    series, labels = read_series_file(ts, fill)
    assert labels == ["a"]
    np.testing.assert_allclose(series[0][:, 0], from_csv, rtol=0, atol=1e-12)
    expected = [1.0, 1.0, 1.0, 7.0, 8.0] if fill == "ffill" else [1.0, 3.0, 5.0, 7.0, 8.0]
    np.testing.assert_allclose(from_csv, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "values, fill, edge",
    [
        ([np.nan, 2.0, 3.0], "ffill", "first"),
        ([np.nan, 2.0, 3.0], "interpolate", "first"),
        ([1.0, 2.0, np.nan], "interpolate", "last"),
    ],
)
def test_both_readers_refuse_an_edge_gap_alike(tmp_path, values, fill, edge):
    csv, ts = _gappy(tmp_path, values)
    message = f"the {edge} value is missing and fill={fill!r} cannot fill it"
    with pytest.raises(DataError, match=message):
        read_series_csv(csv, fill=fill)
    with pytest.raises(DataError, match=message):
        read_series_file(ts, fill)
    # and the command line says so in one line (the .ts reader used to fill a leading gap)
    result = CliRunner().invoke(
        app,
        ["train", "series-classifier", "--train", str(ts), "--out", str(tmp_path / "r"),
         "--fill", fill, "-q"],
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.stderr and "series 0" in result.stderr


def test_fill_missing_per_channel_and_trailing_ffill():
    x = np.array([[1.0, 2.0], [np.nan, 4.0], [3.0, np.nan], [5.0, np.nan]])
    np.testing.assert_array_equal(fill_missing(x, "ffill"), [[1, 2], [1, 4], [3, 4], [5, 4]])
    assert np.isnan(x).sum() == 3  # a copy: the input is untouched
    with pytest.raises(DataError, match=r"step 3, channel 1: the last value is missing"):
        fill_missing(x, "interpolate")
    with pytest.raises(DataError, match="fill must be 'ffill' or 'interpolate'"):
        fill_missing(x, "zero")
