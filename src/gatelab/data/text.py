"""Labelled text: reading classification data, tokenising, vocabularies, label maps, padding.

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
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gatelab.data.lines import ASCII_WHITESPACE, decode_bytes, read_bytes, read_lines, split_lines
from gatelab.errors import DataError

__all__ = [
    "LABEL_COLUMN_NAMES",
    "PAD",
    "PAD_ID",
    "TEXT_COLUMN_NAMES",
    "UNK",
    "UNK_ID",
    "Labels",
    "TextDataset",
    "Tokenizer",
    "Vocabulary",
    "pad_sequences",
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

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1

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
    p: Path, numbered: list[tuple[int, str]], delimiter: str
) -> list[tuple[int, list[str]]]:
    """Parse lines into rows with the csv module; returns (first line number, fields)."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    numbers = [n for n, _ in numbered]
    reader = csv.reader(
        (line + "\n" for _, line in numbered), delimiter=delimiter, quoting=quoting, strict=True
    )
    rows: list[tuple[int, list[str]]] = []
    consumed = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            at = numbers[min(max(reader.line_num, 1), len(numbers)) - 1]
            raise DataError(f"{p}, line {at}: cannot parse the row ({exc})") from exc
        start = numbers[consumed]
        consumed = reader.line_num
        if any(cell.strip(ASCII_WHITESPACE) for cell in row):
            rows.append((start, row))
    return rows


def _split_rows(numbered: list[tuple[int, str]], delimiter: str) -> list[tuple[int, list[str]]]:
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
    data = read_bytes(p, what="labelled text file")
    text, encoding = decode_bytes(data, p)
    numbered = split_lines(text, keep_blank=True)
    first = next((line for _, line in numbered if line.strip(ASCII_WHITESPACE)), None)
    if first is None:
        raise DataError(f"labelled text file '{p}' holds only blank lines; expected rows")
    if delimiter is None:
        if "\t" in first:
            delimiter = "\t"
        elif SST_SEPARATOR in first:
            delimiter = SST_SEPARATOR
        elif "," in first:
            delimiter = ","
        else:
            raise DataError(
                f"{p}: cannot sniff the delimiter: the first line {first[:80]!r} holds "
                f"neither a tab nor a comma (nor {SST_SEPARATOR!r}); expected two or more "
                "columns (text and label), or pass delimiter="
            )
    elif not isinstance(delimiter, str) or not delimiter or delimiter.isspace():
        raise DataError(
            f"delimiter must be a non-blank string (a character such as ',' or a separator "
            f"such as '|||'), got {delimiter!r}"
        )

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
    guessed = ""
    lowered = {h.strip().lower() for h in first_row}
    known = lowered & (set(TEXT_COLUMN_NAMES) | set(LABEL_COLUMN_NAMES))
    by_name = [c for c in (text_column, label_column) if isinstance(c, str)]

    if known or by_name:
        header: list[str] | None = first_row
        body = rows[1:]
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
    else:
        header = None
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
        if len(rows) > 1 and first_row[li].strip() not in label_values:
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
            header = first_row
            guessed = (
                f" (line {rows[0][0]} was taken as a header: its label {first_row[li]!r} is "
                "not among the labels of the lines below it)"
            )
            body = rows[1:]
        else:
            body = rows
    if ti == li:
        raise DataError(f"{p}: the text and label columns are the same column ({ti})")

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


# --------------------------------------------------------------------------------------
# Tokenising
# --------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    \d+(?:[.,]\d+)+              # numbers with separators: 3.5, 1,000, 10.5.2
    | [^\W_]+?(?=n't\b)          # the word before a n't contraction: do|n't, ca|n't
    | n't\b                      # n't
    | '(?:s|re|ve|ll|d|m)\b      # 's 're 've 'll 'd 'm
    | [^\W_]+                    # words and plain numbers (letters/digits, any script)
    | [^\w\s]|_                  # anything else but space: one punctuation mark a token
    """,
    re.VERBOSE | re.IGNORECASE,
)


class Tokenizer:
    """A regular-expression word tokenizer.

    Tokens are words (runs of letters and digits, any script), numbers with decimal or
    thousands separators (``3.5``, ``1,000``), English contractions split the Penn
    Treebank way (``don't`` -> ``do``, ``n't``; ``it's`` -> ``it``, ``'s``; this matches
    the already tokenised SST-2 and MR data, ``does n't``), and every other non-space
    character as a token of its own (``"..."`` gives three ``"."``). The typographic
    apostrophe U+2019 is read as ``'``. Whitespace of any kind (including NEL U+0085)
    separates tokens.

    Args:
        lower: lower-case the text first.
    """

    def __init__(self, lower: bool = True) -> None:
        self.lower = bool(lower)

    def __call__(self, text: str) -> list[str]:
        """Tokenise one text; returns its tokens (an empty list for blank text)."""
        if not isinstance(text, str):
            raise DataError(f"Tokenizer expects a str, got {type(text).__name__}: {text!r}")
        text = text.replace("\u2019", "'")
        if self.lower:
            text = text.lower()
        return _TOKEN_RE.findall(text)

    def __repr__(self) -> str:
        return f"Tokenizer(lower={self.lower})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and other.lower == self.lower

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: ``{"type": "regex_word", "lower": bool}``."""
        return {"type": "regex_word", "lower": self.lower}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if not isinstance(d, dict) or d.get("type") != "regex_word":
            raise DataError(f"not a Tokenizer description: {d!r}; expected type 'regex_word'")
        lower = d.get("lower", True)
        if not isinstance(lower, bool):
            raise DataError(f"Tokenizer 'lower' must be true or false, got {lower!r}")
        return cls(lower=lower)


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------


class Vocabulary:
    """Token <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1.

    Build it with :meth:`build`. Ids 2.. follow frequency (descending), ties broken by the
    token's string order, so the same data always gives the same ids.

    Args:
        tokens: the id-ordered token list, starting with ``"<pad>"``, ``"<unk>"``.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise DataError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {tokens[:2]!r}")
        index: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if not isinstance(t, str):
                raise DataError(f"vocabulary entry {i} is not a string: {t!r}")
            if t in index:
                raise DataError(f"vocabulary token {t!r} appears twice (ids {index[t]} and {i})")
            index[t] = i
        self._itos = tokens
        self._stoi = index

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Count tokens and keep the frequent ones.

        Args:
            token_lists: tokenised texts (e.g. ``[tokenizer(t) for t in texts]``).
            min_freq: keep tokens seen at least this many times (>= 1).
            max_size: at most this many entries in all, the two specials included (>= 2).
                Default: no limit.

        Returns:
            The vocabulary. Literal ``"<pad>"``/``"<unk>"`` tokens in the data are not
            counted (they are the specials).
        """
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise DataError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2
        ):
            raise DataError(
                f"max_size must be an integer >= 2 (it counts {PAD!r} and {UNK!r}), "
                f"got {max_size!r}"
            )
        counts: Counter[str] = Counter()
        for i, tokens in enumerate(token_lists):
            if isinstance(tokens, str):
                raise DataError(
                    f"Vocabulary.build expects lists of tokens; item {i} is a str "
                    f"({tokens[:40]!r}); tokenise the texts first"
                )
            counts.update(tokens)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            kept = kept[: max_size - 2]
        vocab = cls([PAD, UNK, *kept])
        logger.info(
            "vocabulary: %d tokens kept of %d distinct (min_freq=%d, max_size=%s)",
            len(kept),
            len(counts),
            min_freq,
            max_size,
        )
        return vocab

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other._itos == self._itos

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Map tokens to ids; unknown tokens (and a literal ``"<pad>"``) give ``UNK_ID``."""
        if isinstance(tokens, str):
            raise DataError(
                f"Vocabulary.encode expects a list of tokens, got a str {tokens[:40]!r}"
            )
        get = self._stoi.get
        return [UNK_ID if t == PAD else get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to tokens; an id outside ``0..len-1`` raises DataError."""
        out = []
        n = len(self._itos)
        for i in ids:
            j = int(i)
            if not 0 <= j < n:
                raise DataError(f"token id {j} is out of range; the vocabulary has ids 0..{n - 1}")
            out.append(self._itos[j])
        return out

    def unknown_fraction(self, tokens: Iterable[str] | Iterable[Sequence[str]]) -> float:
        """The fraction of tokens that :meth:`encode` maps to ``<unk>``.

        Args:
            tokens: a flat list of tokens, or a list of token lists (texts).

        Returns:
            A number in [0, 1]. No tokens at all raises DataError (0/0 is no answer).
        """
        total = unknown = 0
        for item in tokens:
            group = [item] if isinstance(item, str) else item
            for t in group:
                total += 1
                unknown += t == PAD or t not in self._stoi
        if total == 0:
            raise DataError("unknown_fraction got no tokens; expected at least one")
        return unknown / total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: ``{"type": "vocabulary", "tokens": [...]}``."""
        return {"type": "vocabulary", "tokens": list(self._itos)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if not isinstance(d, dict) or d.get("type") != "vocabulary":
            raise DataError(f"not a Vocabulary description (type 'vocabulary'): {str(d)[:80]}")
        tokens = d.get("tokens")
        if not isinstance(tokens, list):
            raise DataError(f"Vocabulary 'tokens' must be a list, got {type(tokens).__name__}")
        return cls(tokens)


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


class Labels:
    """Class names <-> ids 0..K-1.

    Names are sorted: numerically when every name is an integer (``"2"`` before
    ``"10"``), else as strings.

    Args:
        names: the distinct class names; they are sorted as above.
    """

    def __init__(self, names: Iterable[str]) -> None:
        names = [str(n) for n in names]
        if not names:
            raise DataError("Labels needs at least one class name, got none")
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise DataError(f"class names must be distinct; repeated: {dup!r}")
        self.names: tuple[str, ...] = tuple(sorted(names, key=self.sort_key))
        self._index = {n: i for i, n in enumerate(self.names)}

    @staticmethod
    def sort_key(name: str) -> tuple[int, int | str]:
        """Sort key: integers numerically, before any other names (which sort as strings)."""
        try:
            return (0, int(name))
        except ValueError:
            return (1, name)

    @classmethod
    def fit(cls, labels: Iterable[str]) -> Labels:
        """The class map of the distinct values in ``labels``."""
        return cls(dict.fromkeys(str(x) for x in labels))

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Labels) and other.names == self.names

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Labels({list(self.names)!r})"

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Class names -> ids; an unknown name raises DataError listing the known ones."""
        out = []
        for x in labels:
            try:
                out.append(self._index[str(x)])
            except KeyError:
                raise DataError(
                    f"unknown class {x!r}; the known classes are {list(self.names)!r}"
                ) from None
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> class names; an id outside ``0..K-1`` raises DataError."""
        out = []
        for i in ids:
            j = int(i)
            if not 0 <= j < len(self.names):
                raise DataError(f"class id {j} is out of range 0..{len(self.names) - 1}")
            out.append(self.names[j])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: ``{"type": "labels", "names": [...]}``."""
        return {"type": "labels", "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Labels:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if not isinstance(d, dict) or d.get("type") != "labels":
            raise DataError(f"not a Labels description (type 'labels'): {str(d)[:80]}")
        names = d.get("names")
        if not isinstance(names, list):
            raise DataError(f"Labels 'names' must be a list, got {type(names).__name__}")
        return cls(names)


# --------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------


def pad_sequences(
    seqs: Sequence[Sequence[int]] | Sequence[torch.Tensor],
    pad_value: int = 0,
    max_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad integer sequences into a batch.

    Args:
        seqs: B sequences of token ids, as lists of ints or 1-D integer tensors.
        pad_value: the id written after each sequence's end.
        max_len: if given (>= 1), sequences longer than this are truncated from the end
            (their first ``max_len`` ids are kept).

    Returns:
        ``(padded, lengths)``: ``padded`` a LongTensor ``(B, T)`` with
        ``T = max(lengths)``, ``padded[b, :lengths[b]]`` the (truncated) sequence ``b`` and
        the rest ``pad_value``; ``lengths`` a LongTensor ``(B,)``.

    Raises:
        DataError: no sequences, an empty sequence (its index is named: the model layers
            cannot take length 0, so drop it or give it a token, rather than pad it), a
            non-integer value, or a tensor that is not 1-D.
    """
    if max_len is not None and (
        isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1
    ):
        raise DataError(f"max_len must be an integer >= 1 or None, got {max_len!r}")
    if len(seqs) == 0:
        raise DataError("pad_sequences got no sequences; expected at least one")
    rows: list[torch.Tensor] = []
    for i, s in enumerate(seqs):
        if isinstance(s, torch.Tensor):
            if s.dim() != 1:
                raise DataError(f"sequence {i} is a tensor of shape {tuple(s.shape)}; expected 1-D")
            if s.dtype.is_floating_point or s.dtype.is_complex or s.dtype == torch.bool:
                raise DataError(f"sequence {i} has dtype {s.dtype}; expected integer ids")
            t = s.to(torch.long)
        else:
            if any(isinstance(v, bool) or not isinstance(v, int) for v in s):
                bad = next(v for v in s if isinstance(v, bool) or not isinstance(v, int))
                raise DataError(f"sequence {i} holds {bad!r}; expected integer ids")
            t = torch.tensor(list(s), dtype=torch.long)
        if t.numel() == 0:
            raise DataError(
                f"sequence {i} is empty; every sequence needs length >= 1 (the model "
                "layers cannot take length 0)"
            )
        rows.append(t[:max_len] if max_len is not None else t)
    lengths = torch.tensor([r.numel() for r in rows], dtype=torch.long)
    padded = torch.full((len(rows), int(lengths.max())), pad_value, dtype=torch.long)
    for i, r in enumerate(rows):
        padded[i, : r.numel()] = r
    return padded, lengths
