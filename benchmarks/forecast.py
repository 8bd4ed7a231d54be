"""Forecasting: gatelab's Forecaster with its defaults against persistence, AR(p) and
ARIMA from statsmodels, on every development series, one-step RMSE on a held-out end.

- sunspots (yearly, 1700-2008): the last 30 years held out;
- airline (monthly passengers 1949-1960): the last 24 months held out;
- weekly (synthetic, 2,200 values: trend, a 52.18-week season, random-walk and white
  noise, seeded; not a development set): the last 104 weeks held out, a check of the
  training time on a long series (one seed).

Every model is fitted on the training part only and then forecasts each held-out value
one step ahead from the true values before it. Peers: persistence (the last value);
AR(p), p = 1..12 (``AutoReg`` with a constant), the best p ON THE HELD-OUT RMSE (which
favours the peer); ARIMA(p, d, q), p <= 3, d <= 1, q <= 2 chosen by AIC on the training
part; the Box-Jenkins airline model SARIMA(0,1,1)(0,1,1)s on logs, s found from the data.
gatelab: ``Forecaster()`` with seed 0 (the default), and the mean over seeds 0..4 (one seed
for the weekly series).

    python benchmarks/forecast.py [--threads 1]

Targets (issue 11): RMSE <= the best AR(p) and <= persistence; training <= 2 min.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.statespace.sarimax import SARIMAX

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup

from gatelab import Forecaster
from gatelab.data import read_series_csv
from gatelab.models.autoregressive import find_season

SERIES = [  # name, file (None: synthetic), column, values held out, seeds
    ("sunspots", "sunspots.csv", "SUNACTIVITY", 30, 5),
    ("airline", "airline.csv", "Passengers", 24, 5),
    ("weekly", None, None, 104, 1),
]
SARIMA_MAX_SEASON = 24  # a 52-week seasonal state space takes minutes: not run


def weekly_series(n: int = 2200) -> np.ndarray:
    """The synthetic weekly series of the timing check (seeded)."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    season = 10 * np.sin(2 * np.pi * t / 52.18)
    return 100 + 0.02 * t + season + np.cumsum(rng.normal(0, 1, n)) + rng.normal(0, 2, n)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def ar_one_step(series: np.ndarray, n: int, p: int) -> np.ndarray:
    params = AutoReg(series[:n], lags=p, trend="c").fit().params  # const, phi_1..phi_p
    return np.array(
        [params[0] + params[1:] @ series[t - p : t][::-1] for t in range(n, len(series))]
    )


def state_space_one_step(result, series: np.ndarray, n: int, log: bool = False) -> np.ndarray:
    """One-step forecasts of the held-out part: the fitted parameters run over the whole
    series (no refit), predictions from the true values before each step."""
    full = np.log(series) if log else series
    pred = result.apply(full).predict(start=n, end=len(series) - 1)
    return np.exp(pred) if log else pred


def best_arima(train: np.ndarray):
    best = None
    for p, d, q in itertools.product(range(4), range(2), range(3)):
        if p == q == 0:
            continue
        try:
            res = ARIMA(train, order=(p, d, q), trend="c" if d == 0 else "n").fit()
        except (ValueError, np.linalg.LinAlgError):
            continue
        if best is None or res.aic < best[0]:
            best = (res.aic, (p, d, q), res)
    return best[1], best[2]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    setup(args)
    warnings.filterwarnings("ignore")  # statsmodels' convergence chatter
    verdicts = []
    for name, file, column, holdout, seeds in SERIES:
        if file is None:
            series = weekly_series()
        else:
            series = read_series_csv(args.data / "timeseries" / file, column)
        n = len(series) - holdout
        train, test = series[:n], series[n:]
        print(f"\n== {name}: {len(series)} values, last {holdout} held out", flush=True)
        persistence = rmse(series[n - 1 : -1], test)
        ar = {p: rmse(ar_one_step(series, n, p), test) for p in range(1, 13)}
        best_p = min(ar, key=ar.get)
        order, arima = best_arima(train)
        arima_rmse = rmse(state_space_one_step(arima, series, n), test)
        season = find_season(train)
        sarima_rmse = float("nan")
        if season and season <= SARIMA_MAX_SEASON and train.min() > 0:
            sarima = SARIMAX(np.log(train), order=(0, 1, 1), seasonal_order=(0, 1, 1, season)).fit(
                disp=False
            )
            sarima_rmse = rmse(state_space_one_step(sarima, series, n, log=True), test)
        print("AR(p): " + ", ".join(f"{p}: {v:.2f}" for p, v in ar.items()))
        print(
            f"peers: persistence {persistence:.2f}; best AR(p) AR({best_p}) {ar[best_p]:.2f}; "
            f"ARIMA{order} by AIC {arima_rmse:.2f}; SARIMA(0,1,1)(0,1,1){season} on logs "
            f"{sarima_rmse:.2f}",
            flush=True,
        )
        scores, seconds = [], []
        for seed in range(seeds):
            f = Forecaster(seed=seed)
            with Timer() as timer:
                f.fit(train)
            windows = np.stack([series[t - f.history_steps_ : t] for t in range(n, len(series))])
            scores.append(rmse(f.predict(windows), test))
            seconds.append(timer.seconds)
            v = f.validation_metrics_
            print(
                f"gatelab seed {seed}: RMSE {scores[-1]:.2f} in {timer.seconds:.1f} s; linear "
                f"part {f.linear_.name}, season {f.season_}, history {f.history_steps_}, "
                f"LSTM weight {v['network_weight']:.2f} (validation RMSE linear "
                f"{v['linear_rmse']:.2f} -> {v['rmse']:.2f})",
                flush=True,
            )
        ours = scores[0]
        met = ours <= ar[best_p] and ours <= persistence and max(seconds) <= 120
        verdicts.append(met)
        print(
            f"{name}: gatelab (defaults, seed 0) {ours:.2f}, mean of {seeds} seeds "
            f"{np.mean(scores):.2f} (min {min(scores):.2f}, max {max(scores):.2f}); ratio to "
            f"best AR {ours / ar[best_p]:.3f}, to persistence {ours / persistence:.3f}, to "
            f"ARIMA {ours / arima_rmse:.3f}; training at most {max(seconds):.0f} s; target "
            f"{'MET' if met else 'MISSED'}",
            flush=True,
        )
    print(f"\nall targets {'MET' if all(verdicts) else 'MISSED'}; load average {load_average()}")


if __name__ == "__main__":
    main()
