"""``gatelab train text-classifier | series-classifier | forecaster``, ``evaluate``, ``predict``.

``evaluate`` and ``predict`` read only a run folder and dispatch on its task kind
(``config.json``'s ``"task"``) through :data:`TASK_KINDS`; another module adds a kind
(a char LM, a translator) with :func:`register_task_kind`.

Bad input ends with one line ``error: ...`` on stderr and exit code 2 (1 when training
itself fails, e.g. a NaN loss), never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from gatelab.cli import app, train_app
from gatelab.cli.progress import RichProgress
from gatelab.errors import GatelabError, TrainingError
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier
from gatelab.train import distributed
from gatelab.train.runs import (
    CONFIG_FILE,
    RunFolderError,
    atomic_write_json,
    check_same,
    fingerprint_file,
    read_config,
    read_json,
    run_lock,
)

__all__ = ["TASK_KINDS", "TaskKind", "register_task_kind"]

SOURCE_FILE = "source.json"  # what the command line trained on (file, column, ...)


# ----------------------------------------------------------------- errors and output


class CommandError(Exception):
    """A problem with the command's input: reported in one line, exit code 2."""


def _fail(message: str, code: int) -> None:
    where = f"rank {distributed.rank()}: " if distributed.world_size() > 1 else ""
    typer.echo(f"{where}error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def clean_errors(fn: Callable) -> Callable:
    """Turn the library's errors into one line on stderr and an exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrainingError as err:
            _fail(str(err), 1)
        except (CommandError, GatelabError, ValueError, TypeError) as err:
            # ValueError/TypeError come from argument checks of configs and models.
            _fail(str(err), 2)
        except KeyboardInterrupt:
            _fail("interrupted; continue the run with --resume", 130)

    return wrapper


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


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _progress(quiet: bool, what: str) -> list:
    return (
        []
        if quiet or not distributed.is_writer()
        else [RichProgress(_console(stderr=True), description=what)]
    )


def _defaults(cls) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# ----------------------------------------------------------------- the task-kind registry


@dataclass(frozen=True)
class TaskKind:
    """How ``evaluate`` and ``predict`` handle one run-folder task kind.

    Attributes:
        name: the ``task`` entry of ``config.json`` (e.g. ``"text-classifier"``).
        load: run folder -> a fitted object.
        evaluate: ``(fitted, data file, options) -> {metric name: value}``.
        predict: ``(fitted, texts given on the command line, data file or None, options)
            -> rows`` (dicts) to print.
        evaluate_options, predict_options: the options (``"column"``, ``"fill"``) that
            ``evaluate`` / ``predict`` read for this kind; one given for a kind that does
            not read it is refused, naming it and the kind.
    """

    name: str
    load: Callable[[Path], Any]
    evaluate: Callable[[Any, Path, dict[str, Any]], dict[str, float]]
    predict: Callable[[Any, list[str], Path | None, dict[str, Any]], list[dict[str, Any]]]
    evaluate_options: tuple[str, ...] = ()
    predict_options: tuple[str, ...] = ()


TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Make ``evaluate`` / ``predict`` handle run folders whose task is ``kind.name``."""
    TASK_KINDS[kind.name] = kind
    return kind


def _kind_of(run_dir: Path) -> tuple[TaskKind, dict[str, Any]]:
    config = read_config(run_dir)
    name = config["task"]
    if name not in TASK_KINDS:
        raise RunFolderError(
            f"run folder '{run_dir}' holds a {name!r} run, which this gatelab cannot evaluate "
            f"or predict with; known kinds: {', '.join(sorted(TASK_KINDS))}"
        )
    return TASK_KINDS[name], config


def _refuse_unread(kind: TaskKind, command: str, given: dict[str, Any]) -> None:
    """An option given that ``command`` does not read for ``kind`` is an error, not a no-op."""
    reads = kind.evaluate_options if command == "evaluate" else kind.predict_options
    for name, value in given.items():
        if value is not None and name not in reads:
            what = f"--{', --'.join(reads)}" if reads else "neither --column nor --fill"
            raise CommandError(
                f"--{name} does not apply to a {kind.name} run: {command} reads {what} for "
                "it; drop the option"
            )


def _source(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SOURCE_FILE
    return read_json(path, "source file") if path.exists() else {}


# ----------------------------------------------------------------- shared options

TEXT = _defaults(TextClassifier)
SERIES = _defaults(SeriesClassifier)
FORECAST = _defaults(Forecaster)

HELP = {
    "epochs": ("Passes over the training data (at most, with early stopping)."),
    "batch_size": ("Sequences per training step."),
    "hidden_size": ("LSTM hidden units per direction."),
    "layers": ("Stacked LSTM layers."),
    "bidirectional": ("Run the LSTM in both directions."),
    "variant": (
        "LSTM cell variant: standard, peephole, cifg, nig, nfg, nog, niaf, noaf, "
        "layernorm, tanh_gates."
    ),
    "backend": (
        "LSTM backend: auto (the framework's fused kernel for the standard cell), native,"
        " fused, reference."
    ),
    "seed": ("Random seed: the same seed and data give the same model."),
    "resume": (
        "Continue the interrupted run in --out from its last checkpoint (same data and "
        "options); the result equals an uninterrupted run."
    ),
    "lr": ("Peak learning rate of AdamW."),
    "dropout": ("Dropout before the Dense head."),
    "models": ("Train an ensemble of this many models (seeds seed, seed+1, ...) and average them."),
    "quiet": ("No progress bar, only the summary."),
    "nproc": (
        "Train data-parallel on this many processes of this machine (torch.distributed, "
        "launched through torch.distributed.run); --batch-size stays the global batch."
    ),
    "max_restarts": (
        "With --nproc: restart all ranks this many times after one fails, resuming from "
        "the last checkpoint."
    ),
    "out": (
        "Run folder to write (config, weights, vocabulary/labels/scaler, metrics, checkpoints)."
    ),
    "fill": (
        "Fill missing values ('?' or empty): ffill (repeat the last value) or interpolate"
        " (linear). Default: a missing value is an error. Series classifiers and forecasters"
        " only; other run kinds refuse it."
    ),
    "text_train": (
        "Labelled text: a TSV/CSV file with a text and a label column (header names such "
        "as text/sentence and label), a 'LABEL ||| text' file (SST), or one file per "
        "class given as a folder or a path stem (rt-polarity -> rt-polarity.pos, rt-polarity.neg)."
    ),
    "text_valid": (
        "Labelled text for early stopping and best weights, same layout as --train. "
        "Default: hold out part of --train."
    ),
    "embedding_dim": ("Word embedding size."),
    "pooling": ("Pool the LSTM outputs over the real steps: last, mean or max."),
    "max_len": ("Cut texts to their first N tokens."),
    "min_freq": ("Words seen fewer times in the training texts become <unk>."),
    "nb_features": (
        "Append each word's naive-Bayes log-count ratio to its embedding: on, off, or auto "
        "(on below 20,000 training texts)."
    ),
    "nb_folds": (
        "With naive-Bayes features, training texts read ratios computed without their "
        f"1/N share of the training texts (out-of-fold); 0 or 1: the full ratios. Default "
        f"{TEXT['nb_folds']}; refused with --nb-features off."
    ),
    "separator": (
        "Field separator of the --train/--valid tables: a character such as ',' or a "
        "separator such as '|||' (SST files, LABEL ||| text). Default: sniffed from the "
        "first line (tab, then '|||', then comma)."
    ),
    "text_column": ("Name or 0-based index of the text column (default: found from the header)."),
    "label_column": ("Name or 0-based index of the label column (default: found from the header)."),
    "series_train": (
        "Labelled series: sktime .ts (values comma-separated, channels ':'-separated, label"
        " last) or UCR text (label first, then the values separated by tabs, commas or "
        "spaces; the 2018 .tsv and the old .txt files). The format is found from the "
        "content."
    ),
    "series_valid": (
        "Labelled series (any format --train takes) for early stopping and best weights. "
        "Default: none."
    ),
    "architecture": (
        "lstm, lstm-fcn (the LSTM beside a fully convolutional branch) or auto (chosen by "
        "inner cross-validation on the training data; the choice is in selection.json)."
    ),
    "normalize": (
        "series (z-normalise each series), global (training mean/std per channel) or none."
    ),
    "forecast_data": ("A CSV file with a header line holding the series as one numeric column."),
    "forecast_column": (
        "The series column, by header name or 0-based index. Default: the only numeric "
        "non-date column."
    ),
    "horizon": ("Steps forecast at once."),
    "history": (
        "Past steps each forecast reads. Default: from the season, the horizon and the "
        "length (docs/models.md)."
    ),
    "season": ("Seasonal period in steps. Default: found from the data; 0: none."),
    "holdout": (
        "Hold out the last N values: not trained on, evaluated after training (one "
        "forecast per step, RMSE/MAE in metrics.json)."
    ),
    "evaluate_run": ("A run folder written by 'gatelab train'."),
    "evaluate_data": (
        "Labelled data in the training file's format (labelled text, a .ts file, or a CSV"
        " series for a forecaster)."
    ),
    "evaluate_json": (
        "Print the metrics as one JSON object whose keys are metric names (accuracy, "
        "macro_f1 / rmse, mae)."
    ),
    "evaluate_column": (
        "Forecaster: the series column (default: the training column); text: the text "
        "column. Other run kinds refuse it."
    ),
    "predict_run": ("A run folder written by 'gatelab train'."),
    "predict_texts": (
        "Texts to classify (text classifiers). A text made only of words never seen in "
        "training is still classified, from <unk> tokens alone, and is flagged 'no known "
        "words'."
    ),
    "predict_data": (
        "Inputs from a file: one text a line (text classifier), a .ts file (series "
        "classifier), a CSV series to forecast on from its end (forecaster; default: the "
        "end of the training series)."
    ),
    "predict_json": ("Print one JSON object per line instead of a table."),
    "predict_column": (
        "Forecaster: the series column of --data (default: the training column). Other run "
        "kinds refuse it."
    ),
}


Epochs = Annotated[int, typer.Option(help=HELP["epochs"])]
TextEpochs = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        help=HELP["epochs"] + " Default: 4 to 8, enough for about 800 optimizer steps.",
        show_default=False,
    ),
]
BatchSize = Annotated[int, typer.Option(help=HELP["batch_size"])]
HiddenSize = Annotated[int, typer.Option(help=HELP["hidden_size"])]
Layers = Annotated[int, typer.Option(help=HELP["layers"])]
Bidirectional = Annotated[
    bool, typer.Option("--bidirectional/--no-bidirectional", help=HELP["bidirectional"])
]
Variant = Annotated[str, typer.Option(help=HELP["variant"])]
Backend = Annotated[str, typer.Option(help=HELP["backend"])]
Seed = Annotated[int, typer.Option(help=HELP["seed"])]
Resume = Annotated[bool, typer.Option("--resume", help=HELP["resume"])]
Lr = Annotated[float, typer.Option(help=HELP["lr"])]
Dropout = Annotated[float, typer.Option(help=HELP["dropout"])]
Models = Annotated[int, typer.Option("--models", help=HELP["models"])]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help=HELP["quiet"])]
Out = Annotated[Path, typer.Option("--out", help=HELP["out"], show_default=False)]
Fill = Annotated[str | None, typer.Option("--fill", help=HELP["fill"])]
Nproc = Annotated[int, typer.Option("--nproc", help=HELP["nproc"])]
MaxRestarts = Annotated[int, typer.Option("--max-restarts", help=HELP["max_restarts"])]


def _common_params(
    *,
    epochs,
    batch_size,
    hidden_size,
    layers,
    bidirectional,
    variant,
    backend,
    seed,
    lr,
    dropout,
    models,
) -> dict[str, Any]:
    """Estimator arguments from the options every ``train`` command shares."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "hidden_size": hidden_size,
        "num_layers": layers,
        "bidirectional": bidirectional,
        "variant": variant,
        "backend": backend,
        "seed": seed,
        "lr": lr,
        "dropout": dropout,
        "n_models": models,
    }


def _prepare_out(out: Path, resume: bool) -> None:
    if (out / CONFIG_FILE).exists() and not resume:
        raise CommandError(
            f"'{out}' already holds a run; pass --resume to continue it, or choose another --out"
        )
    if resume and not (out / CONFIG_FILE).exists():
        _console(stderr=True).print(f"no run to resume in '{out}'; starting a new one")


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


def _summary(est, out: Path, quiet: bool) -> None:
    if not distributed.is_writer():
        return
    console = _console()
    metrics = est.validation_metrics_
    shown = "  ".join(f"{k} {v:.4f}" for k, v in (metrics or {}).items())
    console.print(
        f"trained in {est.train_seconds_:.1f} s; run folder: {out}"
        + (f"\nvalidation: {shown}" if shown else "")
    )


# ----------------------------------------------------------------- train text-classifier


@train_app.command("text-classifier")
@clean_errors
@launching
@holding_out
def train_text_classifier(
    train: Annotated[Path, typer.Option("--train", help=HELP["text_train"], show_default=False)],
    out: Out,
    valid: Annotated[Path | None, typer.Option("--valid", help=HELP["text_valid"])] = None,
    epochs: TextEpochs = TEXT["epochs"],
    batch_size: BatchSize = TEXT["batch_size"],
    hidden_size: HiddenSize = TEXT["hidden_size"],
    layers: Layers = TEXT["num_layers"],
    bidirectional: Bidirectional = TEXT["bidirectional"],
    variant: Variant = "standard",
    backend: Backend = "auto",
    seed: Seed = 0,
    resume: Resume = False,
    nproc: Nproc = 1,
    max_restarts: MaxRestarts = 0,
    embedding_dim: Annotated[int, typer.Option(help=HELP["embedding_dim"])] = TEXT["embedding_dim"],
    pooling: Annotated[str, typer.Option(help=HELP["pooling"])] = TEXT["pooling"],
    lr: Lr = TEXT["lr"],
    dropout: Dropout = TEXT["dropout"],
    models: Models = TEXT["n_models"],
    max_len: Annotated[int | None, typer.Option(help=HELP["max_len"])] = TEXT["max_len"],
    min_freq: Annotated[int, typer.Option(help=HELP["min_freq"])] = TEXT["min_freq"],
    nb_features: Annotated[str, typer.Option(help=HELP["nb_features"])] = TEXT["nb_features"],
    nb_folds: Annotated[int | None, typer.Option(help=HELP["nb_folds"])] = None,
    text_column: Annotated[str | None, typer.Option(help=HELP["text_column"])] = None,
    label_column: Annotated[str | None, typer.Option(help=HELP["label_column"])] = None,
    separator: Annotated[str | None, typer.Option(help=HELP["separator"])] = None,
    quiet: Quiet = False,
) -> None:
    """Train a text classifier (embedding -> BiLSTM -> pooling -> Dense) on labelled text."""
    from gatelab.data import read_labelled_text

    _prepare_out(out, resume)
    columns = {"text_column": _column(text_column), "label_column": _column(label_column)}
    data = read_labelled_text(train, **columns, delimiter=separator)
    validation = None
    if valid is not None:
        v = read_labelled_text(valid, **columns, delimiter=separator)
        validation = (v.texts, v.labels)
    _record_source(out, resume, {"train": train, "valid": valid}, **columns, separator=separator)
    params = _common_params(
        epochs=epochs,
        batch_size=batch_size,
        hidden_size=hidden_size,
        layers=layers,
        bidirectional=bidirectional,
        variant=variant,
        backend=backend,
        seed=seed,
        lr=lr,
        dropout=dropout,
        models=models,
    )
    nb = {"on": True, "off": False, "auto": "auto"}
    if nb_features not in nb:
        raise CommandError(f"--nb-features {nb_features!r}; expected on, off or auto")
    if nb_folds is not None and nb_features == "off":
        raise CommandError(f"--nb-folds {nb_folds} has no effect with --nb-features off")
    nb_folds = TEXT["nb_folds"] if nb_folds is None else nb_folds
    params.update(embedding_dim=embedding_dim, pooling=pooling, max_len=max_len)
    params.update(min_freq=min_freq, nb_features=nb[nb_features], nb_folds=nb_folds)
    est = TextClassifier(**params)
    est.fit(
        data.texts,
        data.labels,
        validation_data=validation,
        run_dir=out,
        resume=resume,
        callbacks=_progress(quiet, "train"),
    )
    _summary(est, out, quiet)


def _column(value: str | None) -> str | int | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


# ----------------------------------------------------------------- series helpers


def _fill_series(s: np.ndarray, how: str) -> np.ndarray:
    """Fill NaN along time, per channel: ffill (leading NaN take the first value) or
    linear interpolation (edges take the nearest value)."""
    out = s.copy()
    steps = np.arange(len(s))
    for c in range(s.shape[1]):
        ok = np.isfinite(out[:, c])
        if not ok.any():
            raise ValueError("a channel has no values at all")
        if how == "interpolate":
            out[~ok, c] = np.interp(steps[~ok], steps[ok], out[ok, c])
        else:
            last = out[ok, c][0]
            for t in range(len(out)):
                if ok[t]:
                    last = out[t, c]
                else:
                    out[t, c] = last
    return out


def _read_ts(path: Path, fill: str | None, *, labelled: bool = True):
    """Labelled series from a .ts or UCR text/tsv file (the format found from the content)."""
    from gatelab.data import read_labelled_series

    if fill not in (None, "ffill", "interpolate"):
        raise CommandError(f"--fill {fill!r}; expected ffill or interpolate")
    data = read_labelled_series(path)
    if labelled and not data.labels:
        raise CommandError(f"'{path}' has no class labels ('@classLabel false'); expected labels")
    series = list(data.series)
    numbers = data.line_numbers
    for i, s in enumerate(series):
        bad = np.argwhere(~np.isfinite(s))
        if not len(bad):
            continue
        if fill is None:
            line = numbers[i] if i < len(numbers) else "?"
            t, c = bad[0]
            raise CommandError(
                f"{path}, line {line}: series {i} has a missing value at step {t}, channel "
                f"{c} ({len(bad)} in this series); pass --fill ffill or --fill interpolate"
            )
        try:
            series[i] = _fill_series(s, fill)
        except ValueError as err:
            raise CommandError(f"{path}, line {numbers[i]}: series {i}: {err}") from None
    return series, data.labels


# ----------------------------------------------------------------- train series-classifier


@train_app.command("series-classifier")
@clean_errors
@launching
@holding_out
def train_series_classifier(
    train: Annotated[Path, typer.Option("--train", help=HELP["series_train"], show_default=False)],
    out: Out,
    valid: Annotated[Path | None, typer.Option("--valid", help=HELP["series_valid"])] = None,
    epochs: Annotated[
        int | None, typer.Option(help=HELP["epochs"] + " Default: about 1,000 steps.")
    ] = SERIES["epochs"],
    batch_size: BatchSize = SERIES["batch_size"],
    hidden_size: HiddenSize = SERIES["hidden_size"],
    layers: Layers = SERIES["num_layers"],
    bidirectional: Bidirectional = SERIES["bidirectional"],
    variant: Variant = "standard",
    backend: Backend = "auto",
    seed: Seed = 0,
    resume: Resume = False,
    nproc: Nproc = 1,
    max_restarts: MaxRestarts = 0,
    normalize: Annotated[str, typer.Option(help=HELP["normalize"])] = "series",
    architecture: Annotated[str, typer.Option(help=HELP["architecture"])] = SERIES["architecture"],
    lr: Lr = SERIES["lr"],
    dropout: Dropout = SERIES["dropout"],
    models: Models = SERIES["n_models"],
    fill: Fill = None,
    quiet: Quiet = False,
) -> None:
    """Train a series classifier (patches -> BiLSTM beside a convolutional branch ->
    Dense) on a .ts or UCR text file."""
    _prepare_out(out, resume)
    if normalize not in ("series", "global", "none"):
        raise CommandError(f"--normalize {normalize!r}; expected series, global or none")
    series, labels = _read_ts(train, fill)
    validation = _read_ts(valid, fill) if valid is not None else None
    _record_source(out, resume, {"train": train, "valid": valid}, fill=fill)
    params = _common_params(
        epochs=epochs,
        batch_size=batch_size,
        hidden_size=hidden_size,
        layers=layers,
        bidirectional=bidirectional,
        variant=variant,
        backend=backend,
        seed=seed,
        lr=lr,
        dropout=dropout,
        models=models,
    )
    params["normalize"] = None if normalize == "none" else normalize
    params["architecture"] = architecture
    if epochs is None:
        del params["epochs"]
    est = SeriesClassifier(**params)
    est.fit(
        series,
        labels,
        validation_data=validation,
        run_dir=out,
        resume=resume,
        callbacks=_progress(quiet, "train"),
    )
    _summary(est, out, quiet)


# ----------------------------------------------------------------- train forecaster


@train_app.command("forecaster")
@clean_errors
@launching
@holding_out
def train_forecaster(
    data: Annotated[Path, typer.Option("--data", help=HELP["forecast_data"], show_default=False)],
    out: Out,
    column: Annotated[str | None, typer.Option("--column", help=HELP["forecast_column"])] = None,
    horizon: Annotated[int, typer.Option("--horizon", help=HELP["horizon"])] = 1,
    history: Annotated[int | None, typer.Option(help=HELP["history"])] = FORECAST["history"],
    season: Annotated[int | None, typer.Option(help=HELP["season"])] = FORECAST["season"],
    holdout: Annotated[int, typer.Option(help=HELP["holdout"])] = 0,
    epochs: Annotated[
        int | None, typer.Option(help=HELP["epochs"] + " Default: about 1,500 steps.")
    ] = FORECAST["epochs"],
    batch_size: BatchSize = FORECAST["batch_size"],
    hidden_size: Annotated[
        int | None, typer.Option(help=HELP["hidden_size"] + " Default: from the length.")
    ] = FORECAST["hidden_size"],
    layers: Layers = FORECAST["num_layers"],
    bidirectional: Bidirectional = FORECAST["bidirectional"],
    variant: Variant = "standard",
    backend: Backend = "auto",
    seed: Seed = 0,
    resume: Resume = False,
    nproc: Nproc = 1,
    max_restarts: MaxRestarts = 0,
    lr: Lr = FORECAST["lr"],
    dropout: Dropout = FORECAST["dropout"],
    models: Models = FORECAST["n_models"],
    fill: Fill = None,
    quiet: Quiet = False,
) -> None:
    """Train a forecaster (LSTM -> Dense horizon head, plus a linear autoregressive skip)."""
    from gatelab.data import read_series_csv

    _prepare_out(out, resume)
    series = read_series_csv(data, _column(column), fill=fill)
    if holdout < 0 or holdout >= len(series):
        raise CommandError(f"--holdout {holdout}; expected 0 <= N < {len(series)} (the series)")
    train = series[: len(series) - holdout] if holdout else series
    _record_source(out, resume, {"train": data}, column=_column(column), fill=fill, holdout=holdout)
    params = _common_params(
        epochs=epochs,
        batch_size=batch_size,
        hidden_size=hidden_size,
        layers=layers,
        bidirectional=bidirectional,
        variant=variant,
        backend=backend,
        seed=seed,
        lr=lr,
        dropout=dropout,
        models=models,
    )
    params.update(horizon=horizon, history=history, season=season)
    if hidden_size is None:
        del params["hidden_size"]
    if epochs is None:
        del params["epochs"]
    est = Forecaster(**params)
    est.fit(train, run_dir=out, resume=resume, callbacks=_progress(quiet, "train"))
    _summary(est, out, quiet)
    if holdout:
        test = _forecast_metrics(est, series, start=len(series) - holdout)
        metrics_path = out / "metrics.json"
        metrics = read_json(metrics_path, "metrics file")
        metrics["test"] = test
        atomic_write_json(metrics_path, metrics)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
        _console().print(f"holdout ({holdout} values, one forecast per step): {shown}")


def _forecast_metrics(est, series: np.ndarray, start: int | None = None) -> dict[str, float]:
    """RMSE/MAE of forecasts from every window of ``series`` whose targets start at or
    after ``start`` (default: every window)."""
    from gatelab.data import make_windows
    from gatelab.train.metrics import regression_metrics

    history = est.history_steps_
    X, Y = make_windows(series, history, est.horizon)
    if start is not None:
        first = max(0, start - history)
        X, Y = X[first:], Y[first:]
    if len(X) == 0:
        raise CommandError(
            f"the series is too short: forecasting needs history={history} + "
            f"horizon={est.horizon} values"
        )
    pred = est.predict(X).reshape(Y.shape)
    return regression_metrics(Y, pred)


# ----------------------------------------------------------------- evaluate and predict


@app.command("evaluate")
@clean_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help=HELP["evaluate_run"], show_default=False)],
    data: Annotated[Path, typer.Option("--data", help=HELP["evaluate_data"], show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help=HELP["evaluate_json"])] = False,
    column: Annotated[str | None, typer.Option("--column", help=HELP["evaluate_column"])] = None,
    fill: Fill = None,
) -> None:
    """Score a trained run on labelled data: accuracy and macro F1 for classifiers, RMSE
    and MAE of every forecast window for forecasters."""
    kind, _ = _kind_of(run_dir)
    _refuse_unread(kind, "evaluate", {"column": column, "fill": fill})
    fitted = kind.load(run_dir)
    options = {"column": _column(column), "fill": fill, "source": _source(run_dir)}
    metrics = kind.evaluate(fitted, data, options)
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    from rich.table import Table

    table = Table(title=f"{kind.name} {run_dir} on {data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    _console().print(table)


@app.command("predict")
@clean_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help=HELP["predict_run"], show_default=False)],
    texts: Annotated[
        list[str] | None, typer.Argument(help=HELP["predict_texts"], show_default=False)
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help=HELP["predict_data"])] = None,
    as_json: Annotated[bool, typer.Option("--json", help=HELP["predict_json"])] = False,
    column: Annotated[str | None, typer.Option("--column", help=HELP["predict_column"])] = None,
    fill: Fill = None,
) -> None:
    """Predict with a trained run: labels and probabilities for classifiers, the next
    values for a forecaster."""
    kind, _ = _kind_of(run_dir)
    _refuse_unread(kind, "predict", {"column": column, "fill": fill})
    fitted = kind.load(run_dir)
    options = {"column": _column(column), "fill": fill, "source": _source(run_dir)}
    rows = kind.predict(fitted, list(texts or []), data, options)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    from rich.table import Table

    table = Table(title=f"{kind.name} {run_dir}")
    columns = list(rows[0]) if rows else []
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    _console().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v:.3f}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


# ----------------------------------------------------------------- the built-in kinds


def _read_text_lines(path: Path) -> list[str]:
    from gatelab.data.lines import read_lines

    texts = [line.strip() for _, line in read_lines(path, what="text file").lines]
    texts = [t for t in texts if t]
    if not texts:
        raise CommandError(f"'{path}' holds no texts; expected one text a line")
    return texts


def _check_known(labels, classes, path: Path) -> None:
    unknown = sorted(set(map(str, labels)) - set(map(str, classes)))
    if unknown:
        raise CommandError(
            f"'{path}' has labels {unknown} that the model never saw; it knows "
            f"{[str(c) for c in classes]}"
        )


def _classification(fitted, X, labels, path: Path) -> dict[str, float]:
    from gatelab.train.metrics import classification_metrics

    _check_known(labels, fitted.classes_, path)
    pred = [str(p) for p in fitted.predict(X)]
    return classification_metrics(np.asarray([str(y) for y in labels]), np.asarray(pred))


def _text_evaluate(fitted, data: Path, options) -> dict[str, float]:
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


def _text_predict(fitted, texts: list[str], data: Path | None, options) -> list[dict[str, Any]]:
    if data is not None:
        texts = texts + _read_text_lines(data)
    if not texts:
        raise CommandError("nothing to predict: give texts as arguments or --data FILE")
    unknown = fitted.unknown_fraction(texts)
    proba = fitted.predict_proba(texts)
    first = [
        {"text": t, "note": "no known words" if u == 1.0 else ""} for t, u in zip(texts, unknown)
    ]
    if any(u == 1.0 for u in unknown):
        n = int(sum(u == 1.0 for u in unknown))
        _console(stderr=True).print(
            f"note: {n} text(s) contain no word seen in training; their label is the model's "
            "guess for unknown words only"
        )
    return _class_rows(fitted, proba, first)


def _series_evaluate(fitted, data: Path, options) -> dict[str, float]:
    series, labels = _read_ts(data, options["fill"])
    return _classification(fitted, series, labels, data)


def _series_predict(fitted, texts: list[str], data: Path | None, options) -> list[dict[str, Any]]:
    if texts:
        raise CommandError("a series classifier takes --data FILE.ts, not texts")
    if data is None:
        raise CommandError("nothing to predict: give --data FILE.ts")
    series, _ = _read_ts(data, options["fill"], labelled=False)
    proba = fitted.predict_proba(series)
    return _class_rows(fitted, proba, [{"series": i} for i in range(len(series))])


def _forecast_series(fitted, data: Path, options) -> np.ndarray:
    from gatelab.data import read_series_csv

    column = options["column"] if options["column"] is not None else options["source"].get("column")
    return read_series_csv(data, column, fill=options["fill"])


def _forecast_evaluate(fitted, data: Path, options) -> dict[str, float]:
    return _forecast_metrics(fitted, _forecast_series(fitted, data, options))


def _forecast_predict(fitted, texts: list[str], data: Path | None, options) -> list[dict]:
    if texts:
        raise CommandError("a forecaster takes --data FILE.csv (or nothing), not texts")
    if data is None and (options["column"] is not None or options["fill"] is not None):
        raise CommandError("--column and --fill read --data FILE.csv; without it there is none")
    series = _forecast_series(fitted, data, options) if data is not None else None
    values = fitted.predict(series)
    return [{"step": k + 1, "forecast": float(v)} for k, v in enumerate(np.ravel(values))]


def _estimator_loader(task: str) -> Callable[[Path], Any]:
    def load(run_dir: Path):
        from gatelab.estimators import ESTIMATORS

        return ESTIMATORS[task].load(run_dir)

    return load


register_task_kind(
    TaskKind(
        "text-classifier",
        _estimator_loader("text-classifier"),
        _text_evaluate,
        _text_predict,
        evaluate_options=("column",),
    )
)
register_task_kind(
    TaskKind(
        "series-classifier",
        _estimator_loader("series-classifier"),
        _series_evaluate,
        _series_predict,
        evaluate_options=("fill",),
        predict_options=("fill",),
    )
)
register_task_kind(
    TaskKind(
        "forecaster",
        _estimator_loader("forecaster"),
        _forecast_evaluate,
        _forecast_predict,
        evaluate_options=("column", "fill"),
        predict_options=("column", "fill"),
    )
)
