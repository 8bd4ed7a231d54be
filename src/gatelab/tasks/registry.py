"""The one registry of task kinds: every kind of run folder gatelab writes, and how it is
built, trained, loaded, evaluated, predicted with and explained.

A run folder's ``config.json`` names its kind (``"task"``); :func:`read_task` reads it
once and returns the :class:`TaskKind` with the config. The command line (``train``,
``evaluate``, ``predict``, ``explain``), :func:`gatelab.insight.explain.explain_run` and
:func:`gatelab.interop.export_run` all read :data:`TASK_KINDS`; a new kind is one
:func:`register_task_kind` call.

    kind               build / train                         explain input
    text-classifier    TextClassifier / .fit                 --text
    series-classifier  SeriesClassifier / .fit               --data (a row per step)
    forecaster         Forecaster / .fit                     --data (one column)
    char-lm            CharLM / tasks.sequence.train_char_lm  (none)
    translator         Seq2Seq / tasks.sequence.train_translator (none)
    synthetic          tasks.synthetic.build_model / run_experiment + save_run
                       (no evaluate, no predict)             --text, --data or a sample
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier
from gatelab.models.charlm import CharLM
from gatelab.models.seq2seq import Seq2Seq
from gatelab.tasks import estimator_kinds, sequence, synthetic
from gatelab.train.runs import RunFolderError, read_config

__all__ = ["TASK_KINDS", "TaskKind", "read_task", "register_task_kind", "task_kind"]


@dataclass(frozen=True)
class TaskKind:
    """One kind of run folder and everything gatelab does with it.

    Attributes:
        name: the ``task`` entry of ``config.json`` (e.g. ``"text-classifier"``).
        load: run folder -> the fitted object that ``evaluate`` and ``predict`` receive.
        evaluate: ``(fitted, data file, options) -> {metric name: value}``; None: the
            kind is not evaluated on a data file.
        predict: ``(fitted, texts given on the command line, data file or None, options)
            -> rows`` (dicts) to print; None: the kind does not predict.
        build: the model (or estimator) class or factory this kind trains.
        train: the function that trains one into a run folder.
        explain: ``(run folder, its config dict, *, text, data, seed, warn) -> the input
            of its report`` (:class:`gatelab.tasks.synthetic.SyntheticInput` or
            :class:`gatelab.tasks.estimator_kinds.EstimatorInput`); None: not explained.
        exports: :func:`gatelab.interop.export_run` writes this kind to ONNX.
        evaluate_options, predict_options: the options (``"column"``, ``"fill"``) that
            ``evaluate`` / ``predict`` read for this kind; one given for a kind that does
            not read it is refused, naming it and the kind.
        predict_note: rows -> a line to tell the user about them, or None.
    """

    name: str
    load: Callable[[Path], Any]
    evaluate: Callable[[Any, Path, dict[str, Any]], dict[str, float]] | None = None
    predict: (
        Callable[[Any, list[str], Path | None, dict[str, Any]], list[dict[str, Any]]] | None
    ) = None
    build: Callable[..., Any] | None = None
    train: Callable[..., Any] | None = None
    explain: Callable[..., Any] | None = None
    exports: bool = False
    evaluate_options: tuple[str, ...] = ()
    predict_options: tuple[str, ...] = ()
    predict_note: Callable[[list[dict[str, Any]]], str | None] | None = None


TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    """Make every reader of the registry handle run folders whose task is ``kind.name``."""
    TASK_KINDS[kind.name] = kind
    return kind


def task_kind(name: str, run_dir: str | os.PathLike | None = None) -> TaskKind:
    """The kind called ``name``; a ``RunFolderError`` (naming ``run_dir``) for one this
    gatelab does not know."""
    if name not in TASK_KINDS:
        where = f"run folder '{run_dir}' holds" if run_dir is not None else "there is"
        raise RunFolderError(
            f"{where} a {name!r} run, which this gatelab cannot read; known kinds: "
            f"{', '.join(sorted(TASK_KINDS))}"
        )
    return TASK_KINDS[name]


def read_task(run_dir: str | os.PathLike) -> tuple[TaskKind, dict[str, Any]]:
    """Read a run folder's ``config.json`` (once) and return its kind and the config."""
    config = read_config(run_dir)
    return task_kind(config["task"], run_dir), config


# ----------------------------------------------------------------- the built-in kinds


def _estimator_kind(cls, evaluate, predict, **options: Any) -> TaskKind:
    """The kind of a scikit-learn estimator class: it builds, fits, loads, explains and
    exports itself."""
    return TaskKind(
        cls.task,
        load=cls.load,
        evaluate=evaluate,
        predict=predict,
        build=cls,
        train=cls.fit,
        explain=estimator_kinds.explain_input,
        exports=True,
        **options,
    )


E = estimator_kinds
register_task_kind(
    _estimator_kind(
        TextClassifier,
        E.text_evaluate,
        E.text_predict,
        evaluate_options=("column",),
        predict_note=E.text_predict_note,
    )
)
register_task_kind(
    _estimator_kind(
        SeriesClassifier,
        E.series_evaluate,
        E.series_predict,
        evaluate_options=("fill",),
        predict_options=("fill",),
    )
)
register_task_kind(
    _estimator_kind(
        Forecaster,
        E.forecast_evaluate,
        E.forecast_predict,
        evaluate_options=("column", "fill"),
        predict_options=("column", "fill"),
    )
)


def _sequence_kind(name: str, build, train, evaluate, predict, exports: bool) -> TaskKind:
    """A kind of :mod:`gatelab.tasks.sequence`: ``evaluate`` / ``predict`` get the run
    folder itself, since they also need the run's saved data split."""
    return TaskKind(
        name,
        load=Path,
        evaluate=lambda run_dir, data, options: evaluate(run_dir, data),
        predict=predict,
        build=build,
        train=train,
        exports=exports,
    )


S = sequence
register_task_kind(
    _sequence_kind(S.CHAR_LM, CharLM, S.train_char_lm, S.evaluate_char_lm, S.char_lm_predict, True)
)
register_task_kind(
    _sequence_kind(
        S.TRANSLATOR,
        Seq2Seq,
        S.train_translator,
        S.evaluate_translator,
        S.translator_predict,
        False,
    )
)
register_task_kind(
    TaskKind(
        synthetic.RUN_TASK,
        load=synthetic.load_run,
        build=synthetic.build_model,
        train=synthetic.run_experiment,
        explain=synthetic.explain_input,
    )
)
