"""scikit-learn estimators over the LSTM -> Dense models: text, series, forecasting.

- :class:`TextClassifier` (:mod:`.text`): a list of raw strings -> classes (tokenizer +
  vocabulary are learnt in ``fit``);
- :class:`SeriesClassifier` (:mod:`.series`): ``(N, T, C)`` arrays (or a list of
  ``(T_i, C)`` arrays of different lengths) -> classes;
- :class:`Forecaster` (:mod:`.forecaster`): a 1-D series -> its next ``horizon`` values.

Each follows scikit-learn's contract (constructor arguments stored as given, learnt state
in attributes ending in ``_``, ``get_params / set_params``, ``fit / predict / score``;
classifiers have ``predict_proba`` and ``classes_``), so they work inside
``sklearn.pipeline.Pipeline`` and ``cross_val_score``. ``save(path)`` writes a run folder
(:mod:`gatelab.train.runs`) and ``load(path)`` reads one back; ``fit(..., run_dir=DIR)`` trains
with a checkpoint each epoch and ``resume=True`` continues an interrupted run (the same
settings and data, checked); a folder that holds a run is replaced only with
``overwrite=True``. What they share (the base class, run-folder I/O) is in :mod:`.base`;
the ensemble of seeds in :mod:`.ensemble`. Each class names its run-folder task kind in
``task``; the one registry of task kinds is :mod:`gatelab.tasks.registry`.
"""

import os

from gatelab.estimators.base import LSTMEstimator
from gatelab.estimators.ensemble import Ensemble
from gatelab.estimators.forecaster import Forecaster
from gatelab.estimators.series import SeriesClassifier
from gatelab.estimators.text import TextClassifier

_Ensemble = Ensemble  # the name gatelab.interop.onnx imports


def load(path: str | os.PathLike) -> LSTMEstimator:
    """The fitted estimator saved in run folder ``path``, whichever of the three it is.

    Raises:
        RunFolderError: no run folder there, or one of a kind that is not an estimator.
    """
    from gatelab.train.runs import RunFolderError, read_config

    task = read_config(path)["task"]
    for cls in (TextClassifier, SeriesClassifier, Forecaster):
        if cls.task == task:
            return cls.load(path)
    raise RunFolderError(
        f"run folder '{path}' holds a {task!r} run; estimators exist for "
        "'forecaster', 'series-classifier', 'text-classifier'"
    )


__all__ = [
    "Ensemble",
    "Forecaster",
    "SeriesClassifier",
    "TextClassifier",
    "load",
]
