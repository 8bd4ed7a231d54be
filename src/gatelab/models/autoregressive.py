"""The linear part of :class:`gatelab.Forecaster`: autoregressive models fitted by least
squares, the season found from the data, and the choice among a few transforms on
validation data.

A :class:`LinearForecast` of kind ``"ar"`` is an AR(p) with a constant on a transformed
series ``u``: optionally the log, then ``d`` first and ``D`` seasonal differences of
period ``s`` (``d, D`` in 0/1; Box & Jenkins 1970)::

    z_t = log(x_t) or x_t
    u_t = z_t - d z_{t-1} - D z_{t-s} + d D z_{t-s-1}
    u_{t+1} = c + phi_1 u_t + ... + phi_p u_{t-p+1}

and forecasts ``horizon`` steps recursively, inverting the differences each step. A
``"direct"`` one maps a whole window straight to the horizon (least squares), for
estimators fitted on given windows. Everything here is numpy, deterministic and fast
(a least-squares solve per candidate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LINEAR_RULES",
    "LinearForecast",
    "find_season",
    "fit_ar",
    "fit_direct",
    "kpss_statistic",
    "needs_differences",
    "select_linear",
]

logger = logging.getLogger(__name__)

SEASON_Z = 3.5  # find_season: how many white-noise standard errors a peak must exceed
KPSS_5_PERCENT = 0.463  # KPSS level stationarity: the 5 % critical value (Kwiatkowski 1992)
# The rules that choose a forecaster's linear part, recorded in its forecast.json
# ("linear_rules"; absent: 1) so that a run folder resumes with the rules it started with:
# 1, p by AIC and AR on the values when there is nothing to validate on; 2 (since session
# 19), p by AICc (fit_ar) and, with nothing to validate on, first differences where a KPSS
# test rejects level stationarity (needs_differences; docs/models.md has what chose them).
LINEAR_RULES = 2


@dataclass
class LinearForecast:
    """A fitted linear forecaster (see the module docstring).

    Attributes:
        kind: ``"ar"`` (recursive, transforms) or ``"direct"`` (window -> horizon).
        log, d, D, season, p: the transform and order (``"ar"``).
        const: the constant ``c``; coef: ``phi_1 .. phi_p`` (``"ar"``), or for
            ``"direct"`` the ``(W, horizon)`` weights as nested lists (``const`` then a
            list of ``horizon`` constants).
        width: for ``"direct"``, the window length W.
    """

    kind: str = "ar"
    log: bool = False
    d: int = 0
    D: int = 0
    season: int = 0
    p: int = 0
    const: Any = 0.0
    coef: list = field(default_factory=list)
    width: int = 0

    @property
    def window(self) -> int:
        """The number of past values one forecast needs."""
        if self.kind == "direct":
            return self.width
        return max(1, self.p + self.d + self.season * self.D)

    @property
    def name(self) -> str:
        if self.kind == "direct":
            return f"direct linear over {self.width} values"
        parts = [f"AR({self.p})"]
        if self.d:
            parts.append("first differences")
        if self.D:
            parts.append(f"seasonal differences (period {self.season})")
        if self.log:
            parts.append("log")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "linear_forecast", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearForecast:
        if not isinstance(d, dict) or d.get("type") != "linear_forecast":
            raise ValueError(f"not a linear forecast description: {str(d)[:80]}")
        out = cls(**{k: v for k, v in d.items() if k != "type"})
        if out.kind not in ("ar", "direct"):
            raise ValueError(f"kind {out.kind!r}; expected 'ar' or 'direct'")
        return out

    def forecast(self, windows: np.ndarray, horizon: int) -> np.ndarray:
        """Forecasts ``(N, horizon)`` from ``windows (N, W)``, ``W >= self.window`` (the
        last values are used)."""
        w = np.asarray(windows, dtype=np.float64)
        if self.kind == "direct":
            weights = np.asarray(self.coef, dtype=np.float64)  # (W, H)
            return w[:, -self.width :] @ weights + np.asarray(self.const, dtype=np.float64)
        z = _log(w) if self.log else w.copy()
        z = z[:, -self.window :]
        phi = np.asarray(self.coef, dtype=np.float64)
        out = np.empty((len(z), horizon))
        for k in range(horizon):
            u = _difference(z, self.d, self.D, self.season)  # (N, L - d - sD)
            u_next = self.const + (u[:, ::-1][:, : self.p] @ phi if self.p else 0.0)
            z_next = u_next + _undo(z, self.d, self.D, self.season)
            out[:, k] = z_next
            z = np.concatenate([z[:, 1:], z_next[:, None]], axis=1)
        return np.exp(out) if self.log else out


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, 1e-12))


def _difference(z: np.ndarray, d: int, D: int, s: int) -> np.ndarray:
    """``u_t = z_t - d z_{t-1} - D z_{t-s} + d D z_{t-s-1}`` along the last axis."""
    lag = d + s * D
    T = z.shape[-1]
    u = z[..., lag:].copy()
    if d:
        u -= z[..., lag - 1 : T - 1]
    if D:
        u -= z[..., lag - s : T - s]
    if d and D:
        u += z[..., : T - lag]
    return u


def _undo(z: np.ndarray, d: int, D: int, s: int) -> np.ndarray:
    """What ``z_{t+1} - u_{t+1}`` is, from the values up to ``t`` (the last column)."""
    out = np.zeros(z.shape[0])
    if d:
        out += z[:, -1]
    if D:
        out += z[:, -s]
    if d and D:
        out -= z[:, -s - 1]
    return out


def fit_ar(
    series: np.ndarray,
    *,
    log: bool,
    d: int,
    D: int,
    season: int,
    p_max: int,
    criterion: str = "aicc",
) -> LinearForecast:
    """AR(p) with a constant on the transformed ``series``, ``p <= p_max`` chosen by AICc
    (every p fitted on the same rows), by least squares.

    AICc (Hurvich & Tsai 1989) is AIC with its small-sample correction
    ``2 k (k + 1) / (n - k - 1)``, ``k = p + 2`` (the coefficients, the constant and the
    noise variance, as statsmodels counts them). On a short series plain AIC takes many
    lags: on M1's yearly series (30-58 values) it chose up to AR(10) on about 20 rows;
    over those and four other series gatelab's forecasts were 1.08x those of statsmodels'
    AR(p) by BIC (geometric mean), with AICc 0.90x (BENCHMARKS.md, session 19). A p
    whose correction is undefined (``n <= k + 1``) is not a candidate, except p = 0
    (plain AIC). ``criterion="aic"``: plain AIC, ``k = p + 1`` (gatelab's rule before; a
    run folder fitted with it resumes with it)."""
    if criterion not in ("aicc", "aic"):
        raise ValueError(f"criterion={criterion!r}; expected 'aicc' or 'aic'")
    z = _log(series) if log else np.asarray(series, dtype=np.float64)
    u = _difference(z[None, :], d, D, season)[0]
    p_max = max(0, min(p_max, len(u) // 3))
    n = len(u) - p_max
    if n < 2:
        raise ValueError(f"a series of {len(series)} values is too short for this AR")
    target = u[p_max:]
    lags = (
        np.stack([u[p_max - i : len(u) - i] for i in range(1, p_max + 1)], axis=1)
        if p_max
        else np.empty((n, 0))
    )
    best = None
    for p in range(p_max + 1):
        k = p + 2 if criterion == "aicc" else p + 1
        if criterion == "aicc" and p and n - k - 1 <= 0:
            break
        A = np.concatenate([np.ones((n, 1)), lags[:, :p]], axis=1)
        beta, *_ = np.linalg.lstsq(A, target, rcond=None)
        rss = float(np.sum((target - A @ beta) ** 2))
        small = 2 * k * (k + 1) / (n - k - 1) if criterion == "aicc" and n - k - 1 > 0 else 0.0
        ic = n * math.log(max(rss, 1e-300) / n) + 2 * k + small
        if best is None or ic < best[0]:
            best = (ic, p, beta)
    _, p, beta = best
    return LinearForecast(
        kind="ar",
        log=log,
        d=d,
        D=D,
        season=season if D else 0,
        p=p,
        const=float(beta[0]),
        coef=[float(b) for b in beta[1:]],
    )


def fit_direct(windows: np.ndarray, targets: np.ndarray) -> LinearForecast:
    """Least squares from ``windows (N, W)`` to ``targets (N, H)``, with constants (a
    small ridge, 1e-6 of the mean square, keeps a singular system solvable)."""
    X = np.asarray(windows, dtype=np.float64)
    Y = np.asarray(targets, dtype=np.float64)
    A = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    ridge = 1e-6 * float(np.mean(A**2)) * np.eye(A.shape[1])
    beta = np.linalg.solve(A.T @ A + ridge, A.T @ Y)  # (W + 1, H)
    return LinearForecast(
        kind="direct", const=beta[-1].tolist(), coef=beta[:-1].tolist(), width=X.shape[1]
    )


def kpss_statistic(series: np.ndarray, lags: int | None = None) -> float:
    """The KPSS statistic of level stationarity (Kwiatkowski, Phillips, Schmidt & Shin
    1992): the partial sums of the demeaned series against its long-run variance, a
    Bartlett-weighted sum of ``lags`` autocovariances (default ``trunc(4 (n / 100)^(1/4))``,
    urca's "short"; forecast's ``ndiffs``, which also tests KPSS at 5 %, takes
    ``trunc(3 sqrt(n) / 13)``). statsmodels' ``kpss(x, "c", nlags=lags)`` gives the same
    number."""
    e = np.asarray(series, dtype=np.float64)
    n = len(e)
    if e.ndim != 1 or n < 2:
        raise ValueError(f"KPSS needs a 1-D series of at least 2 values, got shape {e.shape}")
    e = e - e.mean()
    if lags is None:
        lags = int(4 * (n / 100) ** 0.25)
    lrv = float(e @ e)
    for k in range(1, min(lags, n - 1) + 1):
        lrv += 2 * (1 - k / (lags + 1)) * float(e[k:] @ e[:-k])
    lrv /= n
    if lrv <= 0:
        return 0.0  # a constant series: nothing wanders
    return float(np.sum(np.cumsum(e) ** 2) / n**2 / lrv)


def needs_differences(series: np.ndarray) -> bool:
    """Whether a KPSS test rejects level stationarity at 5 %: how auto.arima chooses d
    (Hyndman & Khandakar 2008), for a series with no validation values to choose on."""
    return len(series) >= 4 and kpss_statistic(series) > KPSS_5_PERCENT


def find_season(series: np.ndarray, max_lag: int | None = None) -> int:
    """The period of a series: the lag (>= 2) of the highest local peak of the
    autocorrelation of its first differences (differencing removes a trend that would
    make every lag look alike), if that peak is significant: above ``SEASON_Z / sqrt(n)``
    (3.5 standard errors of white noise, so that among a hundred lags of noise one passes
    by chance about 2% of the time); 0 if none.
    Looks at lags up to ``max_lag`` (default: a third of the series)."""
    y = np.diff(np.asarray(series, dtype=np.float64))
    n = len(y)
    if n < 8:
        return 0
    y = y - y.mean()
    denom = float(y @ y)
    if denom == 0:
        return 0
    L = min(max_lag or n // 3, n // 3)
    acf = np.array([1.0] + [float(y[:-k] @ y[k:]) / denom for k in range(1, L + 1)])
    peaks = [k for k in range(2, L) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]]
    peaks = [k for k in peaks if acf[k] > SEASON_Z / math.sqrt(n)]
    if not peaks:
        return 0
    return int(max(peaks, key=lambda k: acf[k]))


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def select_linear(
    fit_series: np.ndarray,
    valid_windows: np.ndarray,
    valid_targets: np.ndarray,
    *,
    season: int,
    max_window: int,
    p_max: int = 12,
    criterion: str = "aicc",
) -> tuple[tuple[bool, int, int], list[dict[str, Any]]]:
    """Choose the transform of the linear part on validation data.

    Candidates: levels, first differences, seasonal differences and both (seasonal ones
    only with a season), each on the values and, for a positive series, on their log;
    p chosen by ``criterion`` (:func:`fit_ar`) on ``fit_series``. Persistence (first
    differences, p = 0) and the seasonal naive forecast are among them, so the choice is
    never worse than those on the validation windows. Candidates whose window exceeds
    ``max_window`` are skipped.

    Returns:
        ``((log, d, D), table)``: the best transform by validation RMSE, and one row per
        candidate (``name``, ``rmse``).
    """
    logs = [False, True] if float(np.min(fit_series)) > 0 else [False]
    diffs = [(0, 0), (1, 0)] + ([(0, 1), (1, 1)] if season else [])
    horizon = valid_targets.shape[1]
    table = []
    best = None
    for log in logs:
        for d, D in diffs:
            lag = d + season * D
            cap = min(p_max, max_window - lag)
            if cap < 0 or len(fit_series) - lag < 8:
                continue
            if cap == 0 and criterion == "aic":
                continue  # rules 1 (gatelab before session 19) lost these to a crash: kept so
            try:
                model = fit_ar(
                    fit_series, log=log, d=d, D=D, season=season, p_max=cap, criterion=criterion
                )
            except ValueError:
                continue
            err = _rmse(model.forecast(valid_windows, horizon), valid_targets)
            table.append({"name": model.name, "rmse": err})
            if best is None or err < best[0]:
                best = (err, (log, d, D))
    if best is None:
        raise ValueError(f"no linear model fits a series of {len(fit_series)} values")
    logger.info(
        "linear part on validation: %s", ", ".join(f"{r['name']} {r['rmse']:.4g}" for r in table)
    )
    return best[1], table
