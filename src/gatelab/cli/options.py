"""The options the ``train``, ``evaluate`` and ``predict`` commands of the estimators
share: their help texts (one place, so that every command says the same) and their
typer types; defaults come from the estimators' own signatures."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gatelab.cli.common import CommandError
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier

SOURCE_FILE = "source.json"  # what the command line trained on (file, column, ...)


def defaults(cls) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


TEXT = defaults(TextClassifier)
SERIES = defaults(SeriesClassifier)
FORECAST = defaults(Forecaster)

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
    "linear": (
        "Mix the network with a linear part (TF-IDF uni+bigrams, logistic regression), its "
        "weight chosen by the validation log-loss: on, off (the network alone), or auto "
        "(on below 20,000 training texts)."
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
        "lstm, lstm-fcn (the LSTM beside a fully convolutional branch), lstm-rocket (the "
        "LSTM beside random convolutional kernels and a ridge) or auto (chosen by inner "
        "cross-validation on the training data, which may also choose lstm-rocket's ridge "
        "alone, 'ridge'; the choice is in selection.json)."
    ),
    "time_budget": (
        "Seconds for the whole fit, a backstop: the inner cross-validation starts no fold "
        "it cannot finish in its share and each model trains the epochs that fit in what "
        "is left, at least a quarter (docs/models.md). 'none': no bound, the same model on "
        "every machine. What it did is in selection.json."
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


def _epochs(default: str) -> Any:
    """The ``--epochs`` type of an estimator whose default follows from the data."""
    return Annotated[
        int | None,
        typer.Option("--epochs", help=f"{HELP['epochs']} Default: {default}", show_default=False),
    ]


TextEpochs = _epochs("4 to 8, enough for about 800 optimizer steps.")
SeriesEpochs = _epochs("about 1,000 steps.")
ForecastEpochs = _epochs("about 1,500 steps.")
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


def _file(flag: str, help_key: str, required: bool = True) -> Any:
    """The type of an option naming a data file (required: no default shown)."""
    if required:
        return Annotated[Path, typer.Option(flag, help=HELP[help_key], show_default=False)]
    return Annotated[Path | None, typer.Option(flag, help=HELP[help_key])]


TextTrain = _file("--train", "text_train")
TextValid = _file("--valid", "text_valid", required=False)
SeriesTrain = _file("--train", "series_train")
SeriesValid = _file("--valid", "series_valid", required=False)
ForecastData = _file("--data", "forecast_data")
Fill = Annotated[str | None, typer.Option("--fill", help=HELP["fill"])]
Nproc = Annotated[int, typer.Option("--nproc", help=HELP["nproc"])]
MaxRestarts = Annotated[int, typer.Option("--max-restarts", help=HELP["max_restarts"])]


TimeBudget = Annotated[str, typer.Option("--time-budget", help=HELP["time_budget"])]


def time_budget_seconds(value: str) -> float | None:
    """A ``--time-budget`` value: seconds > 0, or None for ``none`` (any case)."""
    if value.strip().lower() == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise CommandError(
            f"--time-budget {value!r}; expected a number of seconds > 0, or none (no bound)"
        )
    return seconds


def column_ref(value: str | None) -> str | int | None:
    """A ``--column`` value: a 0-based index when it is all digits, else a name."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


# ----------------------------------------------------------------- the shared train options

#: The options every estimator's ``train`` command takes, with their types.
SHARED_TRAIN: dict[str, Any] = {
    "epochs": Epochs,
    "batch_size": BatchSize,
    "hidden_size": HiddenSize,
    "layers": Layers,
    "bidirectional": Bidirectional,
    "variant": Variant,
    "backend": Backend,
    "seed": Seed,
    "lr": Lr,
    "dropout": Dropout,
    "models": Models,
    "resume": Resume,
    "nproc": Nproc,
    "max_restarts": MaxRestarts,
    "quiet": Quiet,
}
#: The estimator argument each shared option sets (the others run the command).
ESTIMATOR_ARGS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "hidden_size": "hidden_size",
    "layers": "num_layers",
    "bidirectional": "bidirectional",
    "variant": "variant",
    "backend": "backend",
    "seed": "seed",
    "lr": "lr",
    "dropout": "dropout",
    "models": "n_models",
}
_RUN_DEFAULTS = {"resume": False, "nproc": 1, "max_restarts": 0, "quiet": False}


def with_options(options: dict[str, tuple[Any, Any]]) -> Callable[[Callable], Callable]:
    """Give a command the options ``{name: (type, default)}`` after its own; the command
    takes them as ``**kwargs``.

    typer reads a command's options from its signature, so this writes them into the
    signature (``__signature__``) once, instead of every command that shares them
    spelling them out (click's shared-option decorators, in typer's terms). Apply it
    below the other decorators, next to the ``def``."""

    def add(fn: Callable) -> Callable:
        signature = inspect.signature(fn, eval_str=True)  # typer reads the types here
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=value)
            for name, (kind, value) in options.items()
        ]
        fn.__signature__ = signature.replace(parameters=own + shared)
        return fn

    return add


def estimator_train_options(table: dict[str, Any], **types: Any) -> dict[str, tuple[Any, Any]]:
    """The options every estimator's ``train`` command takes (:data:`SHARED_TRAIN`), for
    :func:`with_options`: each defaults to the estimator's default in ``table``; ``types``
    replaces an option's type where a command words it its own way."""
    return {
        name: (
            types.get(name, kind),
            _RUN_DEFAULTS[name] if name in _RUN_DEFAULTS else table[ESTIMATOR_ARGS[name]],
        )
        for name, kind in SHARED_TRAIN.items()
    }


def estimator_args(shared: dict[str, Any]) -> dict[str, Any]:
    """The estimator arguments the shared options set, from a command's ``**shared``."""
    return {arg: shared[option] for option, arg in ESTIMATOR_ARGS.items()}
