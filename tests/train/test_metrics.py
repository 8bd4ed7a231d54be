"""gatelab.train.metrics against hand computation and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from gatelab.train import metrics as M


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 50)
    p = rng.integers(0, 5, 50)  # class 4 never true; some classes maybe never predicted
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    assert M.macro_f1(y, p) == pytest.approx(
        skm.f1_score(y, p, average="macro", zero_division=0), abs=1e-12
    )


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    assert M.rmse(y, p) == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), abs=1e-12)
    assert M.mae(y, p) == pytest.approx(skm.mean_absolute_error(y, p), abs=1e-12)
    assert M.rmse(torch.tensor(y), torch.tensor(p)) == pytest.approx(M.rmse(y, p))


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        M.accuracy([1, 2], [1])


def test_metrics_by_hand():
    y, p = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert M.accuracy(y, p) == 3 / 5
    # label 0: tp 1, fp 1, fn 1 -> 2/4; label 1: tp 2, fp 1, fn 0 -> 4/5; label 2: 0
    assert M.macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 0.0) / 3, abs=1e-15)
    assert M.rmse([1.0, 2.0], [1.0, 4.0]) == pytest.approx(math.sqrt(2.0), abs=1e-15)
    assert M.mae([1.0, 2.0, 3.0], [2.0, 2.0, 0.0]) == pytest.approx(4 / 3, abs=1e-15)
    assert M.classification_metrics(y, p) == {"accuracy": 0.6, "macro_f1": M.macro_f1(y, p)}
    assert M.regression_metrics([1.0], [3.0]) == {"rmse": 2.0, "mae": 2.0}


def test_a_label_never_true_nor_predicted_does_not_count():
    assert M.macro_f1(np.array([3, 3]), np.array([3, 3])) == 1.0


def test_metrics_refuse_no_samples():
    with pytest.raises(ValueError, match="at least one sample"):
        M.rmse([], [])


def test_running_metrics_equal_the_whole_epoch_computed_at_once():
    torch.manual_seed(0)
    logits = [torch.randn(5, 3), torch.randn(3, 3)]
    labels = [torch.randint(0, 3, (5,)), torch.randint(0, 3, (3,))]
    losses = [0.5, 2.0]
    run = M.Running(classifier=True)
    for loss, out, y in zip(losses, logits, labels):
        logs = run.update(loss, out, y)
    out, y = torch.cat(logits), torch.cat(labels)
    assert logs["accuracy"] == pytest.approx(M.accuracy(y, out.argmax(-1)), abs=1e-12)
    assert logs["loss"] == pytest.approx((0.5 * 5 + 2.0 * 3) / 8, abs=1e-12)
    assert run.reduced() == logs  # one process: the sums are this process's

    outs = [torch.randn(4, 2), torch.randn(2, 2)]
    targets = [torch.randn(4, 2), torch.randn(2, 2)]
    run = M.Running(classifier=False)
    for out, y in zip(outs, targets):
        logs = run.update(1.0, out, y)
    expect = M.rmse(torch.cat(targets), torch.cat(outs))
    assert logs["rmse"] == pytest.approx(expect, abs=1e-6)
