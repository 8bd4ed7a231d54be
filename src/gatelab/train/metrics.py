"""Metrics of the fit loop and of ``evaluate``: accuracy, macro F1, RMSE, MAE.

Each takes array-likes (numpy arrays, tensors, lists) and returns a Python float; they
agree with scikit-learn's ``accuracy_score``, ``f1_score(average="macro")``,
``root_mean_squared_error`` and ``mean_absolute_error``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from gatelab.train import distributed as D

__all__ = [
    "CLASSIFICATION_METRICS",
    "GREATER_IS_BETTER",
    "REGRESSION_METRICS",
    "Running",
    "accuracy",
    "classification_metrics",
    "macro_f1",
    "mae",
    "regression_metrics",
    "rmse",
]


def _arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true.cpu() if hasattr(y_true, "cpu") else y_true)
    b = np.asarray(y_pred.cpu() if hasattr(y_pred, "cpu") else y_pred)
    if a.shape != b.shape:
        raise ValueError(f"y_true has shape {a.shape} and y_pred {b.shape}; expected equal shapes")
    if a.size == 0:
        raise ValueError("metrics need at least one sample; got none")
    return a, b


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted label equals the true one."""
    a, b = _arrays(y_true, y_pred)
    return float(np.mean(a == b))


def macro_f1(y_true, y_pred) -> float:
    """Unweighted mean over the labels of ``y_true ∪ y_pred`` of each label's F1.

    A label with no true and no predicted sample does not occur; a label with precision
    and recall both 0 scores 0 (scikit-learn's ``zero_division=0``).
    """
    a, b = _arrays(y_true, y_pred)
    scores = []
    for label in np.union1d(a, b):
        tp = np.sum((a == label) & (b == label))
        fp = np.sum((a != label) & (b == label))
        fn = np.sum((a == label) & (b != label))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error over all elements."""
    a, b = _arrays(y_true, y_pred)
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def mae(y_true, y_pred) -> float:
    """Mean absolute error over all elements."""
    a, b = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


CLASSIFICATION_METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
}
REGRESSION_METRICS: dict[str, Callable[..., float]] = {"rmse": rmse, "mae": mae}
GREATER_IS_BETTER = {"accuracy": True, "macro_f1": True, "rmse": False, "mae": False, "loss": False}


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """``{"accuracy": ..., "macro_f1": ...}``."""
    return {name: fn(y_true, y_pred) for name, fn in CLASSIFICATION_METRICS.items()}


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """``{"rmse": ..., "mae": ...}``."""
    return {name: fn(y_true, y_pred) for name, fn in REGRESSION_METRICS.items()}


class Running:
    """Running loss and training metric (accuracy for a classifier, RMSE otherwise) over
    one epoch of :func:`gatelab.train.fit.fit`; :meth:`reduced` sums them over the ranks."""

    def __init__(self, classifier: bool) -> None:
        self.classifier = classifier
        self.n = 0
        self.loss_sum = 0.0
        self.hits = 0.0
        self.sq = 0.0
        self.count = 0

    def update(self, loss: float, out: Tensor, y: Tensor) -> dict[str, float]:
        b = out.shape[0]
        self.n += b
        self.loss_sum += loss * b
        with torch.no_grad():
            if self.classifier:
                self.hits += float((out.argmax(-1) == y).sum())
                self.count += b
                return {"loss": self.loss_sum / self.n, "accuracy": self.hits / self.count}
            self.sq += float(((out - y.reshape(out.shape)) ** 2).sum())
            self.count += out.numel()
            return {"loss": self.loss_sum / self.n, "rmse": math.sqrt(self.sq / self.count)}

    def reduced(self) -> dict[str, float]:
        """The epoch's loss and metric over all ranks (sums all-reduced)."""
        n, loss_sum, hits, sq, count = D.all_reduce_sums(
            [self.n, self.loss_sum, self.hits, self.sq, self.count]
        )
        logs = {"loss": loss_sum / max(n, 1)}
        if self.classifier:
            logs["accuracy"] = hits / max(count, 1)
        else:
            logs["rmse"] = math.sqrt(sq / max(count, 1))
        return logs
