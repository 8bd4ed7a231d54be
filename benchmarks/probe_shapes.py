"""Issue 11's probe: the three estimators' DEFAULTS on data shapes nobody tried.

A new user's data, synthetic and seeded (not development sets: nothing is tuned on
them): each case fits the estimator with its defaults (seed 0), scores it on held-out
data and beside it a trivial baseline on the same split, and prints one row:

    case | gatelab | baseline | ratio | seconds | note

- series classification (accuracy, higher is better): 1-NN Euclidean (numpy) on the
  same split; unequal lengths are linearly resampled to the longest for the baseline;
- forecasting (RMSE of the held-out end, one forecast per origin from the true values
  before it, lower is better): the best of persistence, the seasonal naive forecast
  (with the period the data were made with) and AR(p) by least squares, p <= 12 chosen
  ON THE HELD-OUT RMSE (which favours the peer); the note names each, and AR(p) with p
  by AIC on the training part (what a user without the test could fit), and says when
  gatelab is worse than persistence;
- text classification (accuracy): TF-IDF + LogisticRegression (scikit-learn defaults);
- the command line: ``gatelab train`` then ``evaluate`` and ``predict`` on files in the
  formats docs/models.md lists (the score is evaluate's).

A case that raises prints ``ERROR`` and the exception instead of a score; the probe goes
on. Issue 11's budget: <= 5 minutes per set on 2 cores.

    OMP_NUM_THREADS=1 python benchmarks/probe_shapes.py [--threads 1] [--only PREFIX ...]
    python benchmarks/probe_shapes.py --list
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib
import logging
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, load_average, parser, setup

from gatelab import Forecaster, SeriesClassifier, TextClassifier

# ---------------------------------------------------------------- series classification


def wave(c: int, length: int, rng, channels: int = 1) -> np.ndarray:
    """``(length, channels)``: class ``c``'s shape (a sine of 1 + c % 5 cycles, a bump
    at a place set by c // 5) with a random phase jitter, amplitude and noise."""
    t = np.linspace(0, 1, length)
    cycles, place = 1 + c % 5, 0.15 + 0.7 * ((c // 5) * 0.37 % 1.0)
    out = []
    for k in range(channels):
        phase = rng.normal(0, 0.3) + k
        s = np.sin(2 * np.pi * cycles * t + phase) + 1.5 * np.exp(-(((t - place) / 0.06) ** 2))
        out.append(rng.uniform(0.8, 1.2) * s + rng.normal(0, 0.4, length))
    return np.stack(out, axis=1)


def series_set(counts, test_per_class: int, length, channels: int = 1, seed: int = 0):
    """Training and test series of ``len(counts)`` classes, ``counts[c]`` training series
    of class c; ``length`` an int or a callable ``rng -> int`` (unequal lengths)."""
    rng = np.random.default_rng(seed)

    def draw(c):
        n = length(rng) if callable(length) else length
        return wave(c, n, rng, channels)

    train = [(draw(c), c) for c, n in enumerate(counts) for _ in range(n)]
    test = [(draw(c), c) for c in range(len(counts)) for _ in range(test_per_class)]
    return (
        [s for s, _ in train],
        np.array([c for _, c in train]),
        [s for s, _ in test],
        np.array([c for _, c in test]),
    )


def resample(s: np.ndarray, length: int) -> np.ndarray:
    src = np.linspace(0, 1, len(s))
    return np.stack(
        [np.interp(np.linspace(0, 1, length), src, s[:, k]) for k in range(s.shape[1])], 1
    )


def one_nn(Xtr, ytr, Xte) -> np.ndarray:
    """1-NN Euclidean; unequal lengths resampled to the longest first."""
    L = max(len(s) for s in [*Xtr, *Xte])
    A = np.stack([resample(s, L).ravel() for s in Xtr])
    B = np.stack([resample(s, L).ravel() for s in Xte])
    d = ((B[:, None, :] - A[None, :, :]) ** 2).sum(-1)
    return np.asarray(ytr)[d.argmin(1)]


def series_case(Xtr, ytr, Xte, yte, as_array: bool = True):
    X = np.stack(Xtr) if as_array and len({s.shape for s in Xtr}) == 1 else Xtr
    clf = SeriesClassifier()
    with Timer() as t:
        clf.fit(X, ytr)
    pred = clf.predict(np.stack(Xte) if X is not Xtr else Xte)
    ours = float(np.mean(pred == yte))
    base = float(np.mean(one_nn(Xtr, ytr, Xte) == yte))
    sel = clf.selection_ or {}
    note = f"arch {sel.get('chosen', clf.architecture_)}, {sel.get('folds', 0)} inner folds"
    if pred.dtype != np.asarray(yte).dtype:
        note += f"; predict dtype {pred.dtype} vs labels {np.asarray(yte).dtype}"
    return ours, base, t.seconds, note


def sc_two_by_three():
    return series_case(*series_set([3, 3], 20, 60))


def sc_single_series_class():
    return series_case(*series_set([1, 6, 6], 10, 60))


def sc_thirty_classes():
    return series_case(*series_set([3] * 32, 3, 80))


def sc_multivariate_scales():
    Xtr, ytr, Xte, yte = series_set([8, 8, 8], 10, 60, channels=3)
    scales = np.array([1e-3, 1.0, 1e3])
    return series_case([s * scales for s in Xtr], ytr, [s * scales for s in Xte], yte)


def sc_unequal_lengths():
    def length(rng):  # half the series 80 steps, half 40..160
        return 80 if rng.random() < 0.5 else int(rng.integers(40, 161))

    return series_case(*series_set([8, 8, 8], 10, length), as_array=False)


def short_set(length: int, seed: int = 0):
    """Rising, falling and peaked series of ``length`` steps, noisy."""
    rng = np.random.default_rng(seed)
    t = np.linspace(-1, 1, length)
    shapes = [t, -t, 1 - 2 * np.abs(t)]

    def draw(c, n):
        return [shapes[c][:, None] + rng.normal(0, 0.5, (length, 1)) for _ in range(n)]

    Xtr = [s for c in range(3) for s in draw(c, 8)]
    Xte = [s for c in range(3) for s in draw(c, 20)]
    return Xtr, np.repeat(np.arange(3), 8), Xte, np.repeat(np.arange(3), 20)


def sc_length_3():
    return series_case(*short_set(3))


def sc_length_8():
    return series_case(*short_set(8))


def sc_constant_series():
    """Class 0: constant series at random levels (one training series exactly 0);
    class 1: waves."""
    rng = np.random.default_rng(0)
    Xtr, ytr, Xte, yte = series_set([1, 8], 10, 50)
    flat = [np.full((50, 1), v) for v in [0.0, *rng.normal(0, 2, 7)]]
    flat_test = [np.full((50, 1), v) for v in rng.normal(0, 2, 10)]
    Xtr = flat + Xtr[1:]
    ytr = np.array([0] * 8 + [1] * 8)
    return series_case(Xtr, ytr, flat_test + Xte[10:], yte)


def labelled(labels):
    Xtr, ytr, Xte, yte = series_set([6, 6], 10, 30)
    names = np.asarray(labels)
    return series_case(Xtr, names[ytr], Xte, names[yte])


def sc_string_labels():
    return labelled(["cat", "dog"])


def sc_plus_minus_one_labels():
    return labelled([-1, 1])


def sc_dataframe():
    """A pandas DataFrame, one series a row (scikit-learn's 2-D input), labels a Series."""
    import pandas as pd

    Xtr, ytr, Xte, yte = series_set([6, 6], 10, 30)
    columns = [f"t{k}" for k in range(30)]
    frame = pd.DataFrame(np.stack(Xtr)[:, :, 0], columns=columns)
    clf = SeriesClassifier()
    with Timer() as t:
        clf.fit(frame, pd.Series(ytr))
    pred = clf.predict(pd.DataFrame(np.stack(Xte)[:, :, 0], columns=columns))
    ours = float(np.mean(pred == yte))
    return ours, float(np.mean(one_nn(Xtr, ytr, Xte) == yte)), t.seconds, clf.architecture_


def sc_long_series():
    return series_case(*series_set([4, 4], 10, 3000))


# ---------------------------------------------------------------- forecasting


def season_naive(series, origins, h, s):
    return np.stack([[series[t + k - s * (1 + k // s)] for k in range(h)] for t in origins])


def ar_forecasts(series, n, origins, h, p):
    """AR(p) with a constant by least squares on ``series[:n]``, recursive forecasts."""
    x = series[:n]
    A = np.column_stack([np.ones(n - p)] + [x[p - i : n - i] for i in range(1, p + 1)])
    beta = np.linalg.lstsq(A, x[p:], rcond=None)[0]
    out = []
    for t in origins:
        hist = list(series[t - p : t])
        for _ in range(h):
            hist.append(beta[0] + beta[1:] @ np.asarray(hist[-p:])[::-1])
        out.append(hist[p:])
    return np.asarray(out)


def ar_by_aic(x: np.ndarray, n: int) -> int:
    """p <= min(12, n / 3) of the least AIC on ``x[:n]`` (every p on the same rows)."""
    top = min(12, n // 3)
    rows = x[top:n]
    lags = np.column_stack([x[top - i : n - i] for i in range(1, top + 1)])
    aic = []
    for p in range(1, top + 1):
        A = np.column_stack([np.ones(len(rows)), lags[:, :p]])
        rss = float(np.sum((rows - A @ np.linalg.lstsq(A, rows, rcond=None)[0]) ** 2))
        aic.append(len(rows) * np.log(max(rss, 1e-300) / len(rows)) + 2 * (p + 1))
    return 1 + int(np.argmin(aic))


def forecast_case(series, test: int, *, horizon: int = 1, season: int = 0, wrap=None):
    """Fit on all but the last ``test`` values; forecast ``horizon`` steps from every origin
    whose targets lie in the held-out part."""
    series = np.asarray(series)
    x = series.astype(np.float64)
    n = len(series) - test
    origins = list(range(n, len(series) - horizon + 1))
    truth = np.stack([x[t : t + horizon] for t in origins])
    f = Forecaster(horizon=horizon)
    train = series[:n] if wrap is None else wrap(series[:n])
    with Timer() as timer:
        f.fit(train)
    windows = np.stack([x[t - f.history_steps_ : t] for t in origins])
    pred = f.predict(windows).reshape(len(origins), horizon)
    ours = float(np.sqrt(np.mean((pred - truth) ** 2)))
    peers = {"persistence": np.repeat(x[np.array(origins) - 1][:, None], horizon, 1)}
    if season:
        peers[f"snaive{season}"] = season_naive(x, origins, horizon, season)
    for p in range(1, min(12, n // 3) + 1):
        peers[f"AR({p})"] = ar_forecasts(x, n, origins, horizon, p)
    rmse = {k: float(np.sqrt(np.mean((v - truth) ** 2))) for k, v in peers.items()}
    ar = min((k for k in rmse if k.startswith("AR")), key=rmse.get)
    best = min(rmse, key=rmse.get)
    aic = ar_by_aic(x, n)
    rmse_aic = rmse[f"AR({aic})"]
    lost = " WORSE THAN PERSISTENCE" if ours > rmse["persistence"] * 1.001 else ""
    validated = "" if f.validation_metrics_ else " (no validation)"
    note = (
        f"best {best}; persistence {rmse['persistence']:.3g}, {ar} {rmse[ar]:.3g}, AR({aic}) "
        f"by AIC {rmse_aic:.3g} (ours x{ours / max(rmse_aic, 1e-12):.2f}){lost}; "
        f"{f.linear_.name if f.linear_ else 'no linear'}, season {f.season_}, history "
        f"{f.history_steps_}, LSTM weight {f.network_weight_}{validated}"
    )
    return ours, rmse[best], timer.seconds, note


def noise_ar(n: int, rng, phi: float = 0.6) -> np.ndarray:
    e = rng.normal(0, 1, n)
    out = np.zeros(n)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + e[t]
    return out


def monthly(n: int, seed: int = 0, period: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 10 * np.sin(2 * np.pi * t / period) + 2 * noise_ar(n, rng)


def fc_short(n: int, seasonal: bool, period: int = 12):
    if seasonal:
        return forecast_case(monthly(n, period=period), max(4, n // 5), season=period)
    return forecast_case(20 + 3 * noise_ar(n, np.random.default_rng(1)), max(4, n // 5))


def fc_trend():
    rng = np.random.default_rng(2)
    return forecast_case(5.0 * np.arange(100) + 3 * noise_ar(100, rng), 20)


def fc_multiplicative():
    t = np.arange(144)
    rng = np.random.default_rng(3)
    level = 100 * np.exp(0.01 * t)
    s = level * (1 + 0.25 * np.sin(2 * np.pi * t / 12)) * np.exp(0.03 * noise_ar(144, rng))
    return forecast_case(s, 24, season=12)


def fc_negative():
    return forecast_case(-50 + 5 * noise_ar(100, np.random.default_rng(4), 0.8), 20)


def fc_constant():
    return forecast_case(np.full(60, 7.0), 12)


def fc_level_shift():
    rng = np.random.default_rng(5)
    s = 10 + noise_ar(120, rng)
    s[70:] += 15  # inside the fitting part; the last 24 are held out
    return forecast_case(s, 24)


def fc_horizon(h: int):
    return forecast_case(monthly(144, seed=6), 24, horizon=h, season=12)


def fc_integers():
    rng = np.random.default_rng(7)
    lam = 20 + 8 * np.sin(2 * np.pi * np.arange(120) / 7)
    return forecast_case(rng.poisson(lam).astype(np.int64), 21, season=7)


def fc_meter():
    """Hourly readings of a meter at 12 million with increments of about 1.5 (a daily
    cycle): float32 spaces its values 1.0 apart."""
    rng = np.random.default_rng(14)
    t = np.arange(240)
    steps = 1.5 + 0.5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, 240)
    return forecast_case(12_345_678.9 + np.cumsum(steps), 48, season=24)


def fc_pandas():
    import pandas as pd

    s = monthly(96, seed=8)
    return forecast_case(s, 19, season=12, wrap=lambda a: pd.Series(a, name="value"))


# ---------------------------------------------------------------- text classification


def words(rng, pool, k):
    return list(rng.choice(pool, size=k))


def text_set(counts, test_per_class: int, *, length=(8, 16), seed: int = 0, cue=2):
    """Texts of ``len(counts)`` classes: common words plus ``cue`` words from the class's
    own 6 (each of which also appears in other classes' texts 10% of the time)."""
    rng = np.random.default_rng(seed)
    common = [f"w{i}" for i in range(300)]
    own = [[f"c{c}k{j}" for j in range(6)] for c in range(len(counts))]

    def text(c):
        ws = words(rng, common, int(rng.integers(*length))) + words(rng, own[c], cue)
        if rng.random() < 0.5:
            ws += words(rng, own[int(rng.integers(len(counts)))], 1)
        rng.shuffle(ws)
        return " ".join(ws)

    train = [(text(c), c) for c, n in enumerate(counts) for _ in range(n)]
    test = [(text(c), c) for c in range(len(counts)) for _ in range(test_per_class)]
    return [t for t, _ in train], [c for _, c in train], [t for t, _ in test], [c for _, c in test]


def tfidf_lr(Xtr, ytr, Xte, yte) -> float:
    """The baseline's accuracy: TF-IDF + LogisticRegression (scikit-learn defaults)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    base = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(Xtr, ytr)
    return float(np.mean(base.predict(Xte) == np.asarray(yte)))


def text_case(Xtr, ytr, Xte, yte):
    clf = TextClassifier()
    with Timer() as t:
        clf.fit(Xtr, ytr)
    ours = float(np.mean(clf.predict(Xte) == np.asarray(yte)))
    epochs = clf.train_config_.epochs
    note = (
        f"{len(clf.history_[0].epochs)} epochs of {epochs}, "
        f"{epochs * -(-len(Xtr) // clf.batch_size)} steps at most; mix w "
        f"{clf.linear_weight_}, C {clf.linear_C_}, tau {getattr(clf, 'prior_adjustment_', None)}"
    )
    return ours, tfidf_lr(Xtr, ytr, Xte, yte), t.seconds, note


def tc_fifteen_classes():
    return text_case(*text_set([20] * 15, 10))


def tc_tiny_class():
    return text_case(*text_set([30, 30, 30, 30, 2], 10))


def tc_long_texts():
    return text_case(*text_set([40, 40, 40], 15, length=(1900, 2100), cue=20))


def tc_scripts():
    """Each class written in its own script: Chinese, Cyrillic, emoji; punctuation-only
    texts in every class."""
    rng = np.random.default_rng(9)
    pools = [list("天地人日月山水火木金土风雨"), ["привет", "мир", "дом", "кот", "лес", "река"],
             list("😀😂🎉🔥👍🙏❤🐍🚀🌧")]  # fmt: skip
    punct = list("!?.,;:-()[]…")

    def text(c):
        if rng.random() < 0.2:
            return "".join(words(rng, punct, 5))
        return " ".join(words(rng, pools[c], int(rng.integers(3, 9))))

    tr = [(text(c), c) for c in range(3) for _ in range(30)]
    te = [(text(c), c) for c in range(3) for _ in range(20)]
    return text_case([t for t, _ in tr], [c for _, c in tr], [t for t, _ in te], [c for _, c in te])


def tc_duplicates():
    Xtr, ytr, Xte, yte = text_set([100, 100], 50, seed=10)
    Xtr = Xtr + Xtr[:40]  # the same texts again, with the other label
    ytr = ytr + [1 - y for y in ytr[:40]]
    return text_case(Xtr, ytr, Xte, yte)


def tc_fifty_texts():
    return text_case(*text_set([10] * 5, 20, seed=11))


# ---------------------------------------------------------------- command line


def gatelab_cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "gatelab", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:2])}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def cli_round(kind: str, train_args: list[str], data: str, holdout: bool = False):
    """``gatelab train KIND ... --out RUN``, then ``evaluate RUN --data DATA --json`` and
    ``predict RUN --data DATA --json``; the score is evaluate's (``holdout``: the held-out
    RMSE that ``train --holdout`` writes into metrics.json)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        gatelab_cli("train", kind, *train_args, "--out", out, "-q")
        metrics = json.loads(gatelab_cli("evaluate", out, "--data", data, "--json"))
        lines = gatelab_cli("predict", out, "--data", data, "--json").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]  # one object a line
        if holdout:
            metrics = json.loads((Path(out) / "metrics.json").read_text())["test"]
    key = "accuracy" if "accuracy" in metrics else "rmse"
    return float(metrics[key]), f"{key}; predict gave {len(rows)} rows"


def cli_series():
    Xtr, ytr, Xte, yte = series_set([6, 6, 6], 10, 40)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, X, y in (("train", Xtr, ytr), ("test", Xte, yte)):
            path = Path(tmp) / f"{name}.tsv"  # the UCR 2018 format: label first, tabs
            path.write_text("".join(f"{c}\t" + "\t".join(f"{v:.6f}" for v in s[:, 0]) + "\n"
                                    for s, c in zip(X, y)))  # fmt: skip
            files[name] = str(path)
        with Timer() as t:
            ours, note = cli_round("series-classifier", ["--train", files["train"]], files["test"])
    return ours, float(np.mean(one_nn(Xtr, ytr, Xte) == yte)), t.seconds, note


def cli_text():
    Xtr, ytr, Xte, yte = text_set([40, 40, 40], 15, seed=12)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, X, y in (("train", Xtr, ytr), ("test", Xte, yte)):
            path = Path(tmp) / f"{name}.txt"  # SST's `LABEL ||| text` lines
            path.write_text("".join(f"{c} ||| {x}\n" for x, c in zip(X, y)))
            files[name] = str(path)
        with Timer() as t:
            ours, note = cli_round("text-classifier", ["--train", files["train"]], files["test"])
    return ours, tfidf_lr(Xtr, ytr, Xte, yte), t.seconds, note


def cli_forecast():
    s = monthly(96, seed=13)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.csv"
        full.write_text("month,value\n" + "".join(f"{i},{v:.4f}\n" for i, v in enumerate(s)))
        args = ["--data", str(full), "--column", "value", "--holdout", "12"]
        with Timer() as t:
            ours, note = cli_round("forecaster", args, str(full), holdout=True)
    persistence = float(np.sqrt(np.mean((s[83:95] - s[84:]) ** 2)))
    return ours, persistence, t.seconds, note + "; baseline: persistence on the 12 held out"


# ---------------------------------------------------------------- the table

CASES = {  # name -> (what the score is, lower is better?, function)
    "series/2 classes x 3 series": ("acc", False, sc_two_by_three),
    "series/a class of 1 series": ("acc", False, sc_single_series_class),
    "series/32 classes x 3": ("acc", False, sc_thirty_classes),
    "series/3 channels, scales 1e-3..1e3": ("acc", False, sc_multivariate_scales),
    "series/unequal lengths 40-160": ("acc", False, sc_unequal_lengths),
    "series/length 3": ("acc", False, sc_length_3),
    "series/length 8": ("acc", False, sc_length_8),
    "series/constant series": ("acc", False, sc_constant_series),
    "series/string labels": ("acc", False, sc_string_labels),
    "series/labels -1 and 1": ("acc", False, sc_plus_minus_one_labels),
    "series/pandas DataFrame": ("acc", False, sc_dataframe),
    "series/3000 steps, 2 x 4": ("acc", False, sc_long_series),
    "forecast/24 values, no season": ("rmse", True, lambda: fc_short(24, False)),
    "forecast/24 values, season 4": ("rmse", True, lambda: fc_short(24, True, 4)),
    "forecast/24 values, season 12": ("rmse", True, lambda: fc_short(24, True)),
    "forecast/40 values, no season": ("rmse", True, lambda: fc_short(40, False)),
    "forecast/40 values, season 12": ("rmse", True, lambda: fc_short(40, True)),
    "forecast/60 values, no season": ("rmse", True, lambda: fc_short(60, False)),
    "forecast/60 values, season 12": ("rmse", True, lambda: fc_short(60, True)),
    "forecast/linear trend": ("rmse", True, fc_trend),
    "forecast/multiplicative season": ("rmse", True, fc_multiplicative),
    "forecast/negative values": ("rmse", True, fc_negative),
    "forecast/constant": ("rmse", True, fc_constant),
    "forecast/level shift": ("rmse", True, fc_level_shift),
    "forecast/horizon 3": ("rmse", True, lambda: fc_horizon(3)),
    "forecast/horizon 12": ("rmse", True, lambda: fc_horizon(12)),
    "forecast/integer dtype": ("rmse", True, fc_integers),
    "forecast/pandas Series": ("rmse", True, fc_pandas),
    "forecast/meter at 1.2e7, steps of 1.5": ("rmse", True, fc_meter),
    "text/15 classes": ("acc", False, tc_fifteen_classes),
    "text/a class of 2 texts": ("acc", False, tc_tiny_class),
    "text/2,000-word texts": ("acc", False, tc_long_texts),
    "text/CJK, Cyrillic, emoji, punctuation": ("acc", False, tc_scripts),
    "text/duplicates, other label": ("acc", False, tc_duplicates),
    "text/50 texts, 5 classes": ("acc", False, tc_fifty_texts),
    "cli/series-classifier (.tsv)": ("acc", False, cli_series),
    "cli/text-classifier (|||)": ("acc", False, cli_text),
    "cli/forecaster (.csv)": ("rmse", True, cli_forecast),
}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=(), help="run the cases starting with these")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    setup(args)
    logging.basicConfig(level=logging.WARNING)
    print(f"{'case':40} | {'gatelab':>8} | {'baseline':>8} | ratio | {'seconds':>7} | note")
    for name, (metric, lower, fn) in CASES.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        try:
            with contextlib.redirect_stdout(sys.stderr):
                ours, base, seconds, note = fn()
        except Exception as err:  # the probe reports and goes on
            traceback.print_exc()
            print(f"{name:40} | ERROR {type(err).__name__}: {str(err)[:300]}", flush=True)
            continue
        ratio = ours / base if base else float("nan")
        worse = (ours > base * 1.001) if lower else (ours < base - 1e-9)
        flag = " WORSE" if worse else ""
        print(
            f"{name:40} | {ours:8.4g} | {base:8.4g} | {ratio:5.2f} | {seconds:7.1f} | "
            f"{metric}{flag}; {note}",
            flush=True,
        )
    print(f"# load average {load_average()}")


if __name__ == "__main__":
    main()
