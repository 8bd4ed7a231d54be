"""Sentence pairs for translation: a tab-separated pairs file and a fixed seeded
train/valid/test split of its pairs."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gatelab.data.lines import (
    ASCII_WHITESPACE,
    PAIRS_FACTOR,
    LineStream,
)
from gatelab.errors import DataError

__all__ = [
    "PairSplits",
    "PairsDataset",
    "iter_pairs",
    "read_sentence_pairs",
    "split_indices",
    "split_pairs",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Characters that end a complete sentence (or close a quotation after one).
_SENTENCE_END = frozenset(".!?…»\"')]”’。！？")


@dataclass
class PairsDataset:
    """Sentence pairs read from a tab-separated file.

    Attributes:
        pairs: ``(source, target)`` pairs in file order, surrounding ASCII whitespace
            stripped from each side.
        skipped: ``(line_number, line)`` of the lines left out: at most the file's last
            line, when it is cut off (see :func:`read_sentence_pairs`).
        path: the file read.
        encoding: ``"utf-8"`` or ``"latin-1"`` (the logged fallback).
    """

    pairs: list[tuple[str, str]]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    path: Path | None = None
    encoding: str = "utf-8"

    def __len__(self) -> int:
        return len(self.pairs)


def _cut_off_reason(line: str, fields: list[str], usual: int | None, ends_nl: bool) -> str:
    """Why the last line looks cut off, or "" when it looks whole."""
    if len(fields) < 2:
        return "it has no tab"
    if usual is not None and len(fields) < usual:
        return f"it has {len(fields)} tab-separated fields, the other lines {usual}"
    if not fields[0].strip(ASCII_WHITESPACE) or not fields[1].strip(ASCII_WHITESPACE):
        return "one side is empty"
    if fields[-1] != fields[-1].rstrip(ASCII_WHITESPACE):
        return "it ends in whitespace, mid-sentence"
    if not ends_nl and len(fields) == 2 and line.rstrip()[-1:] not in _SENTENCE_END:
        return "the file ends without a newline, mid-sentence"
    return ""


def read_sentence_pairs(path: PathLike) -> PairsDataset:
    """Read ``source<TAB>target`` sentence pairs (e.g. Tatoeba's ``eng-fra.txt``).

    Columns after the second (e.g. an attribution) are ignored. Blank lines are skipped;
    files are decoded as UTF-8 with a logged latin-1 fallback and split on ``"\\n"``
    only. The file's last line may be cut off (a download cut short): it is skipped,
    logged as a warning with its line number, and kept in ``skipped``, when it has no
    tab, fewer fields than the other lines, an empty side, ends in whitespace (the cut
    fell after a word, as in ``translation/eng-fra.txt``: ``They did it again.<TAB>Ils
    l'ont ``), or when the file does not end with a newline and the line's last character
    does not end a sentence. Anywhere else these are errors.

    Args:
        path: the file.

    Returns:
        A :class:`PairsDataset`.

    Raises:
        DataError: a missing or empty file; a line other than the last with no tab or
            an empty side (its line number is named); no pairs at all.
    """
    p = Path(path)
    # a pair a line: read in chunks, so memory holds the pairs, never the file's bytes
    lines = LineStream(p, what="sentence pairs file", factor=PAIRS_FACTOR, holds="the pairs")
    skipped: list[tuple[int, str]] = []
    pairs = list(iter_pairs(lines, skipped))
    if not pairs:
        raise DataError(f"{p}: no sentence pairs; expected 'source<TAB>target' lines")
    logger.info("read %d sentence pairs from %s (%d skipped)", len(pairs), p, len(skipped))
    return PairsDataset(pairs=pairs, skipped=skipped, path=p, encoding=lines.encoding)


def iter_pairs(
    lines: LineStream, skipped: list[tuple[int, str]], *, log: bool = True
) -> Iterator[tuple[str, str]]:
    """The pairs of :func:`read_sentence_pairs`, one at a time, from a pairs file's lines.

    Validates as it goes (the same errors, raised when the line is reached); a cut-off
    last line is appended to ``skipped`` and, when ``log``, logged as a warning (a later
    pass over the same file need not warn again). Memory holds one line and a count of
    fields per line length, so a file of any size can be walked (each pass a new call).
    """
    p = lines.path
    counts: Counter[int] = Counter()  # fields per line, the last line left out
    held = None  # each line waits for the next: the last one is judged apart
    for numbered in lines:
        if held is not None:
            counts[held[1].count("\t") + 1] += 1
            yield _pair(p, *held)
        held = numbered
    if held is None:
        raise DataError(f"sentence pairs file '{p}' holds only blank lines; expected pairs")
    number, line = held
    usual = counts.most_common(1)[0][0] if counts else None
    reason = _cut_off_reason(line, line.split("\t"), usual, lines.ends_with_newline)
    if reason and log:
        logger.warning(
            "%s, line %d: skipping the last line, cut off (%s): %r", p, number, reason, line[:80]
        )
    if reason:
        skipped.append((number, line))
    else:
        yield _pair(p, number, line)


def _pair(p: Path, number: int, line: str) -> tuple[str, str]:
    """``(source, target)`` of one line; no tab or an empty side raises, naming the line."""
    fields = line.split("\t")
    if len(fields) < 2:
        raise DataError(
            f"{p}, line {number}: no tab; expected 'source<TAB>target', got {line[:80]!r}"
        )
    source, target = fields[0].strip(ASCII_WHITESPACE), fields[1].strip(ASCII_WHITESPACE)
    if not source or not target:
        raise DataError(
            f"{p}, line {number}: empty {'source' if not source else 'target'}; "
            f"expected 'source<TAB>target', got {line[:80]!r}"
        )
    return source, target


class PairSplits(NamedTuple):
    """Disjoint train/valid/test parts of a pair list, each in the original order."""

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]


def split_pairs(
    pairs: Sequence[tuple[str, str]] | PairsDataset,
    *,
    valid: int = 1000,
    test: int = 1000,
    seed: int = 0,
) -> PairSplits:
    """Split pairs into train/valid/test with a fixed seeded permutation.

    The positions ``0..N-1`` are permuted with ``numpy.random.default_rng(seed)``; the
    first ``test`` go to test, the next ``valid`` to valid, the rest to train; each part
    keeps the file order. The parts are disjoint by position (a pair repeated in the
    file can land in two parts), and the same N and seed always give the same split.

    Args:
        pairs: the pairs (or a :class:`PairsDataset`).
        valid: number of validation pairs (>= 0).
        test: number of test pairs (>= 0).
        seed: seed of the permutation (>= 0).

    Returns:
        A :class:`PairSplits` ``(train, valid, test)``.

    Raises:
        DataError: negative sizes, or sizes leaving no training pair.
    """
    items = list(pairs.pairs if isinstance(pairs, PairsDataset) else pairs)
    train_idx, valid_idx, test_idx = split_indices(len(items), valid=valid, test=test, seed=seed)
    return PairSplits(
        train=[items[i] for i in train_idx],
        valid=[items[i] for i in valid_idx],
        test=[items[i] for i in test_idx],
    )


def split_indices(
    n: int, *, valid: int = 1000, test: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions ``(train, valid, test)`` of :func:`split_pairs` for ``n`` pairs, each
    sorted: ``numpy.random.default_rng(seed).permutation(n)`` cut into test, valid, train.

    Raises:
        DataError: negative sizes, or sizes leaving no training pair.
    """
    for name, value in (("valid", valid), ("test", test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name} must be an integer >= 0, got {value!r}")
    if valid + test >= n:
        raise DataError(
            f"valid={valid} + test={test} leaves no training pair out of {n}; "
            f"expected valid + test < {n}"
        )
    order = np.random.default_rng(int(seed)).permutation(n)
    return (
        np.sort(order[test + valid :]),
        np.sort(order[test : test + valid]),
        np.sort(order[:test]),
    )
