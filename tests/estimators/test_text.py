"""gatelab.estimators.text: TextClassifier, its save / load, naive-Bayes features and
logit adjustment."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import gatelab
from gatelab.errors import DataError
from gatelab.estimators import Forecaster, TextClassifier, load
from gatelab.train.fit import TensorData
from gatelab.train.runs import RunFolderError
from tests.helpers import (
    sentiment_texts,
)

TINY_TEXT = dict(
    embedding_dim=16, hidden_size=16, epochs=6, batch_size=16, lr=1e-2, word_dropout=0.0,
    embedding_dropout=0.0, validation_fraction=0.0, n_models=1, min_freq=1,
)  # fmt: skip


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
        "config.json", "labels.json", "linear.json", "metrics.json", "model.safetensors",
        "tokenizer.json", "vocab.json",
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


def test_logit_adjustment_for_more_than_two_classes():
    import copy

    import torch

    from gatelab.estimators import TextClassifier
    from gatelab.train.metrics import classification_metrics

    rng = np.random.default_rng(0)
    words = {"a": ["good", "great"], "b": ["bad", "awful"], "c": ["odd", "plain"]}
    labels = list(rng.choice(["a", "a", "a", "b", "c"], size=150))
    texts = [f"the {rng.choice(words[y])} film {rng.choice(['x', 'y'])}" for y in labels]
    tiny = dict(
        embedding_dim=8, hidden_size=8, epochs=2, n_models=2, nb_features=False, linear=False
    )  # fmt: skip
    clf = TextClassifier(**tiny).fit(
        texts[:120], labels[:120], validation_data=(texts[120:], labels[120:])
    )
    assert clf.prior_adjustment_ in (0.0, 0.25, 0.5, 0.75, 1.0)
    two = TextClassifier(**tiny).fit(texts[:120], ["a" if y == "a" else "z" for y in labels[:120]])
    assert two.prior_adjustment_ == 0.0  # binary tasks are left alone

    before = copy.deepcopy(clf)
    valid = clf._tensor_data(
        texts[120:], torch.as_tensor(np.searchsorted(clf.classes_, labels[120:]))
    )
    counts = np.array([90, 20, 10])
    tau = clf._adjust_for_priors(valid, counts)
    logits = torch.stack([m(valid.inputs, valid.lengths) for m in before.model_.members]).detach()
    log_prior = np.log(counts / counts.sum())
    want = (logits.numpy() - tau * log_prior).astype(np.float64)
    proba = np.exp(want - want.max(-1, keepdims=True))
    proba = (proba / proba.sum(-1, keepdims=True)).mean(0)
    np.testing.assert_allclose(clf.predict_proba(texts[120:]), proba, rtol=1e-4, atol=1e-6)
    got = classification_metrics(valid.targets.numpy(), proba.argmax(-1))
    assert clf.validation_metrics_ == got
