"""Numeric series: sktime/UCR ``.ts`` classification files, numeric CSV columns,
forecasting windows, train/test splits and standard scaling.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gatelab.data.lines import ASCII_WHITESPACE, decode_bytes, read_bytes, read_lines, split_lines
from gatelab.errors import DataError

__all__ = [
    "DATE_COLUMN_NAMES",
    "SERIES_FORMATS",
    "Scaler",
    "SeriesDataset",
    "detect_series_format",
    "fill_missing",
    "make_windows",
    "read_labelled_series",
    "read_series_csv",
    "read_ts",
    "read_ucr_text",
    "split_series",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# --------------------------------------------------------------------------------------
# sktime / UCR .ts files
# --------------------------------------------------------------------------------------


@dataclass
class SeriesDataset:
    """Labelled series read from a ``.ts`` file.

    Attributes:
        series: N arrays, each ``(T_i, C)`` float32 (T_i time steps, C channels); a
            missing value (``?``) is NaN.
        labels: N class labels as strings, or an empty list when the file has
            ``@classLabel false``.
        class_labels: the classes declared by ``@classLabel``, in the header's order.
        problem_name: ``@problemName`` (``""`` when absent).
        path: the file read.
        header: every ``@`` header as ``{lower-cased name: raw value}``.
        line_numbers: the file line of each series (for messages).
        format: the file format read (one of :data:`SERIES_FORMATS`).
    """

    series: list[np.ndarray]
    labels: list[str]
    class_labels: list[str]
    problem_name: str = ""
    path: Path | None = None
    header: dict[str, str] = field(default_factory=dict)
    line_numbers: list[int] = field(default_factory=list)
    format: str = "ts"

    def __len__(self) -> int:
        return len(self.series)

    @property
    def n_channels(self) -> int:
        """C, the number of channels of every series."""
        return int(self.series[0].shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """``(N,)`` int64: T_i of each series."""
        return np.array([s.shape[0] for s in self.series], dtype=np.int64)

    def to_padded(self, pad_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Stack the series into one array.

        Args:
            pad_value: written after each series' end.

        Returns:
            ``(X, lengths)``: X ``(N, T_max, C)`` float32 with ``X[i, :lengths[i]]`` the
            series i and the rest ``pad_value``; lengths ``(N,)`` int64.
        """
        lengths = self.lengths
        out = np.full(
            (len(self.series), int(lengths.max()), self.n_channels), pad_value, dtype=np.float32
        )
        for i, s in enumerate(self.series):
            out[i, : s.shape[0]] = s
        return out, lengths


_TRUE_FALSE = {"true": True, "false": False}


def _flag(name: str, value: str, p: Path, number: int) -> bool:
    v = value.strip().lower()
    if v not in _TRUE_FALSE:
        raise DataError(f"{p}, line {number}: @{name} must be true or false, got {value!r}")
    return _TRUE_FALSE[v]


def _parse_value(token: str, p: Path, number: int, line: str) -> float:
    t = token.strip(ASCII_WHITESPACE)
    if t == "?":
        return math.nan
    try:
        if "_" in t:
            raise ValueError(t)
        return float(t)
    except ValueError:
        raise DataError(
            f"{p}, line {number}: bad value {token!r}; expected a number or '?' "
            f"(line starts {line[:60]!r})"
        ) from None


def read_ts(path: PathLike) -> SeriesDataset:
    """Read an sktime/UCR ``.ts`` file.

    Format: ``#`` comment lines; ``@`` header lines (``@problemName``, ``@timeStamps``,
    ``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@seriesLength``,
    ``@classLabel true a b ...`` or ``@classLabel false``), then ``@data`` and one series
    a line: values comma-separated, channels separated by ``:``, the class label last.
    ``?`` is a missing value (NaN). Series may have different lengths; the channels of
    one series must have the same length.

    Args:
        path: the ``.ts`` file.

    Returns:
        A :class:`SeriesDataset`.

    Raises:
        DataError: missing/empty file; a bad header; a data line before ``@data``; a
            malformed line (its number and the bad token are named); a label not declared
            by ``@classLabel``; a channel count or length that contradicts the header or
            the other lines. ``@timeStamps true`` is not supported (DataError).
    """
    p = Path(path)
    lines = read_lines(p, what=".ts file")
    header: dict[str, str] = {}
    class_labels: list[str] = []
    has_labels: bool | None = None
    in_data = False
    series: list[np.ndarray] = []
    labels: list[str] = []
    numbers: list[int] = []
    n_channels: int | None = None
    first_data_line = 0

    for number, raw in lines.lines:
        line = raw.strip(ASCII_WHITESPACE)
        if line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(
                    f"{p}, line {number}: expected a '#' comment or an '@' header before "
                    f"'@data', got {line[:60]!r}"
                )
            name, _, value = line[1:].partition(" ")
            key = name.lower()
            value = value.strip(ASCII_WHITESPACE)
            if key == "data":
                in_data = True
                if has_labels is None:
                    raise DataError(
                        f"{p}, line {number}: '@data' before any '@classLabel' header; "
                        "expected '@classLabel true <classes>' or '@classLabel false'"
                    )
                continue
            header[key] = value
            if key == "classlabel":
                parts = value.split()
                if not parts:
                    raise DataError(f"{p}, line {number}: @classLabel needs true or false")
                has_labels = _flag("classLabel", parts[0], p, number)
                class_labels = parts[1:]
                if has_labels and not class_labels:
                    raise DataError(
                        f"{p}, line {number}: '@classLabel true' lists no classes; expected "
                        "'@classLabel true <class> <class> ...'"
                    )
                if len(set(class_labels)) != len(class_labels):
                    raise DataError(f"{p}, line {number}: @classLabel repeats a class: {value!r}")
            elif key == "timestamps" and _flag(name, value, p, number):
                raise DataError(
                    f"{p}, line {number}: '@timeStamps true' is not supported; expected "
                    "'@timeStamps false' (plain comma-separated values)"
                )
            elif key in ("missing", "univariate", "equallength"):
                _flag(name, value, p, number)
            elif key in ("serieslength", "dimensions"):
                if not value.isdigit() or int(value) < 1:
                    raise DataError(
                        f"{p}, line {number}: @{name} must be a positive integer, got {value!r}"
                    )
            elif key != "problemname":
                logger.debug("%s, line %d: ignoring header @%s", p, number, name)
            continue

        if line.startswith("@"):
            raise DataError(f"{p}, line {number}: header {line[:40]!r} after '@data'")
        first_data_line = first_data_line or number
        parts = line.split(":")
        if has_labels:
            if len(parts) < 2:
                raise DataError(
                    f"{p}, line {number}: no class label; expected values, then "
                    f"':<label>' with a label in {class_labels}"
                )
            label = parts[-1].strip(ASCII_WHITESPACE)
            if label not in class_labels:
                raise DataError(
                    f"{p}, line {number}: class label {label!r} is not declared by "
                    f"@classLabel {class_labels}"
                )
            labels.append(label)
            parts = parts[:-1]
        channels = []
        for c, part in enumerate(parts):
            tokens = part.split(",")
            if part.strip(ASCII_WHITESPACE) == "":
                raise DataError(f"{p}, line {number}: channel {c} is empty; expected values")
            channels.append([_parse_value(t, p, number, line) for t in tokens])
        if n_channels is None:
            n_channels = len(channels)
        elif len(channels) != n_channels:
            raise DataError(
                f"{p}, line {number}: {len(channels)} channels, expected {n_channels} like "
                f"line {first_data_line}"
            )
        lens = {len(ch) for ch in channels}
        if len(lens) != 1:
            raise DataError(
                f"{p}, line {number}: the channels have different lengths "
                f"{[len(ch) for ch in channels]}; expected one length"
            )
        series.append(np.asarray(channels, dtype=np.float32).T.copy())
        numbers.append(number)

    if not in_data:
        raise DataError(f"{p}: no '@data' line; expected headers, '@data', then series")
    if not series:
        raise DataError(f"{p}: no series after '@data'; expected one series a line")
    _check_header(p, header, series, n_channels or 0)
    logger.info(
        "read %d series (%d channels, %d classes) from %s",
        len(series),
        n_channels,
        len(class_labels),
        p,
    )
    return SeriesDataset(
        series=series,
        labels=labels,
        class_labels=class_labels,
        problem_name=header.get("problemname", ""),
        path=p,
        header=header,
        line_numbers=numbers,
        format="ts",
    )


def _check_header(p: Path, header: dict[str, str], series: list[np.ndarray], c: int) -> None:
    if header.get("univariate", "").lower() == "true" and c != 1:
        raise DataError(f"{p}: '@univariate true' but the series have {c} channels")
    if "dimensions" in header and int(header["dimensions"]) != c:
        raise DataError(f"{p}: '@dimensions {header['dimensions']}' but the series have {c}")
    lengths = [s.shape[0] for s in series]
    if header.get("equallength", "").lower() == "true" and len(set(lengths)) != 1:
        i = next(i for i, n in enumerate(lengths) if n != lengths[0])
        raise DataError(
            f"{p}: '@equalLength true' but series {i} has length {lengths[i]}, "
            f"series 0 has {lengths[0]}"
        )
    if "serieslength" in header and header.get("equallength", "").lower() == "true":
        want = int(header["serieslength"])
        if lengths[0] != want:
            raise DataError(f"{p}: '@seriesLength {want}' but the series have length {lengths[0]}")
    if header.get("missing", "").lower() == "false" and any(np.isnan(s).any() for s in series):
        logger.warning("%s: '@missing false' but some values are '?' (read as NaN)", p)


# --------------------------------------------------------------------------------------
# UCR text files (label first) and format detection
# --------------------------------------------------------------------------------------

#: The labelled-series formats :func:`read_labelled_series` tells apart by content:
#: ``"ts"`` (sktime), ``"ucr-tsv"`` (UCR 2018: label, then values, tab-separated),
#: ``"ucr-text"`` (old UCR: label, then values, separated by runs of spaces),
#: ``"ucr-csv"`` (label, then values, comma-separated).
SERIES_FORMATS = ("ts", "ucr-tsv", "ucr-text", "ucr-csv")
_UCR_SEPARATORS = {"ucr-tsv": "\t", "ucr-text": None, "ucr-csv": ","}
_NAN_TOKENS = frozenset({"nan", "?", ""})


def _first_content_line(path: Path) -> tuple[int, str]:
    for number, raw in read_lines(path, what="series file").lines:
        line = raw.strip(ASCII_WHITESPACE)
        if line and not line.startswith("#"):
            return number, raw
    raise DataError(f"series file '{path}' holds only comments; expected series")


def detect_series_format(path: PathLike) -> str:
    """The format of a labelled-series file, from its content (never its name).

    The first line that is not blank or a ``#`` comment decides: an ``@`` header means
    ``"ts"``; otherwise a line of numbers, label first, separated by tabs (``"ucr-tsv"``),
    commas (``"ucr-csv"``) or runs of spaces (``"ucr-text"``).

    Raises:
        DataError: a first line that is none of these (it is quoted).
    """
    p = Path(path)
    number, raw = _first_content_line(p)
    line = raw.strip(ASCII_WHITESPACE)
    if line.startswith("@"):
        return "ts"
    fmt = "ucr-tsv" if "\t" in line else "ucr-csv" if "," in line else "ucr-text"
    tokens = _ucr_tokens(line, fmt)
    numeric = [t for t in tokens[1:] if _ucr_value(t) is not None]
    if len(tokens) < 2 or len(numeric) != len(tokens) - 1:
        raise DataError(
            f"{p}, line {number}: cannot tell the format: {line[:60]!r} is neither an '@' "
            "header (sktime .ts) nor a label followed by numbers (UCR text: tab-, comma- "
            "or space-separated)"
        )
    return fmt


def _ucr_tokens(line: str, fmt: str) -> list[str]:
    sep = _UCR_SEPARATORS[fmt]
    if sep is None:
        return line.split()
    return [t.strip(ASCII_WHITESPACE) for t in line.strip(ASCII_WHITESPACE).split(sep)]


def _ucr_value(token: str) -> float | None:
    if token.lower() in _NAN_TOKENS:
        return math.nan
    if "_" in token:
        return None
    try:
        return float(token)
    except ValueError:
        return None


def _ucr_label(token: str) -> str:
    """``1.0000000e+00`` -> ``"1"``, ``-1`` -> ``"-1"``; other labels as written."""
    v = _ucr_value(token)
    if v is not None and math.isfinite(v) and v == int(v):
        return str(int(v))
    return token


def read_ucr_text(path: PathLike, fmt: str | None = None) -> SeriesDataset:
    """Read a UCR text file: one univariate series a line, the class label first.

    The old UCR archive separates values by runs of spaces (``Coffee_TRAIN.txt``), the
    2018 archive by tabs (``.tsv``); comma-separated copies exist too. Labels written as
    numbers are normalised (``1.0000000e+00`` -> ``"1"``). ``NaN`` (or ``?``, or an empty
    field) is a missing value; the NaNs that END a line are padding of a shorter series
    (the 2018 archive pads unequal lengths that way) and are cut off, so each series keeps
    its own length.

    Args:
        path: the file.
        fmt: ``"ucr-tsv"``, ``"ucr-text"`` or ``"ucr-csv"``; None detects it
            (:func:`detect_series_format`).

    Returns:
        A :class:`SeriesDataset` (one channel; ``class_labels`` sorted numerically when
        every label is a number).

    Raises:
        DataError: a value that is not a number (line and token named), a line with no
            values, a series made only of missing values.
    """
    p = Path(path)
    if fmt is None:
        fmt = detect_series_format(p)
    if fmt not in _UCR_SEPARATORS:
        raise DataError(f"fmt={fmt!r}; expected one of {list(_UCR_SEPARATORS)} or None")
    series: list[np.ndarray] = []
    labels: list[str] = []
    numbers: list[int] = []
    for number, raw in read_lines(p, what="UCR series file").lines:
        line = raw.strip(ASCII_WHITESPACE)
        if not line or line.startswith("#"):
            continue
        tokens = _ucr_tokens(line, fmt)
        if len(tokens) < 2:
            raise DataError(
                f"{p}, line {number}: only {len(tokens)} field(s); expected a class label "
                "then the series' values"
            )
        values = []
        for t in tokens[1:]:
            v = _ucr_value(t)
            if v is None:
                raise DataError(
                    f"{p}, line {number}: bad value {t!r}; expected a number or NaN "
                    f"(line starts {line[:60]!r})"
                )
            values.append(v)
        x = np.asarray(values, dtype=np.float32)
        real = np.flatnonzero(~np.isnan(x))
        if not len(real):
            raise DataError(f"{p}, line {number}: the series holds only missing values")
        series.append(x[: real[-1] + 1, None].copy())  # (T_i, 1), trailing padding cut
        labels.append(_ucr_label(tokens[0]))
        numbers.append(number)
    if not series:
        raise DataError(f"{p}: no series; expected one series a line, label first")
    classes = sorted(set(labels), key=_label_key)
    logger.info(
        "read %d series (%s, %d classes, lengths %d-%d) from %s",
        len(series),
        fmt,
        len(classes),
        min(len(s) for s in series),
        max(len(s) for s in series),
        p,
    )
    return SeriesDataset(
        series=series,
        labels=labels,
        class_labels=classes,
        path=p,
        line_numbers=numbers,
        format=fmt,
    )


def _label_key(label: str) -> tuple[int, float, str]:
    v = _ucr_value(label)
    return (0, v, "") if v is not None and math.isfinite(v) else (1, 0.0, label)


def read_labelled_series(path: PathLike) -> SeriesDataset:
    """Read labelled series in any of :data:`SERIES_FORMATS`, detected from the content.

    Args:
        path: a ``.ts`` file (:func:`read_ts`) or a UCR text file (:func:`read_ucr_text`),
            whatever its name.

    Returns:
        A :class:`SeriesDataset` whose ``format`` names what was read.
    """
    fmt = detect_series_format(path)
    return read_ts(path) if fmt == "ts" else read_ucr_text(path, fmt)


# --------------------------------------------------------------------------------------
# Numeric CSV columns
# --------------------------------------------------------------------------------------

#: Column names (case-insensitive) taken for dates/times, never the default value column.
DATE_COLUMN_NAMES = frozenset(
    {"date", "time", "datetime", "timestamp", "year", "month", "day", "week", "quarter",
     "period", "ds", "index"}
)  # fmt: skip
_MISSING = frozenset({"", "na", "nan", "n/a", "null", "none", "?", "-"})
_DATE_RE = re.compile(r"^\d{1,4}[-/.:]\d{1,2}([-/.:T ]\d{1,2})*.*$")
_FILLS = (None, "ffill", "interpolate")


def _to_float(cell: str) -> float | None:
    """A number, NaN for a missing marker, None when not a number."""
    t = cell.strip(ASCII_WHITESPACE)
    if t.lower() in _MISSING:
        return math.nan
    if "_" in t:
        return None
    try:
        return float(t)
    except ValueError:
        return None


def read_series_csv(
    path: PathLike, column: str | int | None = None, *, fill: str | None = None
) -> np.ndarray:
    """Read one numeric column of a CSV file with a header line.

    Args:
        path: the CSV file (comma-separated, or tab-separated when the header holds a
            tab; quoted names such as ``"YEAR","SUNACTIVITY"`` are unquoted; one record
            a line, blank lines skipped).
        column: the column, by header name (exact, then case-insensitive) or 0-based
            index. Default: the single column whose values are all numeric and which is
            not a date/time column (by name, see :data:`DATE_COLUMN_NAMES`, or by values
            such as ``1949-01``).
        fill: what to do with missing values (empty, ``NA``, ``NaN``, ``?``...): None
            raises DataError naming the first one; ``"ffill"`` repeats the last value
            before it; ``"interpolate"`` interpolates linearly between its neighbours.
            A missing first value (or last, for ``"interpolate"``) cannot be filled and
            raises DataError.

    Returns:
        ``(N,)`` float64, the column's values in file order.

    Raises:
        DataError: missing/empty file, no data rows, a row with the wrong number of
            fields, an unknown or ambiguous column (the columns are listed), a value that
            is not a number, a missing value that is not to be filled (its line number
            and column are named), an unknown ``fill``.
    """
    if fill not in _FILLS:
        raise DataError(f"fill must be one of {list(_FILLS)}, got {fill!r}")
    p = Path(path)
    data = read_bytes(p, what="series CSV file", factor=80.0)  # measured 69x: a row per value
    text, _ = decode_bytes(data, p)
    numbered = [(n, line) for n, line in split_lines(text) if line.strip(ASCII_WHITESPACE)]
    if not numbered:
        raise DataError(f"series CSV file '{p}' holds only blank lines; expected a header")
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    rows = []
    for number, line in numbered:
        try:
            row = next(csv.reader([line], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            raise DataError(f"{p}, line {number}: cannot parse the row ({exc})") from exc
        rows.append((number, row))
    header = rows[0][1]
    names = [h.strip(ASCII_WHITESPACE) for h in header]
    body = rows[1:]
    if not body:
        raise DataError(f"{p}: only the header {names!r}; expected data rows below it")
    for number, row in body:
        if len(row) != len(names):
            raise DataError(
                f"{p}, line {number}: found {len(row)} fields, expected {len(names)} "
                f"like the header {names!r}: {_preview(row, delimiter)!r}"
            )

    if column is None:
        kinds = [_column_kind(name, [r[j] for _, r in body]) for j, name in enumerate(names)]
        numeric = [j for j, k in enumerate(kinds) if k == "numeric"]
        if len(numeric) != 1:
            listing = ", ".join(f"{n!r} ({k})" for n, k in zip(names, kinds))
            raise DataError(
                f"{p}: {'no' if not numeric else 'several'} numeric non-date columns among "
                f"{listing}; pass column= (a name or 0-based index)"
            )
        j = numeric[0]
    else:
        j = _resolve_column(column, names, p)

    values = np.empty(len(body), dtype=np.float64)
    missing: list[int] = []
    for i, (number, row) in enumerate(body):
        v = _to_float(row[j])
        if v is None:
            raise DataError(f"{p}, line {number}, column {names[j]!r}: {row[j]!r} is not a number")
        if math.isnan(v):
            if fill is None:
                raise DataError(
                    f"{p}, line {number}, column {names[j]!r}: missing value {row[j]!r}; "
                    "expected a number (or pass fill='ffill' or fill='interpolate')"
                )
            missing.append(i)
        values[i] = v
    if missing:
        values = _fill(values, missing, fill, [n for n, _ in body], names[j], p)
    logger.info("read %d values of column %r from %s", len(values), names[j], p)
    return values


def _preview(row: list[str], delimiter: str) -> str:
    return delimiter.join(row)[:80]


def _column_kind(name: str, cells: list[str]) -> str:
    if name.strip().lower() in DATE_COLUMN_NAMES:
        return "date"
    parsed = [_to_float(c) for c in cells]
    numbers = [v for v in parsed if v is not None]
    if len(numbers) == len(parsed):
        return "numeric" if any(not math.isnan(v) for v in numbers) else "empty"
    if all(_DATE_RE.match(c.strip()) or _to_float(c) is not None for c in cells):
        return "date"
    return "text"


def _resolve_column(column: str | int, names: list[str], p: Path) -> int:
    if isinstance(column, bool) or not isinstance(column, (str, int)):
        raise DataError(f"column must be a name or a 0-based index, got {column!r}")
    if isinstance(column, int):
        if not 0 <= column < len(names):
            raise DataError(
                f"{p}: column index {column} is out of range; the columns are {names!r} "
                f"(0..{len(names) - 1})"
            )
        return column
    if column in names:
        return names.index(column)
    lowered = [n.lower() for n in names]
    if column.lower() in lowered:
        return lowered.index(column.lower())
    raise DataError(f"{p}: no column named {column!r}; the columns are {names!r}")


def _fill(
    values: np.ndarray, missing: list[int], fill: str | None, numbers: list[int], name: str, p: Path
) -> np.ndarray:
    out = fill_missing(values, fill, lambda t, c: f"{p}, line {numbers[t]}, column {name!r}")
    logger.info("%s: filled %d missing values of %r with %s", p, len(missing), name, fill)
    return out


def fill_missing(
    values: np.ndarray, fill: str, where: Callable[[int, int], str] | None = None
) -> np.ndarray:
    """Fill the missing values (NaN) of a series along time, per channel: the one policy of
    every reader (CSV series, .ts and UCR files through the command line).

    ``"ffill"`` repeats the last value before a gap; ``"interpolate"`` interpolates
    linearly between its neighbours. A missing first value (or last, for
    ``"interpolate"``) has nothing to fill from and is refused, never guessed.

    Arguments:
        values: ``(T,)`` or ``(T, C)`` floats.
        fill: ``"ffill"`` or ``"interpolate"``.
        where: ``(step, channel) -> location`` for the message (default: ``step t,
            channel c``).
    Returns:
        a filled copy, same shape.
    Raises:
        DataError: an unknown ``fill``, or a gap at an edge it cannot fill (located).
    """
    if fill not in ("ffill", "interpolate"):
        raise DataError(f"fill must be 'ffill' or 'interpolate', got {fill!r}")
    where = where or (lambda t, c: f"step {t}, channel {c}")
    out = np.array(values, dtype=np.float64)  # a copy
    columns = out.reshape(len(out), -1)  # (T, C), a view of out
    idx = np.arange(len(out))
    for c in range(columns.shape[1]):
        ok = ~np.isnan(columns[:, c])
        if ok.all():
            continue
        if not ok[0]:
            raise DataError(
                f"{where(0, c)}: the first value is missing and fill={fill!r} cannot fill it"
            )
        if fill == "interpolate" and not ok[-1]:
            raise DataError(
                f"{where(len(out) - 1, c)}: the last value is missing and "
                "fill='interpolate' cannot fill it"
            )
        if fill == "ffill":
            last = np.maximum.accumulate(np.where(ok, idx, 0))  # index of the last value
            columns[:, c] = columns[last, c]
        else:
            columns[~ok, c] = np.interp(idx[~ok], idx[ok], columns[ok, c])
    return out


# --------------------------------------------------------------------------------------
# Windows, splits, scaling
# --------------------------------------------------------------------------------------


def _as_series(series: Any, what: str = "series") -> np.ndarray:
    x = np.asarray(series)
    if x.ndim != 1:
        raise DataError(f"{what} must be 1-D (N,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{what} must be real numbers, got dtype {x.dtype}")
    return x


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def make_windows(series: Any, history: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into (history, horizon) forecasting pairs, stride 1.

    Args:
        series: ``(L,)`` numbers.
        history: input steps per window (>= 1).
        horizon: target steps per window (>= 1).

    Returns:
        ``(X, Y)``, float32, X ``(N, history)`` and Y ``(N, horizon)`` with
        ``N = L - history - horizon + 1``, ``X[k] = series[k : k + history]`` and
        ``Y[k] = series[k + history : k + history + horizon]``.

    Raises:
        DataError: a series too short for one window, a non-positive size, a series
            that is not 1-D numbers.
    """
    x = _as_series(series)
    history = _positive_int(history, "history")
    horizon = _positive_int(horizon, "horizon")
    n = len(x) - history - horizon + 1
    if n < 1:
        raise DataError(
            f"a series of length {len(x)} is too short for history={history} + "
            f"horizon={horizon}; expected length >= {history + horizon}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float32), history + horizon)
    return windows[:, :history].copy(), windows[:, history:].copy()


def split_series(series: Any, test_size: int | float) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the last part of a series (no shuffling: the future stays unseen).

    Args:
        series: ``(L,)`` numbers.
        test_size: the number of held-out steps (an int >= 1), or a fraction in (0, 1)
            (rounded to the nearest count, at least 1).

    Returns:
        ``(train, test)``: ``series[:L - n]`` and ``series[L - n:]`` (copies).

    Raises:
        DataError: a size that leaves no training or no test part.
    """
    x = _as_series(series)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.number)):
        raise DataError(f"test_size must be a count or a fraction, got {test_size!r}")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise DataError(f"a fractional test_size must be in (0, 1), got {test_size!r}")
        n = max(1, round(len(x) * float(test_size)))
    else:
        n = int(test_size)
    if not 1 <= n < len(x):
        raise DataError(
            f"test_size={test_size!r} holds out {n} of {len(x)} steps; expected 1..{len(x) - 1}"
        )
    return x[: len(x) - n].copy(), x[len(x) - n :].copy()


class Scaler:
    """Standard scaling, ``(x - mean) / std``, fitted on the training part only.

    For a 1-D series the statistics are scalars; for a 2-D array ``(T, C)`` they are
    per channel (over axis 0). The standard deviation is the population one (ddof=0);
    a constant series gets scale 1 (and a logged warning) so it maps to zeros.
    """

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, x: Any) -> Scaler:
        """Learn mean and scale from ``x`` ``(T,)`` or ``(T, C)``; NaN raises DataError."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim not in (1, 2) or a.shape[0] < 1:
            raise DataError(f"Scaler.fit expects (T,) or (T, C) with T >= 1, got {a.shape}")
        if not np.isfinite(a).all():
            raise DataError(
                f"Scaler.fit got {int((~np.isfinite(a)).sum())} NaN/inf values; fill them first"
            )
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        if np.any(std == 0):
            logger.warning("Scaler.fit: constant data (std 0); using scale 1 there")
            std = np.where(std == 0, 1.0, std)
        self.mean, self.scale = np.asarray(mean), np.asarray(std)
        return self

    def _check(self, x: Any) -> tuple[np.ndarray, np.dtype]:
        if self.mean is None or self.scale is None:
            raise DataError("the Scaler is not fitted; call fit(train) first")
        a = np.asarray(x)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)
        if self.mean.ndim == 1 and (a.ndim < 1 or a.shape[-1] != self.mean.shape[0]):
            raise DataError(
                f"the Scaler was fitted on {self.mean.shape[0]} channels, got shape {a.shape}"
            )
        return a.astype(np.float64), dtype

    def transform(self, x: Any) -> np.ndarray:
        """``(x - mean) / scale``, same shape, float dtype kept (float64 otherwise)."""
        a, dtype = self._check(x)
        return ((a - self.mean) / self.scale).astype(dtype)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """``x * scale + mean``: undoes :meth:`transform`."""
        a, dtype = self._check(x)
        return (a * self.scale + self.mean).astype(dtype)

    def fit_transform(self, x: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same data."""
        return self.fit(x).transform(x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"type": "standard_scaler", "mean": ..., "scale": ...}``."""
        if self.mean is None or self.scale is None:
            raise DataError("the Scaler is not fitted; nothing to save")
        return {
            "type": "standard_scaler",
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if not isinstance(d, dict) or d.get("type") != "standard_scaler":
            raise DataError(f"not a Scaler description (type 'standard_scaler'): {str(d)[:80]}")
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad Scaler description {str(d)[:80]}: {exc}") from None
        if mean.shape != scale.shape or mean.ndim > 1 or np.any(scale <= 0):
            raise DataError(
                f"bad Scaler description: mean {mean.shape}, scale {scale.shape}; expected "
                "equal shapes, scalars or 1-D, scale > 0"
            )
        s = cls()
        s.mean, s.scale = mean, scale
        return s
