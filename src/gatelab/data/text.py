"""Labelled text: reading classification data (tokenisers, vocabularies and label maps
are in :mod:`gatelab.data.vocab`, padding in :mod:`gatelab.data.batching`).

Two layouts are read by :func:`read_labelled_text`:

* a table file (TSV or CSV), with or without a header line;
* one file per class, the file's suffix naming the class (``rt-polarity.pos`` holds the
  texts of class ``"pos"``), given as a directory, as a path *stem* such as
  ``.../rt-polarity`` next to which ``rt-polarity.pos`` and ``rt-polarity.neg`` exist, or
  as a list of files.

Text files are decoded as UTF-8, falling back to latin-1 with a logged warning, and split
on ``"\\n"`` only (see :mod:`gatelab.data.lines`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gatelab.data.lines import (
    ASCII_WHITESPACE,
    TABLE_FACTOR,
    LineStream,
    read_lines,
)
from gatelab.data.vocab import Labels
from gatelab.errors import DataError

__all__ = [
    "LABEL_COLUMN_NAMES",
    "TEXT_COLUMN_NAMES",
    "TextDataset",
    "read_labelled_text",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Header names recognised (case-insensitive) as the text column, in order of preference.
TEXT_COLUMN_NAMES: tuple[str, ...] = ("text", "sentence", "content", "review")
#: Header names recognised (case-insensitive) as the label column.
LABEL_COLUMN_NAMES: tuple[str, ...] = ("label", "score", "sentiment")

#: The field separator of the SST files (``LABEL ||| text``), found by sniffing.
SST_SEPARATOR = "|||"

# A value "looks like a class label" when it is short and has no whitespace inside.
_MAX_LABEL_CHARS = 32


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass
class TextDataset:
    """Texts with their class labels, in file order.

    Attributes:
        texts: N texts, surrounding ASCII whitespace stripped (other whitespace such as
            NEL U+0085 is content and kept), never empty.
        labels: N class names as strings (e.g. ``"0"``, ``"pos"``), aligned with texts.
        path: what was read: the table file, the directory, the stem, or for a list of
            per-class files the tuple of those files.
        encoding: ``"utf-8"``, or ``"latin-1"`` when at least one file read was not valid
            UTF-8 (each such file is named in a logged warning).
        files: every file read, in reading order.
    """

    texts: list[str]
    labels: list[str]
    path: Path | tuple[Path, ...]
    encoding: str
    files: tuple[Path, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, ordered as :class:`Labels` orders them."""
        return list(Labels.fit(self.labels).names)


def read_labelled_text(
    path: PathLike | Sequence[PathLike],
    *,
    text_column: str | int | None = None,
    label_column: str | int | None = None,
    delimiter: str | None = None,
) -> TextDataset:
    """Read a labelled text classification data set.

    Args:
        path: a TSV/CSV table file; a directory of one-file-per-class files; a path stem
            ``.../name`` next to which files ``name.<class>`` exist; or a list of files,
            each file's suffix naming its class.
        text_column: the text column of a table, by header name (case-insensitive) or
            0-based index. Default: the column named one of :data:`TEXT_COLUMN_NAMES`.
        label_column: the label column, likewise. Default: the column named one of
            :data:`LABEL_COLUMN_NAMES`. With no header line and two columns, the column
            whose values look like short class labels.
        delimiter: the table's field separator. Default: sniffed from the first line:
            tab if it holds a tab, else ``|||`` if it holds that (the SST files,
            ``LABEL ||| text``), else comma. Tab-separated files are read without
            quoting (a ``"`` is an ordinary character: real TSVs hold unbalanced
            quotes); a multi-character separator such as ``|||`` likewise; comma and
            other single characters use CSV quoting (:mod:`csv`). In ``|||`` files the
            Penn Treebank escapes ``\\/`` and ``\\*`` are read as ``/`` and ``*``.

    Returns:
        A :class:`TextDataset`. Blank lines are skipped.

    Raises:
        DataError: a missing or empty file, no recognisable text/label columns, a label
            column with a single class, a row with the wrong number of columns, an empty
            text or label, or column options given for a one-file-per-class layout.
    """
    if isinstance(path, (list, tuple)):
        files = [Path(p) for p in path]
        if not files:
            raise DataError("read_labelled_text got an empty list of files; expected >= 2")
        _reject_table_options(text_column, label_column, delimiter, tuple(files))
        return _read_class_files(
            [(_suffix_label(f), f) for f in files], tuple(files), "the list of files"
        )

    p = Path(path)
    if p.is_dir():
        _reject_table_options(text_column, label_column, delimiter, p)
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"directory '{p}' holds no files; expected one file per class")
        return _read_class_files([(_suffix_label(f), f) for f in files], p, f"directory '{p}'")
    if p.exists():
        return _read_table(
            p, text_column=text_column, label_column=label_column, delimiter=delimiter
        )
    # A stem: '.../rt-polarity' -> '.../rt-polarity.pos', '.../rt-polarity.neg'.
    prefix = p.name + "."
    siblings = (
        sorted(f for f in p.parent.iterdir() if f.is_file() and f.name.startswith(prefix))
        if p.parent.is_dir() and p.name
        else []
    )
    if not siblings:
        raise DataError(
            f"labelled text not found: '{p}' does not exist, and is not a stem of "
            f"one-file-per-class files (no '{prefix}<class>' next to it)"
        )
    _reject_table_options(text_column, label_column, delimiter, p)
    return _read_class_files(
        [(f.name[len(prefix) :], f) for f in siblings], p, f"files '{prefix}*' in '{p.parent}'"
    )


def _reject_table_options(
    text_column: object, label_column: object, delimiter: object, where: object
) -> None:
    given = {
        k: v
        for k, v in (
            ("text_column", text_column),
            ("label_column", label_column),
            ("delimiter", delimiter),
        )
        if v is not None
    }
    if given:
        raise DataError(
            f"{', '.join(f'{k}={v!r}' for k, v in given.items())} given, but {where} is a "
            "one-file-per-class layout (the file suffix is the label); these options apply "
            "to a table file only"
        )


def _suffix_label(f: Path) -> str:
    if not f.suffix or f.suffix == ".":
        raise DataError(
            f"file '{f}' has no suffix; in a one-file-per-class layout the suffix names the "
            "class (e.g. 'reviews.pos', 'reviews.neg')"
        )
    return f.suffix[1:]


def _read_class_files(
    labelled_files: list[tuple[str, Path]], path: Path | tuple[Path, ...], where: str
) -> TextDataset:
    classes = sorted({label for label, _ in labelled_files})
    if len(classes) < 2:
        names = ", ".join(f"'{f}'" for _, f in labelled_files)
        raise DataError(
            f"{where} gives a single class {classes[0]!r} (files: {names}); expected files "
            "with at least two different suffixes, one per class"
        )
    ordered = sorted(labelled_files, key=lambda lf: (Labels.sort_key(lf[0]), str(lf[1])))
    texts: list[str] = []
    labels: list[str] = []
    encoding = "utf-8"
    for label, f in ordered:
        lines = read_lines(f, what=f"text file of class {label!r}")
        if lines.encoding != "utf-8":
            encoding = lines.encoding
        for _, line in lines.lines:
            texts.append(line.strip(ASCII_WHITESPACE))
            labels.append(label)
        logger.info("read %d texts of class %r from %s", len(lines.lines), label, f)
    return TextDataset(
        texts=texts,
        labels=labels,
        path=path,
        encoding=encoding,
        files=tuple(f for _, f in ordered),
    )


def _parse_rows(
    p: Path, numbered: Iterable[tuple[int, str]], delimiter: str
) -> list[tuple[int, list[str]]]:
    """Parse lines into rows with the csv module; returns (first line number, fields)."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    taken: list[int] = []  # the numbers of the lines the reader took for the row it reads

    def feed() -> Iterator[str]:
        for number, line in numbered:
            taken.append(number)
            yield line + "\n"

    reader = csv.reader(feed(), delimiter=delimiter, quoting=quoting, strict=True)
    rows: list[tuple[int, list[str]]] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{p}, line {taken[-1]}: cannot parse the row ({exc})") from exc
        start = taken[0]
        taken.clear()
        if any(cell.strip(ASCII_WHITESPACE) for cell in row):
            rows.append((start, row))
    return rows


def _split_rows(numbered: Iterable[tuple[int, str]], delimiter: str) -> list[tuple[int, list[str]]]:
    """Rows of a file whose fields are separated by a multi-character separator (no
    quoting: a ``"`` is an ordinary character)."""
    return [(n, line.split(delimiter)) for n, line in numbered if line.strip(ASCII_WHITESPACE)]


def _unescape_ptb(text: str) -> str:
    """Undo the Penn Treebank escapes of the SST files: ``\\/`` -> ``/``, ``\\*`` -> ``*``."""
    return text.replace("\\/", "/").replace("\\*", "*")


def _looks_like_labels(values: list[str]) -> bool:
    if not values:
        return False
    if any(not v or len(v) > _MAX_LABEL_CHARS or any(c.isspace() for c in v) for v in values):
        return False
    return len(set(values)) <= max(2, len(values) // 2)


def _find_named(header: list[str], names: tuple[str, ...], what: str, p: Path) -> int | None:
    lowered = [h.strip().lower() for h in header]
    hits = [i for i, h in enumerate(lowered) if h in names]
    if len(hits) > 1:
        raise DataError(
            f"{p}: header {header!r} has several {what} columns "
            f"({', '.join(repr(header[i]) for i in hits)}); pass {what}_column= to choose"
        )
    return hits[0] if hits else None


def _resolve(column: str | int, header: list[str] | None, n_columns: int, p: Path) -> int:
    if isinstance(column, bool) or not isinstance(column, (str, int)):
        raise DataError(f"column must be a name or a 0-based index, got {column!r}")
    if isinstance(column, int):
        if not 0 <= column < n_columns:
            raise DataError(
                f"{p}: column index {column} is out of range; the file has {n_columns} "
                f"columns (0..{n_columns - 1})"
            )
        return column
    if header is None:
        raise DataError(f"{p}: column {column!r} given by name, but the file has no header")
    for i, h in enumerate(header):
        if h == column:
            return i
    lowered = [h.strip().lower() for h in header]
    if column.strip().lower() in lowered:
        return lowered.index(column.strip().lower())
    raise DataError(f"{p}: no column named {column!r}; the header is {header!r}")


def _complete_pair(ti: int | None, li: int | None) -> tuple[int, int]:
    """In a two-column table, the column not given is the other one."""
    if ti is None and li is not None:
        return 1 - li, li
    if li is None and ti is not None:
        return ti, 1 - ti
    if ti is None or li is None:
        raise DataError("cannot tell the text and label columns apart")
    return ti, li


def _accepted() -> str:
    return f"text: {list(TEXT_COLUMN_NAMES)}, label: {list(LABEL_COLUMN_NAMES)}"


def _read_table(
    p: Path,
    *,
    text_column: str | int | None,
    label_column: str | int | None,
    delimiter: str | None,
) -> TextDataset:
    # a row a line: read in chunks, so memory holds the rows, never the file's bytes
    numbered = LineStream(
        p, what="labelled text file", keep_blank=True, factor=TABLE_FACTOR, holds="the rows"
    )
    encoding = numbered.encoding
    first = next((line for _, line in numbered if line.strip(ASCII_WHITESPACE)), None)
    if first is None:
        raise DataError(f"labelled text file '{p}' holds only blank lines; expected rows")
    delimiter = _sniff_delimiter(p, first, delimiter)
    if len(delimiter) == 1:
        rows = _parse_rows(p, numbered, delimiter)
    else:
        rows = _split_rows(numbered, delimiter)
    first_row = rows[0][1]
    n_columns = len(first_row)
    if n_columns < 2:
        raise DataError(
            f"{p}, line {rows[0][0]}: found 1 column with delimiter {delimiter!r}; "
            "expected a text column and a label column"
        )
    lowered = {h.strip().lower() for h in first_row}
    known = lowered & (set(TEXT_COLUMN_NAMES) | set(LABEL_COLUMN_NAMES))
    by_name = [c for c in (text_column, label_column) if isinstance(c, str)]
    if known or by_name:
        header, body, ti, li = _named_columns(p, rows, text_column, label_column)
        guessed = ""
    else:
        header, body, ti, li, guessed = _guessed_columns(p, rows, text_column, label_column)
    if ti == li:
        raise DataError(f"{p}: the text and label columns are the same column ({ti})")
    texts, labels = _read_body(p, body, ti, li, n_columns, delimiter)
    if not texts:
        raise DataError(f"{p}: no data rows after the header {header!r}; expected rows")
    distinct = set(labels)
    if len(distinct) < 2:
        name = header[li] if header is not None else f"#{li}"
        raise DataError(
            f"{p}: label column {name!r} holds a single class {labels[0]!r} in all "
            f"{len(labels)} rows; expected at least two classes{guessed}"
        )
    logger.info(
        "read %d labelled texts (%d classes) from %s (%s)", len(texts), len(distinct), p, encoding
    )
    return TextDataset(texts=texts, labels=labels, path=p, encoding=encoding, files=(p,))


def _sniff_delimiter(p: Path, first: str, delimiter: str | None) -> str:
    """The delimiter given (checked), or the one the first line shows."""
    if delimiter is None:
        if "\t" in first:
            return "\t"
        if SST_SEPARATOR in first:
            return SST_SEPARATOR
        if "," in first:
            return ","
        raise DataError(
            f"{p}: cannot sniff the delimiter: the first line {first[:80]!r} holds "
            f"neither a tab nor a comma (nor {SST_SEPARATOR!r}); expected two or more "
            "columns (text and label), or pass delimiter="
        )
    if not isinstance(delimiter, str) or not delimiter or delimiter.isspace():
        raise DataError(
            f"delimiter must be a non-blank string (a character such as ',' or a separator "
            f"such as '|||'), got {delimiter!r}"
        )
    return delimiter


Rows = list[tuple[int, list[str]]]


def _named_columns(
    p: Path, rows: Rows, text_column: str | int | None, label_column: str | int | None
) -> tuple[list[str], Rows, int, int]:
    """``(header, body, text index, label index)`` of a table whose first row is a header."""
    header = rows[0][1]
    n_columns = len(header)
    ti = (
        _resolve(text_column, header, n_columns, p)
        if text_column is not None
        else _find_named(header, TEXT_COLUMN_NAMES, "text", p)
    )
    li = (
        _resolve(label_column, header, n_columns, p)
        if label_column is not None
        else _find_named(header, LABEL_COLUMN_NAMES, "label", p)
    )
    if n_columns == 2 and (ti is None) != (li is None):
        ti, li = _complete_pair(ti, li)
    if ti is None or li is None:
        raise DataError(
            f"{p}: no recognisable {'text' if ti is None else 'label'} column in the "
            f"header {header!r}; names accepted (case-insensitive): {_accepted()}; "
            "or pass text_column=/label_column="
        )
    return header, rows[1:], ti, li


def _guessed_columns(
    p: Path, rows: Rows, text_column: str | int | None, label_column: str | int | None
) -> tuple[list[str] | None, Rows, int, int, str]:
    """``(header, body, text index, label index, note)`` of a table without a known
    header: columns by index, or the two-column table's label column guessed from its
    values; the first row is a header only when its label is on no other line."""
    first_row = rows[0][1]
    n_columns = len(first_row)
    ti = _resolve(text_column, None, n_columns, p) if text_column is not None else None
    li = _resolve(label_column, None, n_columns, p) if label_column is not None else None
    rest = rows[1:] if len(rows) > 1 else rows
    if ti is None or li is None:
        if n_columns != 2:
            raise DataError(
                f"{p}: no recognisable text/label columns: the first line {first_row!r} "
                f"is not a header with names accepted ({_accepted()}), and with "
                f"{n_columns} columns the columns cannot be guessed; pass "
                "text_column=/label_column="
            )
        if ti is None and li is None:
            candidates = [
                j
                for j in range(2)
                if _looks_like_labels([r[j].strip() for _, r in rest if len(r) == 2])
            ]
            if len(candidates) != 1:
                raise DataError(
                    f"{p}: no recognisable text/label columns: the first line "
                    f"{first_row!r} is not a header with names accepted ({_accepted()}), "
                    f"and {'no' if not candidates else 'each'} column looks like short "
                    "class labels; pass text_column=/label_column="
                )
            li = candidates[0]
        ti, li = _complete_pair(ti, li)
    label_values = {r[li].strip() for _, r in rows[1:] if len(r) == n_columns}
    if not (len(rows) > 1 and first_row[li].strip() not in label_values):
        return None, rows, ti, li, ""
    if text_column is None or label_column is None:
        raise DataError(
            f"{p}: no recognisable text/label columns: the first line {first_row!r} "
            f"is not a header with names accepted (case-insensitive: {_accepted()}), "
            f"and not a data row either (its label {first_row[li]!r} in column {li} "
            "is on no other line); pass text_column=/label_column="
        )
    logger.info(
        "%s: treating the first line %r as a header: its label %r is not among "
        "the labels of the lines below it",
        p,
        first_row,
        first_row[li],
    )
    guessed = (
        f" (line {rows[0][0]} was taken as a header: its label {first_row[li]!r} is "
        "not among the labels of the lines below it)"
    )
    return first_row, rows[1:], ti, li, guessed


def _read_body(
    p: Path, body: Rows, ti: int, li: int, n_columns: int, delimiter: str
) -> tuple[list[str], list[str]]:
    """The texts and labels of the data rows; a short row or an empty field raises."""
    texts: list[str] = []
    labels: list[str] = []
    for number, row in body:
        if len(row) != n_columns:
            raise DataError(
                f"{p}, line {number}: found {len(row)} columns separated by {delimiter!r}, "
                f"expected {n_columns}: {delimiter.join(row)[:120]!r}"
            )
        t, lab = row[ti].strip(ASCII_WHITESPACE), row[li].strip()
        if delimiter == SST_SEPARATOR:
            t = _unescape_ptb(t)
        if not t:
            raise DataError(f"{p}, line {number}: empty text (column {ti}); expected text")
        if not lab:
            raise DataError(f"{p}, line {number}: empty label (column {li}); expected a class")
        texts.append(t)
        labels.append(lab)
    return texts, labels
