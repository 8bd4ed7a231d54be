"""Series for training: forecasting windows, train/test splits, standard scaling."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gatelab.errors import DataError

__all__ = ["Scaler", "make_windows", "split_series"]

logger = logging.getLogger(__name__)


def _as_series(series: Any, what: str = "series") -> np.ndarray:
    x = np.asarray(series)
    if x.ndim != 1:
        raise DataError(f"{what} must be 1-D (N,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{what} must be real numbers, got dtype {x.dtype}")
    return x


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def make_windows(
    series: Any, history: int, horizon: int, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into (history, horizon) forecasting pairs, stride 1.

    Args:
        series: ``(L,)`` numbers.
        history: input steps per window (>= 1).
        horizon: target steps per window (>= 1).
        dtype: of the windows: float32 (a network's input) by default; float64 where the
            values themselves matter (a forecaster's linear part, its scores): float32
            keeps 24 bits, so a meter reading of 12 million comes back rounded to 1.

    Returns:
        ``(X, Y)`` of ``dtype``, X ``(N, history)`` and Y ``(N, horizon)`` with
        ``N = L - history - horizon + 1``, ``X[k] = series[k : k + history]`` and
        ``Y[k] = series[k + history : k + history + horizon]``.

    Raises:
        DataError: a series too short for one window, a non-positive size, a series
            that is not 1-D numbers.
    """
    x = _as_series(series)
    history = _positive_int(history, "history")
    horizon = _positive_int(horizon, "horizon")
    n = len(x) - history - horizon + 1
    if n < 1:
        raise DataError(
            f"a series of length {len(x)} is too short for history={history} + "
            f"horizon={horizon}; expected length >= {history + horizon}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(dtype), history + horizon)
    return windows[:, :history].copy(), windows[:, history:].copy()


def split_series(series: Any, test_size: int | float) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the last part of a series (no shuffling: the future stays unseen).

    Args:
        series: ``(L,)`` numbers.
        test_size: the number of held-out steps (an int >= 1), or a fraction in (0, 1)
            (rounded to the nearest count, at least 1).

    Returns:
        ``(train, test)``: ``series[:L - n]`` and ``series[L - n:]`` (copies).

    Raises:
        DataError: a size that leaves no training or no test part.
    """
    x = _as_series(series)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.number)):
        raise DataError(f"test_size must be a count or a fraction, got {test_size!r}")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise DataError(f"a fractional test_size must be in (0, 1), got {test_size!r}")
        n = max(1, round(len(x) * float(test_size)))
    else:
        n = int(test_size)
    if not 1 <= n < len(x):
        raise DataError(
            f"test_size={test_size!r} holds out {n} of {len(x)} steps; expected 1..{len(x) - 1}"
        )
    return x[: len(x) - n].copy(), x[len(x) - n :].copy()


class Scaler:
    """Standard scaling, ``(x - mean) / std``, fitted on the training part only.

    For a 1-D series the statistics are scalars; for a 2-D array ``(T, C)`` they are
    per channel (over axis 0). The standard deviation is the population one (ddof=0);
    a constant series gets scale 1 (and a logged warning) so it maps to zeros.
    """

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, x: Any) -> Scaler:
        """Learn mean and scale from ``x`` ``(T,)`` or ``(T, C)``; NaN raises DataError."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim not in (1, 2) or a.shape[0] < 1:
            raise DataError(f"Scaler.fit expects (T,) or (T, C) with T >= 1, got {a.shape}")
        if not np.isfinite(a).all():
            raise DataError(
                f"Scaler.fit got {int((~np.isfinite(a)).sum())} NaN/inf values; fill them first"
            )
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        if np.any(std == 0):
            logger.warning("Scaler.fit: constant data (std 0); using scale 1 there")
            std = np.where(std == 0, 1.0, std)
        self.mean, self.scale = np.asarray(mean), np.asarray(std)
        return self

    def _check(self, x: Any) -> tuple[np.ndarray, np.dtype]:
        if self.mean is None or self.scale is None:
            raise DataError("the Scaler is not fitted; call fit(train) first")
        a = np.asarray(x)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)
        if self.mean.ndim == 1 and (a.ndim < 1 or a.shape[-1] != self.mean.shape[0]):
            raise DataError(
                f"the Scaler was fitted on {self.mean.shape[0]} channels, got shape {a.shape}"
            )
        return a.astype(np.float64), dtype

    def transform(self, x: Any) -> np.ndarray:
        """``(x - mean) / scale``, same shape, float dtype kept (float64 otherwise)."""
        a, dtype = self._check(x)
        return ((a - self.mean) / self.scale).astype(dtype)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """``x * scale + mean``: undoes :meth:`transform`."""
        a, dtype = self._check(x)
        return (a * self.scale + self.mean).astype(dtype)

    def fit_transform(self, x: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same data."""
        return self.fit(x).transform(x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"type": "standard_scaler", "mean": ..., "scale": ...}``."""
        if self.mean is None or self.scale is None:
            raise DataError("the Scaler is not fitted; nothing to save")
        return {
            "type": "standard_scaler",
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if not isinstance(d, dict) or d.get("type") != "standard_scaler":
            raise DataError(f"not a Scaler description (type 'standard_scaler'): {str(d)[:80]}")
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad Scaler description {str(d)[:80]}: {exc}") from None
        if mean.shape != scale.shape or mean.ndim > 1 or np.any(scale <= 0):
            raise DataError(
                f"bad Scaler description: mean {mean.shape}, scale {scale.shape}; expected "
                "equal shapes, scalars or 1-D, scale > 0"
            )
        s = cls()
        s.mean, s.scale = mean, scale
        return s
