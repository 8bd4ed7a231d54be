"""Numeric CSV columns: one column of a file with a header line, read as a series for
forecasting (gaps filled on request)."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gatelab.data.lines import ASCII_WHITESPACE, decode_bytes, read_bytes, split_lines
from gatelab.data.series import parse_number
from gatelab.errors import DataError

__all__ = ["DATE_COLUMN_NAMES", "fill_missing", "read_series_csv"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

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
    return parse_number(cell, _MISSING)


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
    names, body = _read_rows(p)

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


#: Why a series CSV is read whole (:func:`gatelab.data.lines.check_fits_in_memory`).
WHY_WHOLE = (
    "A series CSV holds each series down a column (a row per time step), so no series is "
    "complete before the last row and the file is read whole; write it as one series a "
    "line instead (UCR .tsv: the label, then the values), which is read in chunks"
)


def _read_rows(p: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's names and the ``(line number, fields)`` of every data row, each with
    as many fields as the header."""
    data = read_bytes(p, what="series CSV file", factor=80.0, why=WHY_WHOLE)  # measured 69x
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
    return names, body


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
