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
    "SPLIT_RULES",
    "PairSplits",
    "PairsDataset",
    "iter_pairs",
    "read_sentence_pairs",
    "split_codes",
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


#: The split rules: ``"selection"`` (streamed, the default) and ``"permutation"`` (the rule of
#: run folders made before it; it needs 8 bytes a pair in memory).
SPLIT_RULES = ("selection", "permutation")

#: Pairs decided at a time by :func:`split_codes` (its memory: ~17 bytes each).
_SPLIT_BLOCK = 1 << 16


def split_pairs(
    pairs: Sequence[tuple[str, str]] | PairsDataset,
    *,
    valid: int = 1000,
    test: int = 1000,
    seed: int = 0,
    rule: str = "selection",
) -> PairSplits:
    """Split pairs into train/valid/test with a fixed seeded rule (:func:`split_codes`).

    Each part keeps the file order. The parts are disjoint by position (a pair repeated in
    the file can land in two parts), and the same N, sizes and seed always give the same
    split.

    Args:
        pairs: the pairs (or a :class:`PairsDataset`).
        valid: number of validation pairs (>= 0).
        test: number of test pairs (>= 0).
        seed: seed of the rule (>= 0).
        rule: ``"selection"`` (streamed) or ``"permutation"`` (the rule of run folders
            made before it), see :func:`split_codes`.

    Returns:
        A :class:`PairSplits` ``(train, valid, test)``.

    Raises:
        DataError: negative sizes, or sizes leaving no training pair.
    """
    items = list(pairs.pairs if isinstance(pairs, PairsDataset) else pairs)
    train_idx, valid_idx, test_idx = split_indices(
        len(items), valid=valid, test=test, seed=seed, rule=rule
    )
    return PairSplits(
        train=[items[i] for i in train_idx],
        valid=[items[i] for i in valid_idx],
        test=[items[i] for i in test_idx],
    )


def split_indices(
    n: int, *, valid: int = 1000, test: int = 1000, seed: int = 0, rule: str = "selection"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions ``(train, valid, test)`` of :func:`split_pairs` for ``n`` pairs, each
    sorted (in memory: ``(N,)`` arrays; :func:`split_codes` streams the same split).

    Raises:
        DataError: negative sizes, or sizes leaving no training pair.
    """
    codes = np.concatenate([np.zeros(0, np.uint8), *split_codes(n, valid, test, seed, rule)])
    return tuple(np.flatnonzero(codes == c) for c in (0, 1, 2))


def split_codes(
    n: int,
    valid: int = 1000,
    test: int = 1000,
    seed: int = 0,
    rule: str = "selection",
    *,
    block: int = _SPLIT_BLOCK,
) -> Iterator[np.ndarray]:
    """The part of each of ``n`` pairs in file order (0 train, 1 valid, 2 test), as
    ``uint8`` blocks of at most ``block`` pairs: exactly ``valid`` and ``test`` of them.

    ``"selection"`` decides pair ``k`` as it comes (sequential sampling, Knuth's
    Algorithm S for two parts at once): with ``r = n - k`` pairs left, of which ``t`` must
    still go to test and ``v`` to valid, draw ``j`` uniform in ``[0, r)`` from
    ``numpy.random.default_rng(seed)`` (``integers``, int64); ``j < t``: test,
    ``t <= j < t + v``: valid, else train. Every split of the given sizes is equally
    likely, the sizes are exact, and memory is O(block): a file of any size is split in
    one pass. The result depends on ``(seed, n, valid, test)`` only, not on ``block``.

    ``"permutation"`` is the rule of run folders made before: the positions permuted with
    ``numpy.random.default_rng(seed).permutation(n)``, the first ``test`` to test, the next
    ``valid`` to valid (O(n) memory: 8 bytes a pair).

    Raises:
        DataError: negative sizes, or sizes leaving no training pair.
        ValueError: an unknown ``rule``.
    """
    for name, value in (("valid", valid), ("test", test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name} must be an integer >= 0, got {value!r}")
    if rule not in SPLIT_RULES:
        raise ValueError(f"rule={rule!r}; expected one of {SPLIT_RULES}")
    if valid + test >= n:
        raise DataError(
            f"valid={valid} + test={test} leaves no training pair out of {n}; "
            f"expected valid + test < {n}"
        )
    if rule == "permutation":
        yield from _permutation_codes(n, valid, test, seed, block)
        return
    rng = np.random.default_rng(int(seed))
    t_left, v_left = int(test), int(valid)
    for k0 in range(0, n, block):
        r = np.arange(n - k0, max(n - k0 - block, 0), -1, dtype=np.int64)  # pairs left
        codes = np.zeros(len(r), dtype=np.uint8)
        if t_left + v_left:
            j = rng.integers(0, r, dtype=np.int64)
            # the held-out counts only fall, so the first count bounds every later choice
            for i in np.flatnonzero(j < t_left + v_left).tolist():
                if j[i] < t_left:
                    codes[i], t_left = 2, t_left - 1
                elif j[i] < t_left + v_left:
                    codes[i], v_left = 1, v_left - 1
        yield codes


def _permutation_codes(n: int, valid: int, test: int, seed: int, block: int):
    order = np.random.default_rng(int(seed)).permutation(n)
    codes = np.zeros(n, dtype=np.uint8)
    codes[order[test : test + valid]], codes[order[:test]] = 1, 2
    del order
    for k0 in range(0, n, block):
        yield codes[k0 : k0 + block]
