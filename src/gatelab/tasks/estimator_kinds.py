"""The run kinds of the scikit-learn estimators (text-classifier, series-classifier,
forecaster): how each evaluates and predicts on a data file and what its explain report
reads (:class:`EstimatorInput`). :mod:`gatelab.tasks.registry` lists them.

Bad input raises :class:`gatelab.errors.DataError` naming the file, the line or the value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gatelab import estimators
from gatelab.data.series_csv import fill_missing
from gatelab.errors import DataError
from gatelab.tasks.problems import numeric_rows

__all__ = [
    "EstimatorInput",
    "explain_input",
    "forecast_evaluate",
    "forecast_metrics",
    "forecast_predict",
    "read_series_file",
    "series_evaluate",
    "series_predict",
    "text_evaluate",
    "text_predict",
    "text_predict_note",
]

log = logging.getLogger(__name__)


def read_series_file(path: Path, fill: str | None, *, labelled: bool = True):
    """Series (and labels) from a .ts or UCR text/tsv file (the format found from the
    content), missing values filled by ``fill`` with :func:`gatelab.data.series_csv.fill_missing`
    (the policy of every reader: a gap at the start has nothing to fill from and is
    refused)."""
    from gatelab.data import read_labelled_series

    if fill not in (None, "ffill", "interpolate"):
        raise DataError(f"--fill {fill!r}; expected ffill or interpolate")
    data = read_labelled_series(path)
    if labelled and not data.labels:
        raise DataError(f"'{path}' has no class labels ('@classLabel false'); expected labels")
    series = list(data.series)
    numbers = data.line_numbers
    for i, s in enumerate(series):
        bad = np.argwhere(~np.isfinite(s))
        if not len(bad):
            continue
        line = numbers[i] if i < len(numbers) else "?"
        if fill is None:
            t, c = bad[0]
            raise DataError(
                f"{path}, line {line}: series {i} has a missing value at step {t}, channel "
                f"{c} ({len(bad)} in this series); pass --fill ffill or --fill interpolate"
            )
        missing = np.where(np.isfinite(s), s, np.nan)
        series[i] = fill_missing(
            missing,
            fill,
            lambda t, c, i=i, line=line: f"{path}, line {line}: series {i}, step {t}, channel {c}",
        )
    return series, data.labels


def forecast_metrics(est, series: np.ndarray, start: int | None = None) -> dict[str, float]:
    """RMSE/MAE of forecasts from every window of ``series`` whose targets start at or
    after ``start`` (default: every window)."""
    from gatelab.data import make_windows
    from gatelab.train.metrics import regression_metrics

    history = est.history_steps_
    X, Y = make_windows(series, history, est.horizon, np.float64)
    if start is not None:
        first = max(0, start - history)
        X, Y = X[first:], Y[first:]
    if len(X) == 0:
        raise DataError(
            f"the series is too short: forecasting needs history={history} + "
            f"horizon={est.horizon} values"
        )
    pred = est.predict(X).reshape(Y.shape)
    return regression_metrics(Y, pred)


def _read_text_lines(path: Path) -> list[str]:
    from gatelab.data.lines import read_lines

    texts = [line.strip() for _, line in read_lines(path, what="text file").lines]
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"'{path}' holds no texts; expected one text a line")
    return texts


def _check_known(labels, classes, path: Path) -> None:
    unknown = sorted(set(map(str, labels)) - set(map(str, classes)))
    if unknown:
        raise DataError(
            f"'{path}' has labels {unknown} that the model never saw; it knows "
            f"{[str(c) for c in classes]}"
        )


def _classification(fitted, X, labels, path: Path) -> dict[str, float]:
    from gatelab.train.metrics import classification_metrics

    _check_known(labels, fitted.classes_, path)
    pred = [str(p) for p in fitted.predict(X)]
    return classification_metrics(np.asarray([str(y) for y in labels]), np.asarray(pred))


def text_evaluate(fitted, data: Path, options) -> dict[str, float]:
    from gatelab.data import read_labelled_text

    source = options["source"]
    text_column = options["column"] if options["column"] is not None else source.get("text_column")
    d = read_labelled_text(
        data,
        text_column=text_column,
        label_column=source.get("label_column"),
        delimiter=source.get("separator"),  # as at training (None: found from the content)
    )
    return _classification(fitted, d.texts, d.labels, data)


def _class_rows(fitted, proba: np.ndarray, first: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for row, p in zip(first, proba):
        k = int(np.argmax(p))
        row.update(
            label=_jsonable(fitted.classes_[k]),
            probability=float(p[k]),
            probabilities={str(c): float(q) for c, q in zip(fitted.classes_, p)},
        )
        rows.append(row)
    return rows


def _jsonable(value):
    return value.item() if isinstance(value, np.generic) else value


def text_predict(fitted, texts: list[str], data: Path | None, options) -> list[dict[str, Any]]:
    if data is not None:
        texts = texts + _read_text_lines(data)
    if not texts:
        raise DataError("nothing to predict: give texts as arguments or --data FILE")
    unknown = fitted.unknown_fraction(texts)
    proba = fitted.predict_proba(texts)
    first = [
        {"text": t, "note": "no known words" if u == 1.0 else ""} for t, u in zip(texts, unknown)
    ]
    return _class_rows(fitted, proba, first)


def text_predict_note(rows: list[dict[str, Any]]) -> str | None:
    """The line ``predict`` adds when some texts hold no word seen in training."""
    n = sum(row.get("note") == "no known words" for row in rows)
    if not n:
        return None
    return (
        f"note: {n} text(s) contain no word seen in training; their label is the model's "
        "guess for unknown words only"
    )


def series_evaluate(fitted, data: Path, options) -> dict[str, float]:
    series, labels = read_series_file(data, options["fill"])
    return _classification(fitted, series, labels, data)


def series_predict(fitted, texts: list[str], data: Path | None, options) -> list[dict[str, Any]]:
    if texts:
        raise DataError("a series classifier takes --data FILE.ts, not texts")
    if data is None:
        raise DataError("nothing to predict: give --data FILE.ts")
    series, _ = read_series_file(data, options["fill"], labelled=False)
    proba = fitted.predict_proba(series)
    return _class_rows(fitted, proba, [{"series": i} for i in range(len(series))])


def _forecast_series(fitted, data: Path, options) -> np.ndarray:
    from gatelab.data import read_series_csv

    column = options["column"] if options["column"] is not None else options["source"].get("column")
    return read_series_csv(data, column, fill=options["fill"])


def forecast_evaluate(fitted, data: Path, options) -> dict[str, float]:
    return forecast_metrics(fitted, _forecast_series(fitted, data, options))


def forecast_predict(fitted, texts: list[str], data: Path | None, options) -> list[dict]:
    if texts:
        raise DataError("a forecaster takes --data FILE.csv (or nothing), not texts")
    if data is None and (options["column"] is not None or options["fill"] is not None):
        raise DataError("--column and --fill read --data FILE.csv; without it there is none")
    series = _forecast_series(fitted, data, options) if data is not None else None
    values = fitted.predict(series)
    return [{"step": k + 1, "forecast": float(v)} for k, v in enumerate(np.ravel(values))]


# ----------------------------------------------------------------- explain


@dataclass
class EstimatorInput:
    """What an estimator's explain report reads: the fitted estimator, the network whose
    LSTM is shown (an ensemble's first member), the model's input ``x`` for one sequence
    (batch of one), a label per step, and the forecast of a forecaster."""

    estimator: Any
    net: torch.nn.Module
    x: Tensor
    labels: list[str]
    forecast: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def explain_input(
    run_dir: Path,
    config: dict[str, Any],
    *,
    text: str | None,
    data: str | Path | None,
    seed: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> EstimatorInput:
    """The input of an estimator run's explain report.

    ``text-classifier``: ``--text``, tokenised as in training and cut to the estimator's
    ``max_len`` (with a warning). ``series-classifier``: ``--data``, a numeric CSV with a
    row per step and a column per channel, normalised as in training. ``forecaster``:
    ``--data``, one column; the model sees its last ``history`` values (a warning says
    so when the file is longer). An ensemble shows its first member. A ``seed`` (which
    picks a sampled sequence of a synthetic task) is refused.
    """
    kind = config["task"]
    if seed is not None:
        raise DataError(
            f"--seed applies to synthetic-task runs only; '{run_dir}' holds a {kind} run: "
            "give --text or --data"
        )
    est = estimators.load(run_dir)
    net = mixed = est.model_
    notes = []
    if hasattr(mixed, "linear"):  # a text classifier's WithLinear: the network is shown
        w = float(mixed.weight)
        notes.append(f"The network is shown; its probabilities count {1 - w:g} of the mix.")
        net = mixed.network
    members = getattr(net, "members", None)
    if members is not None:
        notes.append(f"An ensemble of {len(members)} models: the report shows the first.")
        net = members[0]
    if kind == "text-classifier":
        x, labels = _text_input(est, text, data, warn)
        if hasattr(mixed, "linear"):
            x = mixed.network_ids(x)  # the linear part's own words are <unk> to the network
        return EstimatorInput(est, net, x, labels, notes=notes)
    if text is not None or data is None:
        raise DataError(f"a {kind} run is explained on --data FILE, not --text")
    width = getattr(est, "n_channels_", 1) if kind == "series-classifier" else 1
    if not Path(data).is_file():
        raise DataError(f"cannot read --data file '{data}': no such file")
    raw = Path(data).read_text(encoding="utf-8")
    series = torch.tensor(numeric_rows(raw, str(data), width), dtype=torch.float64)
    if series.shape[0] == 0:
        raise DataError(f"--data file '{data}' has no rows; expected one row per step")
    forecast = None
    if kind == "forecaster":
        history = est.history_steps_
        if series.shape[0] < history:
            raise DataError(
                f"--data has {series.shape[0]} steps; the forecaster needs its history of {history}"
            )
        if series.shape[0] > history:
            _say(
                warn,
                f"the series has {series.shape[0]} steps; the forecaster reads its last "
                f"history={history}, so the report shows those",
            )
        series = series[-history:]
        window = series[:, 0].numpy()[None, :]  # (1, history)
        x = est._windows_data(window, None).inputs
        forecast = est.predict(window).reshape(-1)  # linear part + LSTM term
    else:
        x = est._inputs([series.numpy()]).inputs  # (1, T, C), normalised as in training
    labels = [",".join(f"{v:.3g}" for v in row) for row in series.tolist()]
    patch = net.config.patch
    if patch > 1:  # the LSTM reads one step per patch: label each by the steps it holds
        T = len(labels)
        labels = [f"{a}-{min(a + patch, T) - 1}" for a in range(0, T, patch)]
        notes.append(f"Each LSTM step reads a patch of {patch} steps; its label is their range.")
    if net.config.head_weight == 0.0:
        notes.append(
            "The LSTM head is off (head_weight 0): the ridge over the random-kernel features "
            "alone gives the prediction, and the gates shown do not enter it."
        )
    return EstimatorInput(est, net, x, labels, forecast, notes)


def _text_input(est, text: str | None, data, warn) -> tuple[Tensor, list[str]]:
    if data is not None or text is None:
        raise DataError(f"a {est.task} run is explained on --text, not --data")
    if not text.strip():
        raise DataError("the text is empty; expected at least one word")
    tokens = est.tokenizer_(text)
    if not tokens:
        raise DataError(f"the text {text[:40]!r} has no tokens the tokenizer keeps")
    if est.max_len and len(tokens) > est.max_len:
        _say(
            warn,
            f"the text has {len(tokens)} tokens, more than the {est.max_len} the model saw "
            f"in training (max_len); explaining its first {est.max_len}",
        )
        tokens = tokens[: est.max_len]
    return torch.tensor([est.vocab_.encode(tokens)]), tokens  # (1, T)


def _say(warn: Callable[[str], None] | None, message: str) -> None:
    log.warning(message)
    if warn is not None:
        warn(message)
