"""Sunspots: gatelab's Forecaster with its defaults against statsmodels AR(p), p <= 12.

The yearly series 1700-2008 is split with the last 30 years held out. Every model is
fitted on the first 279 values only and then forecasts each held-out year one step
ahead from the true values before it (the forecaster from its last ``history`` values,
AR(p) from its last p). The peer is the best of AR(1) ... AR(12) on the held-out RMSE
(``statsmodels.tsa.ar_model.AutoReg``, with a constant), which favours the peer.

    python benchmarks/sunspots.py

Target (issue 4): the forecaster's one-step RMSE <= the best AR(p)'s.
"""

from __future__ import annotations

import os

# oneDNN's OpenMP threads spin while they wait; on a shared machine that makes 2 threads
# ~15x slower than 1 (measured). Passive waiting must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
from pathlib import Path

import numpy as np
from statsmodels.tsa.ar_model import AutoReg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup

from gatelab import Forecaster
from gatelab.data import read_series_csv, split_series

HOLDOUT = 30


def ar_one_step(series: np.ndarray, n_train: int, p: int) -> np.ndarray:
    params = AutoReg(series[:n_train], lags=p, trend="c").fit().params  # const, phi_1..phi_p
    return np.array(
        [params[0] + params[1:] @ series[t - p : t][::-1] for t in range(n_train, len(series))]
    )


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    setup(args)
    series = read_series_csv(args.data / "timeseries" / "sunspots.csv", "SUNACTIVITY")
    train, test = split_series(series, HOLDOUT)
    n = len(train)

    ar = {p: rmse(ar_one_step(series, n, p), test) for p in range(1, 13)}
    best = min(ar, key=ar.get)
    print("AR(p) one-step RMSE: " + ", ".join(f"{p}: {v:.2f}" for p, v in ar.items()))

    f = Forecaster()
    with Timer() as timer:
        f.fit(train)
    windows = np.stack([series[t - f.history : t] for t in range(n, len(series))])
    ours = rmse(f.predict(windows), test)
    print(
        f"gatelab Forecaster (defaults): one-step RMSE {ours:.2f}, training {timer.seconds:.0f} s"
    )
    print(
        f"peer best AR(p), p <= 12: AR({best}) RMSE {ar[best]:.2f}; ratio gatelab / peer "
        f"{ours / ar[best]:.3f}"
    )
    print(
        f"target: RMSE <= {ar[best]:.2f} {'MET' if ours <= ar[best] else 'MISSED'}; load "
        f"average at the end {load_average()}"
    )


if __name__ == "__main__":
    main()
