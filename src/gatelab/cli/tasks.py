"""``gatelab train text-classifier | series-classifier | forecaster``: train an estimator
into a run folder (``evaluate`` and ``predict`` are :mod:`gatelab.cli.use`).

Every ``train`` command holds its ``--out`` folder (:func:`holding_out`), can run on
several ranks (:func:`launching`), records what it read in ``source.json`` and resumes.
Errors follow :mod:`gatelab.cli.common`'s one policy.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gatelab.cli import train_app
from gatelab.cli.common import CommandError, clean_errors, console
from gatelab.cli.options import (
    FORECAST,
    HELP,
    SERIES,
    SOURCE_FILE,
    TEXT,
    Fill,
    ForecastData,
    ForecastEpochs,
    Out,
    SeriesEpochs,
    SeriesTrain,
    SeriesValid,
    TextEpochs,
    TextTrain,
    TextValid,
    TimeBudget,
    column_ref,
    estimator_args,
    estimator_train_options,
    time_budget_seconds,
    with_options,
)
from gatelab.cli.progress import RichProgress
from gatelab.errors import TrainingError
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier
from gatelab.tasks.estimator_kinds import forecast_metrics, read_series_file
from gatelab.train import distributed
from gatelab.train.runs import (
    CONFIG_FILE,
    atomic_write_json,
    check_same,
    fingerprint_file,
    read_json,
    run_lock,
)

# ----------------------------------------------------------------- launching


def holding_out(fn: Callable) -> Callable:
    """Run a ``train`` command holding its ``--out`` folder (:func:`gatelab.train.runs.run_lock`):
    a second process on the same folder is refused with a clear message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = kwargs["out"]
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out '{out}' exists and is not a folder")
        with run_lock(out):
            return fn(*args, **kwargs)

    return wrapper


def launching(fn: Callable) -> Callable:
    """Run a ``train`` command on ``--nproc`` ranks through ``torch.distributed.run``
    (this command line again, without ``--nproc``), or as one rank of such a job; after
    an elastic restart (``--max-restarts``) a rank resumes from the last checkpoint."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nproc, max_restarts = kwargs.pop("nproc"), kwargs.pop("max_restarts")
        if nproc < 1 or max_restarts < 0:
            raise CommandError(
                f"--nproc {nproc} --max-restarts {max_restarts}; expected --nproc >= 1 and "
                "--max-restarts >= 0"
            )
        if distributed.restart_count() > 0:  # an elastic restart, one rank or more
            kwargs["resume"] = True
        if distributed.world_size() > 1:  # a rank of a job torchrun started
            if nproc > 1:
                raise CommandError(
                    f"--nproc {nproc} inside a job torchrun started ({distributed.world_size()} "
                    "ranks); torchrun's --nproc-per-node sets the ranks"
                )
            distributed.init()
            if distributed.is_writer():
                return fn(*args, **kwargs)
            with contextlib.redirect_stdout(io.StringIO()):  # rank 0 reports for the job
                return fn(*args, **kwargs)
        if nproc == 1 and max_restarts == 0:
            return fn(*args, **kwargs)
        from gatelab.cli import ARGV

        if ARGV is None:
            raise CommandError(
                "--nproc launches 'python -m gatelab' again and needs the gatelab command "
                "line; elsewhere start the ranks with torchrun"
            )
        argv = _without(ARGV, ("--nproc", "--max-restarts"))
        try:
            distributed.launch(argv, nproc, max_restarts)
        except distributed.RankFailedError as err:
            out = kwargs.get("out")
            saved = read_json(out / "checkpoint.json") if (out / "checkpoint.json").exists() else {}
            where = f"epoch {saved['epoch']}" if "epoch" in saved else "no epoch yet"
            raise TrainingError(
                f"{err}. The run folder '{out}' holds a whole checkpoint ({where}); continue it "
                "with --resume (with any number of ranks)"
            ) from None

    return wrapper


def train_command(
    name: str, options: dict[str, tuple[Any, Any]], *, hold_out: bool = True
) -> Callable[[Callable], Callable]:
    """Declare ``gatelab train NAME``: its shared ``options``
    (:func:`gatelab.cli.options.with_options`), the one error policy, the launch on
    ``--nproc`` ranks and, with ``hold_out``, the lock on its ``--out`` folder (a command
    whose library call locks the folder itself passes False)."""

    def declare(fn: Callable) -> Callable:
        fn = with_options(options)(fn)
        if hold_out:
            fn = holding_out(fn)
        return train_app.command(name)(clean_errors(launching(fn)))

    return declare


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the ``options`` and their values (``--opt V`` or ``--opt=V``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            out.append(arg)
    return out


def _progress(quiet: bool, what: str) -> list:
    return (
        []
        if quiet or not distributed.is_writer()
        else [RichProgress(console(stderr=True), description=what)]
    )


# ----------------------------------------------------------------- run folders


def _prepare_out(out: Path, resume: bool) -> None:
    if (out / CONFIG_FILE).exists() and not resume:
        raise CommandError(
            f"'{out}' already holds a run; pass --resume to continue it, or choose another --out"
        )
    if resume and not (out / CONFIG_FILE).exists():
        console(stderr=True).print(f"no run to resume in '{out}'; starting a new one")


def _record_source(out: Path, resume: bool, files: dict[str, Path | None], **options) -> None:
    """Write ``source.json`` (the data files with their size and SHA-256, and the options
    that read them) before training; when resuming a run, refuse other files or options,
    naming each difference."""
    inputs = {k: None if p is None else fingerprint_file(p) for k, p in files.items()}
    source = {**{k: None if p is None else str(p) for k, p in files.items()}, **options}
    source["inputs"] = inputs
    path = out / SOURCE_FILE
    if resume and (out / CONFIG_FILE).exists() and path.exists():
        saved = read_json(path, "source file")
        saved = {k: saved.get(k) for k in source} if isinstance(saved, dict) else saved
        if "inputs" in source and saved.get("inputs") is None:  # an older gatelab's run
            source.pop("inputs")
            saved.pop("inputs")
        check_same(out, saved, source, free=tuple(files))  # paths may move; contents may not
    atomic_write_json(path, source)


def _fit(est, out: Path, resume: bool, quiet: bool, X, y=None, validation=None) -> None:
    """Fit ``est`` into the run folder ``out`` (resuming it), with a progress bar unless
    ``quiet``, and print the summary."""
    kw = {} if y is None else {"validation_data": validation}
    args = (X,) if y is None else (X, y)
    est.fit(*args, **kw, run_dir=out, resume=resume, callbacks=_progress(quiet, "train"))
    _summary(est, out, quiet)


def _summary(est, out: Path, quiet: bool) -> None:
    if not distributed.is_writer():
        return
    metrics = est.validation_metrics_
    shown = "  ".join(f"{k} {v:.4f}" for k, v in (metrics or {}).items())
    console().print(
        f"trained in {est.train_seconds_:.1f} s; run folder: {out}"
        + (f"\nvalidation: {shown}" if shown else "")
    )


# ----------------------------------------------------------------- train text-classifier


@train_command("text-classifier", estimator_train_options(TEXT, epochs=TextEpochs))
def train_text_classifier(
    train: TextTrain,
    out: Out,
    valid: TextValid = None,
    embedding_dim: Annotated[int, typer.Option(help=HELP["embedding_dim"])] = TEXT["embedding_dim"],
    pooling: Annotated[str, typer.Option(help=HELP["pooling"])] = TEXT["pooling"],
    max_len: Annotated[int | None, typer.Option(help=HELP["max_len"])] = TEXT["max_len"],
    min_freq: Annotated[int, typer.Option(help=HELP["min_freq"])] = TEXT["min_freq"],
    nb_features: Annotated[str, typer.Option(help=HELP["nb_features"])] = TEXT["nb_features"],
    nb_folds: Annotated[int | None, typer.Option(help=HELP["nb_folds"])] = None,
    linear: Annotated[str, typer.Option(help=HELP["linear"])] = "auto",
    text_column: Annotated[str | None, typer.Option(help=HELP["text_column"])] = None,
    label_column: Annotated[str | None, typer.Option(help=HELP["label_column"])] = None,
    separator: Annotated[str | None, typer.Option(help=HELP["separator"])] = None,
    **shared: Any,
) -> None:
    """Train a text classifier (embedding -> BiLSTM -> pooling -> Dense) on labelled text."""
    from gatelab.data import read_labelled_text

    resume = shared["resume"]
    _prepare_out(out, resume)
    columns = {"text_column": column_ref(text_column), "label_column": column_ref(label_column)}
    data = read_labelled_text(train, **columns, delimiter=separator)
    validation = None
    if valid is not None:
        v = read_labelled_text(valid, **columns, delimiter=separator)
        validation = (v.texts, v.labels)
    _record_source(out, resume, {"train": train, "valid": valid}, **columns, separator=separator)
    params = estimator_args(shared)
    nb = {"on": True, "off": False, "auto": "auto"}
    if nb_features not in nb:
        raise CommandError(f"--nb-features {nb_features!r}; expected on, off or auto")
    if nb_folds is not None and nb_features == "off":
        raise CommandError(f"--nb-folds {nb_folds} has no effect with --nb-features off")
    if linear not in nb:  # the same three words as --nb-features
        raise CommandError(f"--linear {linear!r}; expected on, off or auto")
    nb_folds = TEXT["nb_folds"] if nb_folds is None else nb_folds
    params.update(embedding_dim=embedding_dim, pooling=pooling, max_len=max_len)
    params.update(min_freq=min_freq, nb_features=nb[nb_features], nb_folds=nb_folds)
    params.update(linear=nb[linear])
    est = TextClassifier(**params)
    _fit(est, out, resume, shared["quiet"], data.texts, data.labels, validation)


# ----------------------------------------------------------------- train series-classifier


@train_command("series-classifier", estimator_train_options(SERIES, epochs=SeriesEpochs))
def train_series_classifier(
    train: SeriesTrain,
    out: Out,
    valid: SeriesValid = None,
    normalize: Annotated[str, typer.Option(help=HELP["normalize"])] = "series",
    architecture: Annotated[str, typer.Option(help=HELP["architecture"])] = SERIES["architecture"],
    fill: Fill = None,
    time_budget: TimeBudget = f"{SERIES['time_budget']:g}",
    **shared: Any,
) -> None:
    """Train a series classifier (patches -> BiLSTM beside a convolutional branch ->
    Dense) on a .ts or UCR text file."""
    resume = shared["resume"]
    _prepare_out(out, resume)
    if normalize not in ("series", "global", "none"):
        raise CommandError(f"--normalize {normalize!r}; expected series, global or none")
    seconds = time_budget_seconds(time_budget)  # refused before the data are read
    series, labels = read_series_file(train, fill)
    validation = read_series_file(valid, fill) if valid is not None else None
    _record_source(out, resume, {"train": train, "valid": valid}, fill=fill)
    params = estimator_args(shared)
    params["normalize"] = None if normalize == "none" else normalize
    params["architecture"] = architecture
    params["time_budget"] = seconds
    if params["epochs"] is None:
        del params["epochs"]
    est = SeriesClassifier(**params)
    _fit(est, out, resume, shared["quiet"], series, labels, validation)


# ----------------------------------------------------------------- train forecaster


@train_command(
    "forecaster",
    estimator_train_options(
        FORECAST,
        epochs=ForecastEpochs,
        hidden_size=Annotated[
            int | None, typer.Option(help=HELP["hidden_size"] + " Default: from the length.")
        ],
    ),
)
def train_forecaster(
    data: ForecastData,
    out: Out,
    column: Annotated[str | None, typer.Option("--column", help=HELP["forecast_column"])] = None,
    horizon: Annotated[int, typer.Option("--horizon", help=HELP["horizon"])] = 1,
    history: Annotated[int | None, typer.Option(help=HELP["history"])] = FORECAST["history"],
    season: Annotated[int | None, typer.Option(help=HELP["season"])] = FORECAST["season"],
    holdout: Annotated[int, typer.Option(help=HELP["holdout"])] = 0,
    fill: Fill = None,
    **shared: Any,
) -> None:
    """Train a forecaster (LSTM -> Dense horizon head, plus a linear autoregressive skip)."""
    from gatelab.data import read_series_csv

    resume = shared["resume"]
    _prepare_out(out, resume)
    series = read_series_csv(data, column_ref(column), fill=fill)
    if holdout < 0 or holdout >= len(series):
        raise CommandError(f"--holdout {holdout}; expected 0 <= N < {len(series)} (the series)")
    train = series[: len(series) - holdout] if holdout else series
    _record_source(
        out, resume, {"train": data}, column=column_ref(column), fill=fill, holdout=holdout
    )
    params = estimator_args(shared)
    params.update(horizon=horizon, history=history, season=season)
    for name in ("hidden_size", "epochs"):
        if params[name] is None:
            del params[name]
    est = Forecaster(**params)
    _fit(est, out, resume, shared["quiet"], train)
    if holdout:
        test = forecast_metrics(est, series, start=len(series) - holdout)
        metrics_path = out / "metrics.json"
        metrics = read_json(metrics_path, "metrics file")
        metrics["test"] = test
        atomic_write_json(metrics_path, metrics)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
        console().print(f"holdout ({holdout} values, one forecast per step): {shown}")
