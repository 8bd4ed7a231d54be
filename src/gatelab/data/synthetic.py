"""Synthetic long-time-lag tasks, generated as their papers define them.

* :func:`adding_problem`: Hochreiter & Schmidhuber (1997), "Long Short-Term Memory",
  Experiment 4 (the adding problem).
* :func:`temporal_order`: the same paper, Experiment 6 (temporal order, tasks 6a and 6b).
* :func:`copy_task`: the copy-memory problem of Arjovsky, Shah & Bengio (2016),
  "Unitary Evolution Recurrent Neural Networks".
* :func:`parity` and :func:`cycle_navigation`: regular-language tasks of Deletang et al.
  (2023), "Neural Networks and the Chomsky Hierarchy", as the xLSTM paper (Beck et al.
  2024) uses them for length generalisation: train on short strings, test on long ones.

Every generator takes a ``seed`` and draws from ``numpy.random.default_rng(seed)``: the
same arguments give the same arrays. Real-valued inputs are float32, lengths and class
ids int64. :data:`TASKS` maps task names to generators.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from gatelab.errors import DataError

__all__ = [
    "ADDING_TOLERANCE",
    "CYCLE_MOVES",
    "TASKS",
    "TEMPORAL_ORDER_SYMBOLS",
    "adding_problem",
    "copy_task",
    "cycle_navigation",
    "get_task",
    "parity",
    "temporal_order",
]

logger = logging.getLogger(__name__)

#: A sequence of the adding problem counts as solved when the absolute error of the
#: output at the sequence end is below this (Hochreiter & Schmidhuber 1997, Exp. 4).
ADDING_TOLERANCE = 0.04

#: The temporal order alphabet, in one-hot index order: ``a b c d`` (distractors),
#: ``E`` (start), ``B`` (end, the trigger), ``X``, ``Y`` (the relevant symbols).
TEMPORAL_ORDER_SYMBOLS: tuple[str, ...] = ("a", "b", "c", "d", "E", "B", "X", "Y")

# Relevant positions (0-based time indices, inclusive ranges) of the 1997 paper's tasks,
# whose sequences have lengths 100..110; other lengths scale them.
_TEMPORAL_VARIANTS: dict[str, tuple[tuple[int, int], ...]] = {
    "6a": ((10, 20), (50, 60)),
    "6b": ((10, 20), (33, 43), (66, 76)),
}


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.default_rng(int(seed))


def adding_problem(
    n: int,
    T: int = 100,
    *,
    seed: int = 0,
    variable_length: bool = True,
    return_positions: bool = False,
) -> tuple[np.ndarray, ...]:
    """The adding problem (Hochreiter & Schmidhuber 1997, Experiment 4).

    Each element is a pair: the first component uniform in [-1, 1), the second a marker
    in {1.0, 0.0, -1.0}. Exactly two pairs are marked 1.0: one chosen uniformly among the
    first ten pairs (its value is X1), the other uniformly among the first ``T // 2 - 1``
    pairs still unmarked (X2). The first and the final pair have marker -1 unless marked
    (only the first can be). If the first pair is marked, its value is set to 0 (the
    paper: "X1 is set to zero in the rare case where the first pair got marked"; this
    zeroes whichever of X1, X2 sits there, so the target stays ``0.5 + (X1 + X2) / 4``
    of the values in X). The target is ``0.5 + (X1 + X2) / 4``, in [0, 1]; a sequence
    counts as solved when the absolute error at its end is below
    :data:`ADDING_TOLERANCE` (0.04).

    Args:
        n: number of sequences (>= 1).
        T: the minimal sequence length (>= 10, so that ten pairs exist).
        seed: seed of ``numpy.random.default_rng``.
        variable_length: draw each length uniformly from ``T .. T + T // 10`` (the
            paper); False: every length is T.
        return_positions: also return the marked positions.

    Returns:
        ``(X, lengths, y)``, or ``(X, lengths, y, positions)``:

        * X ``(n, T_max, 2)`` float32 with ``T_max = T + T // 10`` (or T); steps at and
          after a sequence's length are zero in both components;
        * lengths ``(n,)`` int64;
        * y ``(n,)`` float32 targets;
        * positions ``(n, 2)`` int64, the time indices of X1 and X2 (in that order).
    """
    n = _count(n, "n")
    T = _count(T, "T", 10)
    rng = _rng(seed)
    t_max = T + T // 10 if variable_length else T
    if variable_length:
        lengths = rng.integers(T, t_max + 1, size=n, dtype=np.int64)
    else:
        lengths = np.full(n, T, dtype=np.int64)
    values = rng.uniform(-1.0, 1.0, size=(n, t_max)).astype(np.float32)
    p1 = rng.integers(0, 10, size=n, dtype=np.int64)
    # The k-th of the pairs still unmarked, counted from the start, is k if k < p1 else k+1.
    k = rng.integers(0, T // 2 - 1, size=n, dtype=np.int64)
    p2 = np.where(k < p1, k, k + 1)
    rows = np.arange(n)
    markers = np.zeros((n, t_max), dtype=np.float32)
    markers[:, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, p1] = 1.0
    markers[rows, p2] = 1.0
    values[(p1 == 0) | (p2 == 0), 0] = 0.0
    values[np.arange(t_max)[None, :] >= lengths[:, None]] = 0.0
    y = (0.5 + (values[rows, p1] + values[rows, p2]) / 4.0).astype(np.float32)
    X = np.stack([values, markers], axis=-1)
    logger.debug("adding problem: n=%d T=%d T_max=%d seed=%d", n, T, t_max, seed)
    if return_positions:
        return X, lengths, y, np.stack([p1, p2], axis=1)
    return X, lengths, y


def temporal_order(
    n: int,
    T: int = 100,
    *,
    seed: int = 0,
    variant: str = "6a",
    return_positions: bool = False,
) -> tuple[Any, ...]:
    """The temporal order problem (Hochreiter & Schmidhuber 1997, Experiment 6).

    A sequence starts with ``E`` and ends with ``B``; every other element is drawn
    uniformly from ``a b c d``, except the relevant positions, which hold ``X`` or ``Y``
    (each with probability 1/2). The length is uniform in ``T .. T + T // 10`` (the
    paper: T = 100, lengths 100..110). Relevant positions (0-based time indices, each
    uniform in its range; the paper's ranges for T = 100, scaled by ``T / 100`` and
    rounded down otherwise):

    * ``"6a"``: t1 in 10..20, t2 in 50..60; 4 classes ``XX, XY, YX, YY`` (the paper's
      Q, R, S, U);
    * ``"6b"``: t1 in 10..20, t2 in 33..43, t3 in 66..76; 8 classes ``XXX .. YYY`` (the
      paper's Q, R, S, U, V, A, B, C).

    The class id reads the relevant symbols as a binary number, X = 0 and Y = 1, first
    symbol most significant (``XY`` = 1, ``YX`` = 2).

    Args:
        n: number of sequences (>= 1).
        T: the minimal sequence length (>= 10, so that the relevant ranges stay apart
            and before the final ``B``); 100 is the paper's task.
        seed: seed of ``numpy.random.default_rng``.
        variant: ``"6a"`` or ``"6b"``.
        return_positions: also return the relevant positions.

    Returns:
        ``(X, lengths, y, class_names)`` or ``(X, lengths, y, class_names, positions)``:
        X ``(n, T + T // 10, 8)`` float32 one-hot over :data:`TEMPORAL_ORDER_SYMBOLS`, all zero
        from a sequence's length on; lengths ``(n,)`` int64; y ``(n,)`` int64 class ids;
        class_names the list of class names by id; positions ``(n, 2 or 3)`` int64.
    """
    n = _count(n, "n")
    T = _count(T, "T", 10)
    if variant not in _TEMPORAL_VARIANTS:
        raise DataError(
            f"unknown temporal order variant {variant!r}; expected one of "
            f"{sorted(_TEMPORAL_VARIANTS)}"
        )
    rng = _rng(seed)
    ranges = [(a * T // 100, b * T // 100) for a, b in _TEMPORAL_VARIANTS[variant]]
    k = len(ranges)
    lo, hi = T, T + T // 10
    lengths = rng.integers(lo, hi + 1, size=n, dtype=np.int64)
    symbols = rng.integers(0, 4, size=(n, hi), dtype=np.int64)
    rows = np.arange(n)
    symbols[:, 0] = TEMPORAL_ORDER_SYMBOLS.index("E")
    symbols[rows, lengths - 1] = TEMPORAL_ORDER_SYMBOLS.index("B")
    positions = np.stack(
        [rng.integers(a, b + 1, size=n, dtype=np.int64) for a, b in ranges], axis=1
    )
    bits = rng.integers(0, 2, size=(n, k), dtype=np.int64)
    x_index = TEMPORAL_ORDER_SYMBOLS.index("X")
    for j in range(k):
        symbols[rows, positions[:, j]] = x_index + bits[:, j]
    y = (bits * (1 << np.arange(k - 1, -1, -1))).sum(axis=1).astype(np.int64)
    X = np.zeros((n, hi, len(TEMPORAL_ORDER_SYMBOLS)), dtype=np.float32)
    steps = np.arange(hi)
    valid = steps[None, :] < lengths[:, None]
    b_idx, t_idx = np.nonzero(valid)
    X[b_idx, t_idx, symbols[b_idx, t_idx]] = 1.0
    class_names = ["".join("XY"[(c >> (k - 1 - j)) & 1] for j in range(k)) for c in range(2**k)]
    if return_positions:
        return X, lengths, y, class_names, positions
    return X, lengths, y, class_names


def copy_task(
    n: int, T: int = 100, *, seed: int = 0, n_symbols: int = 8, copy_length: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The copy-memory problem (Arjovsky, Shah & Bengio 2016).

    Input: ``copy_length`` symbols drawn uniformly from ``1..n_symbols``, then ``T - 1``
    blanks (0), the delimiter ``n_symbols + 1``, then ``copy_length`` blanks. Target:
    ``T + copy_length`` blanks, then the ``copy_length`` symbols. With the defaults the
    symbols are 1..8, the delimiter 9 and the length ``T + 20``.

    Args:
        n: number of sequences (>= 1).
        T: the delay (>= 1).
        seed: seed of ``numpy.random.default_rng``.
        n_symbols: alphabet size (>= 1).
        copy_length: symbols to copy (>= 1).

    Returns:
        ``(X, Y)``, both ``(n, T + 2 * copy_length)`` int64.
    """
    n = _count(n, "n")
    T = _count(T, "T")
    n_symbols = _count(n_symbols, "n_symbols")
    copy_length = _count(copy_length, "copy_length")
    rng = _rng(seed)
    total = T + 2 * copy_length
    seq = rng.integers(1, n_symbols + 1, size=(n, copy_length), dtype=np.int64)
    X = np.zeros((n, total), dtype=np.int64)
    Y = np.zeros((n, total), dtype=np.int64)
    X[:, :copy_length] = seq
    X[:, copy_length + T - 1] = n_symbols + 1
    Y[:, T + copy_length :] = seq
    return X, Y


def _lengths(rng: np.random.Generator, n: int, min_len: Any, max_len: Any) -> np.ndarray:
    min_len = _count(min_len, "min_len")
    max_len = _count(max_len, "max_len")
    if max_len < min_len:
        raise DataError(f"max_len={max_len} < min_len={min_len}; expected min_len <= max_len")
    return rng.integers(min_len, max_len + 1, size=n, dtype=np.int64)


def _one_hot_padded(tokens: np.ndarray, lengths: np.ndarray, k: int) -> np.ndarray:
    """``tokens (n, T)`` ids -> ``(n, T, k)`` float32 one-hot, zero after each length."""
    T = tokens.shape[1]
    X = np.eye(k, dtype=np.float32)[tokens]  # (n, T, k)
    X[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    return X


def parity(
    n: int, min_len: int = 1, max_len: int = 40, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parity (Deletang et al. 2023; xLSTM's formal-language suite): is the number of 1s
    in a uniform random bit string odd?

    Args:
        n: number of strings; lengths uniform in ``min_len .. max_len``.
    Returns:
        ``X (n, max_len, 2)`` float32 one-hot bits, zero-padded; ``lengths (n,)`` int64;
        ``y (n,)`` int64 in ``{0, 1}`` (1: odd). Chance is 1/2.
    """
    n = _count(n, "n")
    rng = _rng(seed)
    lengths = _lengths(rng, n, min_len, max_len)
    bits = rng.integers(0, 2, size=(n, int(max_len)), dtype=np.int64)
    bits[np.arange(int(max_len))[None, :] >= lengths[:, None]] = 0
    return _one_hot_padded(bits, lengths, 2), lengths, bits.sum(1) % 2


#: Cycle navigation's moves, in one-hot index order: stay, one step forward, one back.
CYCLE_MOVES: tuple[int, ...] = (0, 1, -1)


def cycle_navigation(
    n: int, min_len: int = 1, max_len: int = 40, *, seed: int = 0, cycle: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cycle navigation (Deletang et al. 2023): an agent starts at 0 on a cycle of
    ``cycle`` positions and takes the moves (stay, +1, -1, uniform); where does it end?

    Returns:
        ``X (n, max_len, 3)`` float32 one-hot moves (:data:`CYCLE_MOVES` order),
        zero-padded; ``lengths (n,)`` int64; ``y (n,)`` int64 in ``0 .. cycle-1``.
        Chance is ``1 / cycle``.
    """
    n = _count(n, "n")
    cycle = _count(cycle, "cycle", 2)
    rng = _rng(seed)
    lengths = _lengths(rng, n, min_len, max_len)
    moves = rng.integers(0, 3, size=(n, int(max_len)), dtype=np.int64)
    moves[np.arange(int(max_len))[None, :] >= lengths[:, None]] = 0  # "stay": no effect
    y = np.asarray(CYCLE_MOVES)[moves].sum(1) % cycle
    return _one_hot_padded(moves, lengths, 3), lengths, y.astype(np.int64)


#: Task name -> generator, for ``--task`` options. Read-only.
TASKS: Mapping[str, Callable[..., tuple[Any, ...]]] = MappingProxyType(
    {
        "adding": adding_problem,
        "copy": copy_task,
        "cycle_navigation": cycle_navigation,
        "parity": parity,
        "temporal_order": temporal_order,
    }
)


def get_task(name: str) -> Callable[..., tuple[Any, ...]]:
    """The generator registered as ``name``; an unknown name raises DataError listing
    the valid ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}") from None
