"""scikit-learn estimators: learning, Pipeline / cross_val_score, save / load, resume."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import gatelab
from gatelab.errors import DataError
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier, load
from gatelab.models.heads import ModelConfig
from gatelab.train.fit import Callback, TensorData
from gatelab.train.runs import RunFolderError
from tests.helpers import sentiment_texts, shape_series, shared_data, sine_series, state_equal

TINY_TEXT = dict(
    embedding_dim=16, hidden_size=16, epochs=6, batch_size=16, lr=1e-2, word_dropout=0.0,
    embedding_dropout=0.0, validation_fraction=0.0, n_models=1, min_freq=1,
)  # fmt: skip
TINY_SERIES = dict(hidden_size=12, epochs=25, batch_size=16, lr=1e-2, n_models=1)
TINY_FORECAST = dict(history=12, highway=6, hidden_size=8, epochs=30, lr=1e-2, n_models=1)


@pytest.fixture(scope="module")
def text_clf():
    X, y = sentiment_texts(200)
    return TextClassifier(**TINY_TEXT).fit(X, y)


def test_text_classifier_learns_and_scores(text_clf):
    X, y = sentiment_texts(100, seed=1)
    assert text_clf.score(X, y) >= 0.9
    assert list(text_clf.classes_) == ["neg", "pos"]
    proba = text_clf.predict_proba(X)
    assert proba.shape == (100, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (text_clf.classes_[proba.argmax(1)] == text_clf.predict(X)).all()


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


def test_text_classifier_in_a_pipeline_and_cross_val_score():
    X, y = sentiment_texts(180)
    pipe = Pipeline(
        [
            ("upper", FunctionTransformer(lambda texts: [t.upper() for t in texts])),
            ("clf", TextClassifier(**{**TINY_TEXT, "epochs": 10})),
        ]
    )
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() >= 0.8


def test_save_load_round_trip_and_no_pickle(text_clf, tmp_path, monkeypatch):
    text_clf.save(tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [
        "config.json", "labels.json", "metrics.json", "model.safetensors", "tokenizer.json",
        "vocab.json",
    ]  # fmt: skip
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["task"] == "text-classifier" and config["gatelab_version"] == gatelab.__version__

    def forbidden(*args, **kwargs):
        raise AssertionError("loading must not use pickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    again = TextClassifier.load(tmp_path / "run")
    X, _ = sentiment_texts(30, seed=2)
    np.testing.assert_array_equal(again.predict_proba(X), text_clf.predict_proba(X))
    assert again.get_params() == text_clf.get_params()
    assert isinstance(load(tmp_path / "run"), TextClassifier)


def test_corrupt_run_folders_give_clean_errors(text_clf, tmp_path):
    run = text_clf.save(tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"\x80\x04\x95 pickled? no")
    with pytest.raises(RunFolderError, match=r"model\.safetensors' is corrupt"):
        TextClassifier.load(run)
    text_clf.save(run)
    (run / "vocab.json").unlink()
    with pytest.raises(RunFolderError, match=r"vocab\.json' is missing"):
        TextClassifier.load(run)
    text_clf.save(run)
    with pytest.raises(RunFolderError, match="holds a 'text-classifier' run"):
        Forecaster.load(run)


def test_unknown_words_are_flagged_and_still_classified(text_clf):
    texts = ["zzz qqq xxyyzz", "", "the film was great"]
    unknown = text_clf.unknown_fraction(texts)
    assert unknown[0] == 1.0 and unknown[1] == 1.0 and unknown[2] == 0.0
    assert len(text_clf.predict(texts)) == 3


def test_integer_labels_keep_their_type(tmp_path):
    X, y = sentiment_texts(60)
    y_int = np.array([1 if v == "pos" else 0 for v in y])
    clf = TextClassifier(**{**TINY_TEXT, "epochs": 1}).fit(X, y_int)
    assert clf.classes_.dtype.kind == "i"
    again = TextClassifier.load(clf.save(tmp_path / "run"))
    assert again.classes_.dtype.kind == "i" and set(again.predict(X)) <= {0, 1}


def test_bad_text_input_is_explained():
    with pytest.raises(DataError, match="single class"):
        TextClassifier(**TINY_TEXT).fit(["a b", "c d"], ["x", "x"])
    with pytest.raises(DataError, match="single str"):
        TextClassifier(**TINY_TEXT).fit("a b", ["x"])
    with pytest.raises(DataError, match="2 texts but y has 3"):
        TextClassifier(**TINY_TEXT).fit(["a", "b"], ["x", "y", "x"])


def test_estimator_resume_equals_an_uninterrupted_run(tmp_path):
    X, y = sentiment_texts(80)
    params = {**TINY_TEXT, "epochs": 3, "validation_fraction": 0.25, "n_models": 2}
    whole = TextClassifier(**params).fit(X, y, run_dir=tmp_path / "whole")

    class Stop(Callback):
        calls = 0

        def on_epoch_end(self, epoch, logs):
            Stop.calls += 1
            if Stop.calls == 4:  # member 0 done, member 1 after its first epoch
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TextClassifier(**params).fit(X, y, run_dir=tmp_path / "run", callbacks=[Stop()])
    assert not (tmp_path / "run" / "model.safetensors").exists()
    resumed = TextClassifier(**params).fit(X, y, run_dir=tmp_path / "run", resume=True)
    assert state_equal(resumed.model_, whole.model_)
    a = (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == a
    with pytest.raises(RunFolderError, match="differ"):
        TextClassifier(**{**params, "hidden_size": 8}).fit(
            X, y, run_dir=tmp_path / "run", resume=True
        )


# ----------------------------------------------------------------- series


def test_series_classifier_learns_arrays_and_ragged_lists(tmp_path):
    X, y = shape_series(80)
    clf = SeriesClassifier(**TINY_SERIES).fit(X[:60], y[:60])
    assert clf.score(X[60:], y[60:]) >= 0.9
    ragged = [x[: 12 + i % 5] for i, x in enumerate(X[60:])]  # cut the ends: still "early"
    assert clf.predict(ragged).shape == (20,)
    again = SeriesClassifier.load(clf.save(tmp_path / "run"))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_series_classifier_ensemble_and_cross_val_score():
    X, y = shape_series(60)
    pipe = Pipeline(
        [
            ("flip", FunctionTransformer(lambda a: -a)),
            ("clf", SeriesClassifier(**{**TINY_SERIES, "n_models": 2, "epochs": 15})),
        ]
    )
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.mean() >= 0.8


def test_series_with_nan_is_refused_with_its_place():
    X, y = shape_series(10)
    X[3, 5, 0] = np.nan
    with pytest.raises(DataError, match=r"X\[3\] has a missing or infinite value at step 5"):
        SeriesClassifier(**TINY_SERIES).fit(X, y)


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


def test_series_with_mixed_channels_is_refused():
    with pytest.raises(DataError, match="channels"):
        SeriesClassifier(**TINY_SERIES).fit([np.zeros((5, 1)), np.zeros((5, 2))], ["a", "b"])


def test_italy_power_demand_subset_learns(tmp_path):
    from gatelab.data import read_ts

    train = read_ts(shared_data("timeseries", "ucr", "ItalyPowerDemand_TRAIN.ts"))
    test = read_ts(shared_data("timeseries", "ucr", "ItalyPowerDemand_TEST.ts"))
    clf = SeriesClassifier(**{**TINY_SERIES, "epochs": 30}).fit(train.series, train.labels)
    assert clf.score(test.series[:300], test.labels[:300]) >= 0.8


# ----------------------------------------------------------------- forecaster


@pytest.fixture(scope="module")
def forecaster():
    return Forecaster(**TINY_FORECAST).fit(sine_series(160))


def test_forecaster_predicts_the_next_values(forecaster):
    series = sine_series(200)
    truth = series[160]
    assert abs(forecaster.predict()[0] - truth) < 2.0  # amplitude 10, noise 0.2
    X = np.lib.stride_tricks.sliding_window_view(series[:-1], 12)[-30:]
    y = series[-30:]
    pred = forecaster.predict(X)
    assert pred.shape == (30,)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 2.0
    assert forecaster.score(X, y) > 0.9
    np.testing.assert_allclose(forecaster.predict(series[:170]), forecaster.predict(X[[0]]))


def _persistence_rmse(windows: np.ndarray, truth: np.ndarray) -> float:
    """The naive forecast: every future value equals the window's last one."""
    return float(np.sqrt(np.mean((windows[:, -1:] - truth) ** 2)))


def test_forecaster_multi_step_beats_persistence_on_held_out_steps(tmp_path):
    s = sine_series(220)  # fit on the first 160 values, forecast the next 60
    f = Forecaster(**{**TINY_FORECAST, "horizon": 3}).fit(s[:160])
    view = np.lib.stride_tricks.sliding_window_view
    X, Y = view(s[148:-3], 12), view(s[160:], 3)  # (N, 12) -> the next 3 values
    pred = f.predict(X).reshape(Y.shape)
    rmse = float(np.sqrt(np.mean((pred - Y) ** 2)))
    naive = _persistence_rmse(X, Y)  # 7.5 on this sine (amplitude 10, period 12); rmse 0.26
    assert rmse < 0.1 * naive, (rmse, naive)
    np.testing.assert_allclose(f.predict(), f.predict(s[148:160][None]).ravel())
    again = Forecaster.load(f.save(tmp_path / "run"))
    np.testing.assert_array_equal(again.predict(), f.predict())


def test_forecaster_fit_on_windows_beats_persistence():
    s = sine_series(220)
    X = np.lib.stride_tricks.sliding_window_view(s[:160], 12)[:-1]
    g = Forecaster(**TINY_FORECAST).fit(X, s[12:160])
    held_out = np.lib.stride_tricks.sliding_window_view(s[148:-1], 12)
    pred, truth = g.predict(held_out), s[160:]
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    assert rmse < 0.1 * _persistence_rmse(held_out, truth[:, None]), rmse  # 0.26 vs 3.7


def test_forecaster_in_cross_val_score():
    s = sine_series(120)
    X = np.lib.stride_tricks.sliding_window_view(s, 12)[:-1]
    scores = cross_val_score(Forecaster(**{**TINY_FORECAST, "epochs": 10}), X, s[12:], cv=2)
    # sklearn's R^2 of each fold, refitted by hand: the estimator scores what it predicts.
    from sklearn.metrics import r2_score

    y, half = s[12:], len(X) // 2  # fold 0 (KFold, no shuffle): test on the first half
    f = Forecaster(**{**TINY_FORECAST, "epochs": 10}).fit(X[half:], y[half:])
    assert scores[0] == pytest.approx(r2_score(y[:half], f.predict(X[:half])), abs=1e-6)
    assert scores.min() > 0.5, scores  # it does learn the sine in 10 epochs


def test_forecaster_input_errors(forecaster):
    with pytest.raises(DataError, match="index"):
        Forecaster(**TINY_FORECAST).fit(np.array([1.0, np.nan] * 20))
    with pytest.raises(DataError, match="needs the last history=12"):
        forecaster.predict(np.arange(5.0))
    with pytest.raises(ValueError, match="highway"):
        Forecaster(history=4, highway=6).fit(sine_series(40))


def test_lstm_dropout_without_a_second_layer_is_refused():
    # It acts between stacked layers; with one layer it used to be dropped silently.
    X, y = shape_series(20)
    with pytest.raises(ValueError, match=r"lstm_dropout=0.3 acts between stacked LSTM layers"):
        SeriesClassifier(**TINY_SERIES, lstm_dropout=0.3).fit(X, y)
    SeriesClassifier(**{**TINY_SERIES, "epochs": 1}, lstm_dropout=0.3, num_layers=2).fit(X, y)


def test_nb_features_are_naive_bayes_log_count_ratios(tmp_path):
    X = ["good good film", "good plot", "bad film", "bad bad plot", "film"]
    y = ["pos", "pos", "neg", "neg", "neg"]
    clf = TextClassifier(**{**TINY_TEXT, "epochs": 1}, nb_features=True).fit(X, y)
    V = len(clf.vocab_)
    table = clf.model_.token_feature_table
    assert table.shape == (6 * V, 1)  # all texts' ratios, then 5 out-of-fold tables
    assert clf.model_config_.token_feature_sets == 6
    # texts holding the word: pos (2 texts), neg (3 texts); add-one smoothing over the vocab
    docs = {"good": (2, 0), "bad": (0, 2), "film": (1, 2), "plot": (1, 1)}
    p = {w: 1 + d[0] for w, d in docs.items()}
    q = {w: 1 + d[1] for w, d in docs.items()}
    P, Q = sum(p.values()), sum(q.values())
    for w in docs:
        want = np.log((p[w] / P) / (q[w] / Q))
        assert table[clf.vocab_.encode([w])[0], 0].item() == pytest.approx(want, abs=1e-6)
    assert table[0, 0] == 0 and table[1, 0] == 0  # padding and <unk>
    again = TextClassifier.load(clf.save(tmp_path / "run"))
    assert torch.equal(again.model_.token_feature_table, table)
    assert again.predict(X).tolist() == clf.predict(X).tolist()


def test_nb_out_of_fold_tables_leave_each_text_out():
    import gatelab.estimators.text as estimators

    X, y = sentiment_texts(60)
    clf = TextClassifier(**{**TINY_TEXT, "epochs": 1}, nb_features=True, nb_folds=0).fit(X, y)
    data = clf._tensor_data(X, torch.as_tensor(np.searchsorted(clf.classes_, y)))
    original = data.inputs.clone()
    V, K = len(clf.vocab_), 3
    table = estimators._nb_tables(data, 2, V, K)
    assert table.shape == (4 * V, 1)
    full = estimators._nb_log_count_ratios(TensorData(original, data.lengths, data.targets), 2, V)
    assert torch.equal(table[:V], full)
    # every text moved whole to one block k + 1 (padding stays 0) ...
    block = (data.inputs // V).masked_fill(original == 0, -1)
    fold = block.max(dim=1).values - 1  # (N,)
    assert ((block == fold[:, None] + 1) | (original == 0)).all()
    assert torch.equal(data.inputs % V, original)
    assert sorted(fold.unique().tolist()) == [0, 1, 2]
    # ... whose table was computed without that fold's texts
    for k in range(K):
        keep = fold != k
        part = TensorData(original[keep], data.lengths[keep], data.targets[keep])
        want = estimators._nb_log_count_ratios(part, 2, V)
        assert torch.equal(table[(k + 1) * V : (k + 2) * V], want)
        assert not torch.equal(want, full)
    # the model reads word w's embedding and block k's ratio for id (k + 1) * V + w
    model = clf.model_
    model.token_feature_table = table
    model.config = dataclasses.replace(model.config, token_feature_sets=K + 1)
    x = data.inputs[:4]
    got = model.lstm_input(x)
    E = model.config.embedding_dim
    assert torch.equal(got[..., :E], model.embedding(original[:4]))
    assert torch.equal(got[..., E:], table[x])
    with pytest.raises(ValueError, match="nb_folds=-1"):
        TextClassifier(**{**TINY_TEXT, "epochs": 1}, nb_folds=-1).fit(X, y)


def test_nb_features_auto_follows_the_data_size(monkeypatch):
    import gatelab.estimators.text as estimators

    X, y = sentiment_texts(40)
    small = TextClassifier(**{**TINY_TEXT, "epochs": 1}).fit(X, y)
    assert small.model_config_.token_features == 1
    monkeypatch.setattr(estimators, "NB_AUTO_MAX_TEXTS", 10)
    large = TextClassifier(**{**TINY_TEXT, "epochs": 1}).fit(X, y)
    assert large.model_config_.token_features == 0
    with pytest.raises(ValueError, match="nb_features='yes'"):
        TextClassifier(**{**TINY_TEXT, "epochs": 1}, nb_features="yes").fit(X, y)


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
