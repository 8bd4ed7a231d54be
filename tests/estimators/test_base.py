"""gatelab.estimators.base: scikit-learn parameters, the classifiers' shared fit, resume,
run folders written and replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone

import gatelab
from gatelab.errors import DataError
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier
from gatelab.models.heads import ModelConfig
from gatelab.train.runs import RunFolderError
from tests.helpers import (
    StopAfterEpochs,
    sentiment_texts,
    shape_series,
    state_equal,
)

TINY_TEXT = dict(
    embedding_dim=16, hidden_size=16, epochs=6, batch_size=16, lr=1e-2, word_dropout=0.0,
    embedding_dropout=0.0, validation_fraction=0.0, n_models=1, min_freq=1,
)  # fmt: skip
TINY_SERIES = dict(hidden_size=12, epochs=25, batch_size=16, lr=1e-2, n_models=1)


def test_estimators_are_exported_from_the_package():
    assert gatelab.TextClassifier is TextClassifier
    assert gatelab.SeriesClassifier is SeriesClassifier
    assert gatelab.Forecaster is Forecaster


def test_params_are_stored_as_given_and_clone_works():
    est = TextClassifier(hidden_size=7, pooling="mean", clip_norm=None)
    assert est.get_params()["hidden_size"] == 7 and est.get_params()["clip_norm"] is None
    est.set_params(hidden_size=9)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin is not est


def test_estimator_resume_equals_an_uninterrupted_run(tmp_path):
    X, y = sentiment_texts(80)
    params = {**TINY_TEXT, "epochs": 3, "validation_fraction": 0.25, "n_models": 2}
    whole = TextClassifier(**params).fit(X, y, run_dir=tmp_path / "whole")

    stop = StopAfterEpochs(4)  # member 0 done, member 1 after its first epoch
    with pytest.raises(KeyboardInterrupt):
        TextClassifier(**params).fit(X, y, run_dir=tmp_path / "run", callbacks=[stop])
    assert not (tmp_path / "run" / "model.safetensors").exists()
    resumed = TextClassifier(**params).fit(X, y, run_dir=tmp_path / "run", resume=True)
    assert state_equal(resumed.model_, whole.model_)
    a = (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == a
    with pytest.raises(RunFolderError, match="differ"):
        TextClassifier(**{**params, "hidden_size": 8}).fit(
            X, y, run_dir=tmp_path / "run", resume=True
        )


def test_validation_data_with_unseen_labels_or_bad_input_is_refused():
    # both classifiers check validation_data the same way (ClassifierBase.fit)
    X, y = shape_series(10)
    for est, train, valid in (
        (SeriesClassifier(**TINY_SERIES), (X, y), shape_series(4, seed=1)),
        (TextClassifier(**TINY_TEXT), sentiment_texts(10), sentiment_texts(4, seed=1)),
    ):
        vlabels = [*valid[1][:3], "middle"]
        with pytest.raises(DataError, match=r"validation labels \['middle'\] are not among"):
            est.fit(*train, validation_data=(valid[0], vlabels))
    with pytest.raises(DataError, match="validation X holds no series"):
        SeriesClassifier(**TINY_SERIES).fit(X, y, validation_data=([], []))
    with pytest.raises(DataError, match=r"validation X\[1\] is a int"):
        TextClassifier(**TINY_TEXT).fit(*sentiment_texts(10), validation_data=(["a", 3], [0, 1]))


def test_lstm_dropout_without_a_second_layer_is_refused():
    # It acts between stacked layers; with one layer it used to be dropped silently.
    X, y = shape_series(20)
    with pytest.raises(ValueError, match=r"lstm_dropout=0.3 acts between stacked LSTM layers"):
        SeriesClassifier(**TINY_SERIES, lstm_dropout=0.3).fit(X, y)
    SeriesClassifier(**{**TINY_SERIES, "epochs": 1}, lstm_dropout=0.3, num_layers=2).fit(X, y)


def test_a_run_folder_with_one_layer_lstm_dropout_still_loads(tmp_path, caplog):
    # as gatelab wrote it before ModelConfig refused lstm_dropout with one layer (zeroed)
    X, y = shape_series(24, T=8)
    params = {"hidden_size": 4, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    est = SeriesClassifier(**params).fit(X, y, run_dir=tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    config = json.loads(path.read_text())
    assert config["model"]["num_layers"] == 1
    config["model"]["lstm_dropout"] = config["params"]["lstm_dropout"] = 0.3
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lstm_dropout=0\.3"):
        ModelConfig(**config["model"])
    with caplog.at_level("WARNING", logger="gatelab.models.heads"):
        again = SeriesClassifier.load(tmp_path / "run")
    assert "lstm_dropout=0.3 with num_layers=1" in caplog.text
    assert again.model_config_.lstm_dropout == 0.0
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_save_replaces_the_run_a_folder_holds_checkpoints_included(tmp_path):
    X, y = shape_series(24, T=8)
    params = {"hidden_size": 4, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    run = tmp_path / "run"
    SeriesClassifier(**params, n_models=2).fit(X, y, run_dir=run)
    assert list(run.glob("member-*/checkpoint*"))
    other = SeriesClassifier(**params, seed=1, n_models=1).fit(X, y)
    other.save(run)
    assert not list(run.rglob("checkpoint*")) and not list(run.rglob("member-*/*.safetensors"))
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"] == {} and config["n_models"] == 1
    np.testing.assert_array_equal(
        SeriesClassifier.load(run).predict_proba(X), other.predict_proba(X)
    )
    with pytest.raises(RunFolderError, match=r"inputs\.train: not saved"):
        SeriesClassifier(**params, seed=1, n_models=1).fit(X, y, run_dir=run, resume=True)
    with pytest.raises(RunFolderError, match=r"holds a 'series-classifier' run.*'forecaster'"):
        Forecaster(hidden_size=4, epochs=1, n_models=1, history=4, highway=0).fit(X[0, :, 0]).save(
            run
        )
