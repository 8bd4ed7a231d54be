"""Labelled series: sktime/UCR ``.ts`` classification files and UCR text files.

Numeric CSV columns (forecasting) are read by :mod:`gatelab.data.series_csv`; windows,
splits and scaling are in :mod:`gatelab.data.windows`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gatelab.data.lines import (
    ASCII_WHITESPACE,
    UCR_FACTOR,
    LineStream,
    read_lines,
)
from gatelab.errors import DataError

__all__ = [
    "SERIES_FORMATS",
    "SeriesDataset",
    "detect_series_format",
    "parse_number",
    "read_labelled_series",
    "read_ts",
    "read_ucr_text",
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


def parse_number(token: str, missing: frozenset[str]) -> float | None:
    """``token`` as a float: NaN when it is one of the ``missing`` markers (compared in
    lower case), None when it is not a number. Surrounding ASCII whitespace is ignored;
    an underscore is refused (``float`` would read ``1_000``)."""
    t = token.strip(ASCII_WHITESPACE)
    if t.lower() in missing:
        return math.nan
    if "_" in t:
        return None
    try:
        return float(t)
    except ValueError:
        return None


_TS_MISSING = frozenset({"?"})


def _parse_value(token: str, p: Path, number: int, line: str) -> float:
    v = parse_number(token, _TS_MISSING)
    if v is None:
        raise DataError(
            f"{p}, line {number}: bad value {token!r}; expected a number or '?' "
            f"(line starts {line[:60]!r})"
        )
    return v


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
    header, class_labels, has_labels, data = _read_ts_header(p, lines.lines)
    series: list[np.ndarray] = []
    labels: list[str] = []
    numbers: list[int] = []
    n_channels: int | None = None
    first_data_line = 0
    for number, line in data:
        if line.startswith("@"):
            raise DataError(f"{p}, line {number}: header {line[:40]!r} after '@data'")
        first_data_line = first_data_line or number
        label, channels = _read_ts_line(p, number, line, class_labels if has_labels else None)
        if label is not None:
            labels.append(label)
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


def _read_ts_header(
    p: Path, numbered: list[tuple[int, str]]
) -> tuple[dict[str, str], list[str], bool, list[tuple[int, str]]]:
    """The ``@`` headers of a ``.ts`` file (checked), up to ``@data``.

    Returns:
        ``(header, class_labels, has_labels, data)``: the header values by lower-case
        name, the declared classes, whether lines end with a label, and the
        ``(number, stripped line)`` pairs after ``@data`` (comments left out).
    """
    header: dict[str, str] = {}
    class_labels: list[str] = []
    has_labels: bool | None = None
    content = [
        (n, line)
        for n, line in ((n, raw.strip(ASCII_WHITESPACE)) for n, raw in numbered)
        if not line.startswith("#")
    ]
    for k, (number, line) in enumerate(content):
        if not line.startswith("@"):
            raise DataError(
                f"{p}, line {number}: expected a '#' comment or an '@' header before "
                f"'@data', got {line[:60]!r}"
            )
        name, _, value = line[1:].partition(" ")
        key = name.lower()
        value = value.strip(ASCII_WHITESPACE)
        if key == "data":
            if has_labels is None:
                raise DataError(
                    f"{p}, line {number}: '@data' before any '@classLabel' header; "
                    "expected '@classLabel true <classes>' or '@classLabel false'"
                )
            return header, class_labels, has_labels, content[k + 1 :]
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
    raise DataError(f"{p}: no '@data' line; expected headers, '@data', then series")


def _read_ts_line(
    p: Path, number: int, line: str, class_labels: list[str] | None
) -> tuple[str | None, list[list[float]]]:
    """One series line of a ``.ts`` file -> ``(label or None, channels)``, each channel
    its values; ``class_labels`` None: the lines hold no label."""
    parts = line.split(":")
    label = None
    if class_labels is not None:
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
        parts = parts[:-1]
    channels = []
    for c, part in enumerate(parts):
        tokens = part.split(",")
        if part.strip(ASCII_WHITESPACE) == "":
            raise DataError(f"{p}, line {number}: channel {c} is empty; expected values")
        channels.append([_parse_value(t, p, number, line) for t in tokens])
    return label, channels


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
    for number, raw in LineStream(path, what="series file"):  # up to the first one only
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
    return parse_number(token, _NAN_TOKENS)


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
    lines = LineStream(p, what="UCR series file", factor=UCR_FACTOR, holds="the series")
    for number, raw in lines:
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
    if not series and not any(True for _ in lines):
        raise DataError(f"UCR series file '{p}' holds only blank lines; expected text")
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
