"""Tests of gatelab.data.synthetic: adding problem, temporal order, copy task, registry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatelab.data import (
    ADDING_TOLERANCE,
    TASKS,
    TEMPORAL_ORDER_SYMBOLS,
    adding_problem,
    copy_task,
    get_task,
    temporal_order,
)
from gatelab.errors import DataError

FAST = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------------------
# Adding problem
# --------------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 12),
    T=st.integers(10, 160),
    seed=st.integers(0, 2**32),
    variable_length=st.booleans(),
)
def test_adding_problem_definition(n: int, T: int, seed: int, variable_length: bool) -> None:
    X, lengths, y, positions = adding_problem(
        n, T, seed=seed, variable_length=variable_length, return_positions=True
    )
    t_max = T + T // 10 if variable_length else T
    assert X.shape == (n, t_max, 2) and X.dtype == np.float32
    assert lengths.dtype == np.int64 and y.dtype == np.float32 and positions.shape == (n, 2)
    for i in range(n):
        L = int(lengths[i])
        assert (T <= L <= T + T // 10) if variable_length else L == T
        values, markers = X[i, :L, 0], X[i, :L, 1]
        assert np.all((values >= -1.0) & (values <= 1.0))
        assert set(np.unique(markers).tolist()) <= {-1.0, 0.0, 1.0}
        marked = np.flatnonzero(markers == 1.0)
        assert len(marked) == 2  # exactly two pairs marked 1.0
        p1, p2 = positions[i].tolist()
        assert sorted([p1, p2]) == marked.tolist()
        assert 0 <= p1 < 10  # X1: one of the first ten pairs
        # X2: one of the first T/2 - 1 pairs still unmarked (its rank skips p1).
        assert p2 - (p2 > p1) < T // 2 - 1
        # First and final pairs carry -1 unless marked; everything else 0.
        expected = np.zeros(L, dtype=np.float32)
        expected[[0, L - 1]] = -1.0
        expected[marked] = 1.0
        np.testing.assert_array_equal(markers, expected)
        if 0 in marked:
            assert values[0] == 0.0
        # Target recomputed from X alone.
        assert y[i] == np.float32(0.5 + (values[marked[0]] + values[marked[1]]) / 4.0)
        assert 0.0 <= y[i] <= 1.0
        # Padding is zero in both components.
        assert not X[i, L:].any()


def test_adding_problem_distribution_facts() -> None:
    X, lengths, y, positions = adding_problem(3000, 100, seed=3, return_positions=True)
    assert X.shape == (3000, 110, 2)
    assert set(lengths.tolist()) == set(range(100, 111))
    assert set(positions[:, 0].tolist()) == set(range(10))
    # X2 ranges over the first T/2 = 50 positions, all but X1's.
    assert set(positions[:, 1].tolist()) == set(range(50))
    first_marked = (positions == 0).any(axis=1)
    assert first_marked.sum() > 0
    assert np.all(X[first_marked, 0, 0] == 0.0)
    # E[y] = 0.5 up to sampling error (sd of y is about 0.2 / sqrt(3000) ~ 0.004).
    assert abs(float(y.mean()) - 0.5) < 0.02
    assert ADDING_TOLERANCE == 0.04


def test_adding_problem_seeded() -> None:
    a = adding_problem(5, 30, seed=7)
    b = adding_problem(5, 30, seed=7)
    c = adding_problem(5, 30, seed=8)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    assert len(a) == 3


def test_adding_problem_bad_arguments() -> None:
    with pytest.raises(DataError, match="T must be an integer >= 10, got 5"):
        adding_problem(3, 5)
    with pytest.raises(DataError, match="n must be an integer >= 1, got 0"):
        adding_problem(0)
    with pytest.raises(DataError, match="seed must be an integer >= 0, got -1"):
        adding_problem(1, seed=-1)


# --------------------------------------------------------------------------------------
# Temporal order
# --------------------------------------------------------------------------------------

RANGES = {"6a": [(10, 20), (50, 60)], "6b": [(10, 20), (33, 43), (66, 76)]}


@FAST
@given(
    n=st.integers(1, 10),
    seed=st.integers(0, 2**32),
    variant=st.sampled_from(["6a", "6b"]),
    T=st.one_of(st.just(100), st.integers(10, 300)),
)
def test_temporal_order_definition(n: int, seed: int, variant: str, T: int) -> None:
    X, lengths, y, names, positions = temporal_order(
        n, T, seed=seed, variant=variant, return_positions=True
    )
    k = len(RANGES[variant])
    assert X.shape == (n, T + T // 10, 8) and X.dtype == np.float32
    assert y.dtype == np.int64 and lengths.dtype == np.int64
    assert names == (
        ["XX", "XY", "YX", "YY"]
        if k == 2
        else ["XXX", "XXY", "XYX", "XYY", "YXX", "YXY", "YYX", "YYY"]
    )
    sym = TEMPORAL_ORDER_SYMBOLS
    for i in range(n):
        L = int(lengths[i])
        assert T <= L <= T + T // 10
        np.testing.assert_array_equal(X[i, :L].sum(axis=1), np.ones(L))  # one-hot
        assert not X[i, L:].any()
        seq = [sym[j] for j in X[i, :L].argmax(axis=1)]
        assert seq[0] == "E" and seq[-1] == "B"
        relevant = [t for t, s in enumerate(seq) if s in ("X", "Y")]
        assert relevant == positions[i].tolist()
        for t, (lo, hi) in zip(relevant, RANGES[variant]):  # the paper's, scaled by T/100
            assert lo * T // 100 <= t <= hi * T // 100
        assert all(s in "abcd" for t, s in enumerate(seq[1:-1], 1) if t not in relevant)
        # The class is the X/Y pattern at the relevant positions, nothing else.
        pattern = "".join(seq[t] for t in relevant)
        assert names[y[i]] == pattern
        assert y[i] == int(pattern.replace("X", "0").replace("Y", "1"), 2)


def test_temporal_order_all_classes_and_errors() -> None:
    _, _, y, names = temporal_order(400, seed=1, variant="6b")
    assert sorted(set(y.tolist())) == list(range(8)) and len(names) == 8
    with pytest.raises(DataError, match=r"unknown temporal order variant '6c'.*\['6a', '6b'\]"):
        temporal_order(1, variant="6c")
    with pytest.raises(DataError, match="T must be an integer >= 10, got 9"):
        temporal_order(1, 9)


# --------------------------------------------------------------------------------------
# Copy task
# --------------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 8),
    T=st.integers(1, 60),
    n_symbols=st.integers(1, 12),
    copy_length=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_copy_task_layout(n: int, T: int, n_symbols: int, copy_length: int, seed: int) -> None:
    X, Y = copy_task(n, T, seed=seed, n_symbols=n_symbols, copy_length=copy_length)
    m = copy_length
    assert X.shape == Y.shape == (n, T + 2 * m) and X.dtype == Y.dtype == np.int64
    symbols = X[:, :m]
    assert np.all((symbols >= 1) & (symbols <= n_symbols))
    assert not X[:, m : m + T - 1].any()  # T - 1 blanks
    assert np.all(X[:, m + T - 1] == n_symbols + 1)  # the delimiter
    assert not X[:, m + T :].any()  # m blanks
    assert not Y[:, : T + m].any()  # T + m blanks
    np.testing.assert_array_equal(Y[:, T + m :], symbols)


def test_copy_task_defaults() -> None:
    X, Y = copy_task(2, seed=0)
    assert X.shape == (2, 120)
    assert X[0, 109] == 9 and set(np.unique(X[:, :10]).tolist()) <= set(range(1, 9))
    assert (X[:, 110:] == 0).all() and (Y[:, 110:] == X[:, :10]).all()


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


def test_task_registry() -> None:
    assert sorted(TASKS) == ["adding", "copy", "cycle_navigation", "parity", "temporal_order"]
    assert get_task("adding") is adding_problem
    with pytest.raises(DataError, match="unknown task 'add'; valid tasks: adding, copy"):
        get_task("add")
    with pytest.raises(TypeError):
        TASKS["x"] = copy_task  # type: ignore[index]
