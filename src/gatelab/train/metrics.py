"""Metrics of the fit loop and of ``evaluate``: accuracy, macro F1, RMSE, MAE.

Each takes array-likes (numpy arrays, tensors, lists) and returns a Python float; they
agree with scikit-learn's ``accuracy_score``, ``f1_score(average="macro")``,
``root_mean_squared_error`` and ``mean_absolute_error``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "CLASSIFICATION_METRICS",
    "GREATER_IS_BETTER",
    "REGRESSION_METRICS",
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
