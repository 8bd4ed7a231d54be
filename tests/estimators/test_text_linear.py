"""The TextClassifier's linear part (gatelab.models.bag, gatelab.estimators.text_linear):
the torch forward against scikit-learn, the mix weight chosen on validation data, the
networks left as they were, save / load."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression

import gatelab.estimators.text_linear as text_linear
from gatelab.estimators import TextClassifier
from gatelab.models.bag import WithLinear, ngram_columns
from gatelab.train.fit import TensorData, predict_batches
from tests.helpers import sentiment_texts

ATOL = 1e-5  # float32 buffers against scikit-learn's float64

TINY = dict(
    embedding_dim=8, hidden_size=8, epochs=2, batch_size=16, lr=1e-2, n_models=1, min_freq=1,
    validation_fraction=0.25,
)  # fmt: skip


def random_ids(n: int, V: int, seed: int, shift: int = 0) -> TensorData:
    """``n`` texts of 1-12 ids in ``[1, V)`` with repeats, padded; ``shift`` moves every
    other text's ids to a naive-Bayes fold table (``+ shift * V``)."""
    g = np.random.default_rng(seed)
    seqs = [g.integers(1, V, g.integers(1, 13)) for _ in range(n)]
    T = max(len(s) for s in seqs)
    ids = torch.zeros(n, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s) + (shift * V if i % 2 and shift else 0)
    lengths = torch.tensor([len(s) for s in seqs])
    return TensorData(ids, lengths, torch.zeros(n, dtype=torch.long)), seqs


def oracle_counts(seqs, V: int, buckets: int):
    """Uni+bigram counts written out by hand: column ``w`` and ``V + (a * 1000003 + b) %
    buckets``."""
    rows, cols, vals = [], [], []
    for i, s in enumerate(seqs):
        s = [int(w) for w in s]
        count = Counter(s)
        count.update(V + (a * 1_000_003 + b) % buckets for a, b in itertools.pairwise(s))
        rows += [i] * len(count)
        cols += list(count)
        vals += list(count.values())
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(seqs), V + buckets), dtype=float)


def test_ngram_columns_by_hand():
    ids = torch.tensor([[3, 4, 3, 0], [2 + 10, 5, 0, 0]])  # 12 = word 2 of fold table 1
    cols = ngram_columns(ids, torch.tensor([3, 2]), vocab_size=10, buckets=7)
    h = lambda a, b: 10 + (a * 1_000_003 + b) % 7  # noqa: E731
    expected = [[3, 4, 3, -1, h(3, 4), h(4, 3), -1], [2, 5, -1, -1, h(2, 5), -1, -1]]
    assert cols.tolist() == expected


def as_lists(data: TensorData) -> list[list[int]]:
    return [row[:n].tolist() for row, n in zip(data.inputs, data.lengths, strict=True)]


@pytest.mark.parametrize("budget", [7, 1 << 22])
def test_count_matrix_is_the_hand_count_in_any_chunks(monkeypatch, budget):
    """Counted in chunks of like length (each padded to its longest): the hand count, and
    the very matrix of one padded ``(N, longest)`` table (the count before the chunks)."""
    monkeypatch.setattr(text_linear, "PAD_BUDGET", budget)
    data, seqs = random_ids(40, 30, seed=5, shift=2)  # fold-table ids read mod V
    lists = as_lists(data)
    n_chunks = len(text_linear.length_chunks(data.lengths, 1))
    assert n_chunks > 3 if budget == 7 else n_chunks == 1
    got = text_linear.count_matrix(lists, 30, buckets=11)
    np.testing.assert_array_equal(got.toarray(), oracle_counts(seqs, 30, 11).toarray())
    cols = ngram_columns(data.inputs, data.lengths, 30, 11)  # (N, 2T - 1): one table
    keep = cols >= 0
    rows = torch.arange(len(data))[:, None].expand_as(cols)[keep].numpy()
    one = sparse.csr_matrix((np.ones(len(rows)), (rows, cols[keep].numpy())), shape=got.shape)
    one.sum_duplicates()
    for a, b in [(got.indptr, one.indptr), (got.indices, one.indices), (got.data, one.data)]:
        np.testing.assert_array_equal(a, b)


def test_length_chunks_hold_whole_steps_within_the_budget():
    lengths = torch.tensor([5, 1, 9, 2, 2, 100, 3, 1, 4, 7])
    chunks = text_linear.length_chunks(lengths, 2, budget=12)
    order = torch.cat(chunks)
    assert torch.equal(order, torch.argsort(lengths, stable=True))
    # sorted 1 1 2 2 | 3 4 | 5 7 | 9 100: a chunk grows by 2 while size x longest <= 12
    sizes = [(len(c), int(lengths[c].max())) for c in chunks]
    assert sizes == [(4, 2), (2, 4), (2, 7), (2, 100)]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_forward_is_sklearns_decision_function(n_classes):
    V = 30
    train, seqs = random_ids(120, V, seed=0, shift=2)  # ids of the fold tables read mod V
    train.targets[:] = torch.as_tensor(np.random.default_rng(1).integers(0, n_classes, 120))
    test, test_seqs = random_ids(40, V, seed=2)
    y = train.targets.numpy()
    module, C = text_linear.fit_linear(as_lists(train), y, None, V, n_classes, C=10.0)
    buckets = module.buckets
    tfidf = TfidfTransformer(sublinear_tf=True)
    X = tfidf.fit_transform(oracle_counts([s % V for s in seqs], V, buckets))
    lr = LogisticRegression(C=10.0, max_iter=1000).fit(X, train.targets.numpy())
    Xt = tfidf.transform(oracle_counts(test_seqs, V, buckets))
    with torch.no_grad():
        got = module.decision(test.inputs, test.lengths).double().numpy()
        proba = module(test.inputs, test.lengths).softmax(-1).double().numpy()
    np.testing.assert_allclose(got, lr.decision_function(Xt), atol=ATOL, rtol=0)
    np.testing.assert_allclose(proba, lr.predict_proba(Xt), atol=ATOL, rtol=0)
    assert C == 10.0


def test_weight_by_validation_log_loss_ties_to_the_smaller():
    y = np.array([0, 1, 1])
    p_net = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.3, 0.7]])
    p_lin = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    w, losses = text_linear.choose_weight(p_net, p_lin, y)
    for v, loss in losses.items():
        p = (1 - v) * p_net.double().numpy() + v * p_lin.double().numpy()
        assert loss == pytest.approx(-np.log(p[[0, 1, 2], y]).mean(), abs=1e-12)
    assert w == 1.0 and losses[1.0] == min(losses.values())
    assert text_linear.choose_weight(p_net, p_net, y)[0] == 0.0  # all equal: the smallest


@contextlib.contextmanager
def mix_weight(est, w: float):
    """Inside the block the mix ``est.model_`` (fitted with ``w = 1``) has weight ``w``."""
    with torch.no_grad():
        est.model_.weight.fill_(w)
    try:
        yield est
    finally:
        with torch.no_grad():
            est.model_.weight.fill_(1.0)


@pytest.fixture(scope="module")
def fitted():
    """A network that cannot learn in 2 epochs at lr 1e-9, beside a linear part that can:
    the mix must pick the linear part; and the same fit with ``linear=False``."""
    X, y = sentiment_texts(160)
    kw = {**TINY, "lr": 1e-9}
    return X, y, TextClassifier(**kw).fit(X, y), TextClassifier(**kw, linear=False).fit(X, y)


def test_linear_part_chosen_where_it_is_better(fitted):
    _, _, mixed, alone = fitted
    assert mixed.linear_weight_ == 1.0 and mixed.linear_C_ in text_linear.LINEAR_C
    assert isinstance(mixed.model_, WithLinear)
    Xt, yt = sentiment_texts(80, seed=3)
    assert mixed.score(Xt, yt) >= 0.95 and alone.score(Xt, yt) < 0.75
    data = mixed._inputs(Xt)  # w = 1: exactly the linear part's probabilities
    lin = predict_batches(mixed.model_.linear, data).softmax(-1).numpy()
    np.testing.assert_allclose(mixed.predict_proba(Xt), lin, atol=1e-6)
    # the networks are trained exactly as without the linear part
    a, b = mixed.model_.network.state_dict(), alone.model_.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert alone.linear_weight_ == 0.0 and alone.linear_C_ is None


def test_weight_zero_keeps_the_network_alone(monkeypatch):
    X, y = sentiment_texts(120)
    monkeypatch.setattr(text_linear, "MIX_WEIGHTS", (0.0,))
    est = TextClassifier(**TINY).fit(X, y)
    off = TextClassifier(**TINY, linear=False).fit(X, y)
    assert est.linear_weight_ == 0.0 and not isinstance(est.model_, WithLinear)
    Xt, _ = sentiment_texts(40, seed=4)
    np.testing.assert_array_equal(est.predict_proba(Xt), off.predict_proba(Xt))


def test_mixed_model_save_load_round_trip(fitted, tmp_path):
    _, _, mixed, _ = fitted
    mixed.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "linear.json").read_text())
    assert record["weight"] == 1.0 and record["C"] == mixed.linear_C_
    again = TextClassifier.load(tmp_path / "run")
    Xt, _ = sentiment_texts(40, seed=5)
    np.testing.assert_array_equal(again.predict_proba(Xt), mixed.predict_proba(Xt))
    assert again.linear_weight_ == 1.0 and again.linear_C_ == mixed.linear_C_


def test_resuming_a_finished_mixed_run_gives_the_same_model(fitted, tmp_path):
    """A run folder written with the linear part resumes (its ``params.linear`` is checked
    like every other setting) and, finished, gives the same mix again."""
    X, y, mixed, _ = fitted
    kw = {**TINY, "lr": 1e-9}
    first = TextClassifier(**kw).fit(X, y, run_dir=tmp_path / "run")
    again = TextClassifier(**kw).fit(X, y, run_dir=tmp_path / "run", resume=True)
    assert again.linear_weight_ == first.linear_weight_ == mixed.linear_weight_ == 1.0
    Xt, _ = sentiment_texts(40, seed=6)
    np.testing.assert_allclose(again.predict_proba(Xt), first.predict_proba(Xt), atol=1e-7)
    with pytest.raises(ValueError, match=r"params\.linear"):
        TextClassifier(**kw, linear=False).fit(X, y, run_dir=tmp_path / "run", resume=True)


def test_three_classes_mix_after_the_logit_adjustment():
    X, y = sentiment_texts(150)
    y = [lab if i % 3 else "mid" for i, lab in enumerate(y)]
    est = TextClassifier(**{**TINY, "lr": 1e-9}).fit(X, y)
    assert est.linear_weight_ > 0 and est.prior_adjustment_ in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert est.predict_proba(X[:5]).shape == (5, 3)


def test_no_validation_data_means_the_network_alone():
    X, y = sentiment_texts(60)
    est = TextClassifier(**{**TINY, "validation_fraction": 0.0}).fit(X, y)
    assert est.linear_weight_ == 0.0 and est.linear_C_ is None
    assert not isinstance(est.model_, WithLinear)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_bad_linear_values_are_refused(bad):
    X, y = sentiment_texts(20)
    with pytest.raises(ValueError, match=r"linear=.*expected 'auto', True or False"):
        TextClassifier(**TINY, linear=bad).fit(X, y)


def test_auto_leaves_large_training_sets_to_the_network(monkeypatch):
    import gatelab.estimators.text as text

    X, y = sentiment_texts(80)
    monkeypatch.setattr(text, "LINEAR_AUTO_MAX_TEXTS", 60)  # 60 training texts: too many
    est = TextClassifier(**{**TINY, "lr": 1e-9}).fit(X, y)
    assert est.linear_weight_ == 0.0 and est.linear_C_ is None
    forced = TextClassifier(**{**TINY, "lr": 1e-9}, linear=True).fit(X, y)
    assert forced.linear_weight_ == 1.0 and isinstance(forced.model_, WithLinear)


@pytest.mark.parametrize("w", [1.0, 0.5])
def test_mixed_model_exports_to_onnx(fitted, tmp_path, w):
    ort = pytest.importorskip("onnxruntime")
    from gatelab.interop import export_run

    _, _, mixed, _ = fitted
    with mix_weight(mixed, w):  # 0.5: the network's part of the graph too
        mixed.save(tmp_path / "run")
    again = TextClassifier.load(tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "text.onnx")
    texts = [*sentiment_texts(6, seed=6)[0], "great", "good good good great film", "zzz"]
    data = again._inputs(texts)
    session = ort.InferenceSession(str(tmp_path / "text.onnx"))
    feed = {"ids": data.inputs.numpy(), "lengths": data.lengths.numpy()}
    got = session.run(None, feed)[0]
    np.testing.assert_allclose(got, again.predict_proba(texts), atol=ATOL, rtol=0)


def test_linear_part_reads_the_words_the_network_drops(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from gatelab.interop import export_run

    X, y = sentiment_texts(160)
    rare = [f"rare{k}" for k in range(12)]  # each in one training text: below min_freq=2
    X = [f"{t} {rare[i]}" if i < 12 else t for i, t in enumerate(X)]
    est = TextClassifier(**{**TINY, "lr": 1e-9, "min_freq": 2}).fit(X, y)
    n = est.model_.network_vocab_size
    held = set(rare) & set(est.linear_words_)  # those not held out for validation
    assert est.linear_weight_ > 0 and len(held) >= 6
    assert est.vocab_.tokens[n:] == est.linear_words_ and n == est.model_config_.vocab_size
    texts = [f"{X[i]}" for i in range(12)] + ["zzz good", "bad"]
    with torch.no_grad():
        est.model_.weight.fill_(0.5)  # both parts count
    est.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "vocab.json").read_text())["tokens"]
    assert saved == est.vocab_.tokens[:n]  # vocab.json: the network's ids
    again = TextClassifier.load(tmp_path / "run")
    assert again.vocab_ == est.vocab_
    np.testing.assert_array_equal(again.predict_proba(texts), est.predict_proba(texts))
    data = est._inputs(texts)
    assert (data.inputs >= n).any()  # the rare words reach the model with ids of their own
    plain = est.model_.network(torch.where(data.inputs < n, data.inputs, 1), data.lengths)
    lin = est.model_.linear(data.inputs, data.lengths)
    want = (0.5 * plain.softmax(-1) + 0.5 * lin.softmax(-1)).detach().numpy()
    np.testing.assert_allclose(est.predict_proba(texts), want, atol=1e-6)
    export_run(tmp_path / "run", tmp_path / "text.onnx")
    feed = {"ids": data.inputs.numpy(), "lengths": data.lengths.numpy()}
    got = ort.InferenceSession(str(tmp_path / "text.onnx")).run(None, feed)[0]
    np.testing.assert_allclose(got, est.predict_proba(texts), atol=ATOL, rtol=0)


def test_explain_a_mixed_run_shows_its_network(fitted, tmp_path):
    from gatelab.insight.explain import explain_run

    _, _, mixed, _ = fitted
    mixed.save(tmp_path / "run")
    data = explain_run(tmp_path / "run", text="a great film zzz")
    assert data["tokens"] == ["a", "great", "film", "zzz"]
    assert "its probabilities count 0 of the mix" in data["notes"][0]


# ------------------------------------------------- long texts: the network's cut only

CUT = 8  # max_len of the long-text tests


def long_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``CUT`` filler words drawn alike for both classes, then the class word ("alpha" or
    "omega") among 1-3 more fillers: the class shows only after token ``CUT``."""
    g = np.random.default_rng(seed)
    filler = ["the", "a", "film", "plot", "was", "and", "it", "is", "of", "so"]
    texts, labels = [], []
    for _ in range(n):
        k = int(g.integers(2))
        tail = list(g.choice(filler, g.integers(1, 4)))
        tail.insert(int(g.integers(len(tail) + 1)), ("alpha", "omega")[k])
        texts.append(" ".join([*g.choice(filler, CUT), *tail]))
        labels.append(("neg", "pos")[k])
    return texts, labels


@pytest.fixture(scope="module")
def long_fit():
    """A network that cannot learn (lr 1e-9) reading the first ``CUT`` tokens, beside a
    linear part that reads the whole texts."""
    X, y = long_texts(160)
    return X, y, TextClassifier(**{**TINY, "lr": 1e-9, "max_len": CUT}, linear=True).fit(X, y)


def ids_of(est, texts, cut=None) -> list[list[int]]:
    return [est.vocab_.encode(est.tokenizer_(t))[:cut] for t in texts]


def test_linear_part_reads_past_max_len(long_fit):
    """Fitted on the whole texts: equal to scikit-learn's fit on hand-counted whole
    texts, right on new ones; the same part reading the cut texts is at chance."""
    X, y, est = long_fit
    assert est.linear_weight_ == 1.0 and est.model_.max_len == CUT
    y_ids = np.searchsorted(est.classes_, y)
    train_idx, _ = est._split(len(X), y_ids)
    V, buckets = len(est.vocab_), est.model_.linear.buckets
    assert V == est.model_.linear.vocab_size
    tfidf = TfidfTransformer(sublinear_tf=True)
    counts = oracle_counts(ids_of(est, [X[i] for i in train_idx]), V, buckets)
    lr = LogisticRegression(C=est.linear_C_, max_iter=1000).fit(
        tfidf.fit_transform(counts), y_ids[train_idx]
    )
    Xt, yt = long_texts(100, seed=3)
    want = lr.predict_proba(tfidf.transform(oracle_counts(ids_of(est, Xt), V, buckets)))
    np.testing.assert_allclose(est.predict_proba(Xt), want, atol=ATOL, rtol=0)
    assert est.score(Xt, yt) >= 0.95
    cut = est._tensor_data(Xt, None)  # the first CUT tokens, as the linear part read before
    assert cut.inputs.shape[1] == CUT and est._inputs(Xt).inputs.shape[1] > CUT
    on_cut = predict_batches(est.model_.linear, cut).argmax(-1).numpy()
    assert (est.classes_[on_cut] == np.asarray(yt)).mean() < 0.75


def mix_by_hand(est, texts, cut_linear: bool) -> np.ndarray:
    """``(1 - w) p_network(first CUT ids) + w p_linear(whole ids, or the first CUT)``."""
    w, n = float(est.model_.weight), est.model_.network_vocab_size
    whole = est._tensor_data(texts, None, whole=True)
    cut = est._tensor_data(texts, None)
    net = predict_batches(est.model_.network, TensorData(
        torch.where(cut.inputs < n, cut.inputs, 1), cut.lengths, cut.targets
    )).softmax(-1)  # fmt: skip
    lin = predict_batches(est.model_.linear, cut if cut_linear else whole).softmax(-1)
    return ((1 - w) * net + w * lin).numpy()


def test_half_mix_network_reads_the_cut_linear_part_the_whole(long_fit, tmp_path):
    _, _, est = long_fit
    Xt, _ = long_texts(30, seed=4)
    with mix_weight(est, 0.5):  # both parts count
        np.testing.assert_allclose(est.predict_proba(Xt), mix_by_hand(est, Xt, False), atol=1e-6)
        est.save(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "linear.json").read_text())
    assert record["whole_texts"] is True
    est.set_params(max_len=2 * CUT)  # a parameter changed after fit: the mix is the same
    try:
        est.save(tmp_path / "changed")
    finally:
        est.set_params(max_len=CUT)
    assert json.loads((tmp_path / "changed" / "linear.json").read_text())["whole_texts"] is True
    again = TextClassifier.load(tmp_path / "run")
    assert again.model_.max_len == CUT
    np.testing.assert_allclose(again.predict_proba(Xt), mix_by_hand(again, Xt, False), atol=1e-6)
    # a folder saved before the linear part read whole texts (no record): it keeps cutting
    del record["whole_texts"]
    (tmp_path / "run" / "linear.json").write_text(json.dumps(record))
    old = TextClassifier.load(tmp_path / "run")
    assert old.model_.max_len is None and old._inputs(Xt).inputs.shape[1] == CUT
    np.testing.assert_allclose(old.predict_proba(Xt), mix_by_hand(old, Xt, True), atol=1e-6)
    old.save(tmp_path / "again")  # saved again, it still says so
    assert json.loads((tmp_path / "again" / "linear.json").read_text())["whole_texts"] is False
    assert TextClassifier.load(tmp_path / "again").model_.max_len is None


def test_texts_within_max_len_predict_bit_for_bit_as_before(fitted):
    """Texts no longer than ``max_len``: the same ids reach both parts, and the mix gives
    the very bits of the mix before the change (no cut inside, ids cut before)."""
    _, _, mixed, _ = fitted
    Xt, _ = sentiment_texts(60, seed=7)
    assert mixed.model_.max_len == 400 and max(len(t.split()) for t in Xt) <= 400
    before = WithLinear(
        mixed.model_.network, mixed.model_.linear, 0.5, mixed.model_.network_vocab_size
    )
    with mix_weight(mixed, 0.5):
        got = mixed.predict_proba(Xt)
    want = predict_batches(before, mixed._tensor_data(Xt, None)).softmax(-1).numpy()
    np.testing.assert_array_equal(got, want)


def test_long_text_mix_exports_to_onnx(long_fit, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from gatelab.interop import export_run

    _, _, est = long_fit
    with mix_weight(est, 0.5):
        est.save(tmp_path / "run")
    again = TextClassifier.load(tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "text.onnx")
    texts = [*long_texts(5, seed=8)[0], "alpha", "the film"]
    data = again._inputs(texts)
    feed = {"ids": data.inputs.numpy(), "lengths": data.lengths.numpy()}
    got = ort.InferenceSession(str(tmp_path / "text.onnx")).run(None, feed)[0]
    np.testing.assert_allclose(got, again.predict_proba(texts), atol=ATOL, rtol=0)


def test_explain_a_long_text_shows_the_networks_cut(long_fit, tmp_path):
    from gatelab.insight.explain import explain_run

    _, _, est = long_fit
    est.save(tmp_path / "run")
    text = long_texts(1, seed=9)[0][0]
    warned = []
    data = explain_run(tmp_path / "run", text=text, warn=warned.append)
    assert data["tokens"] == text.split()[:CUT]
    assert warned and f"more than the {CUT} the model saw in training" in warned[0]


# ------------------------------------- whole texts padded a chunk at a time, not N x longest


@pytest.mark.parametrize("w", [1.0, 0.5])
def test_predict_in_chunks_is_one_table_bit_for_bit(long_fit, monkeypatch, w):
    """Mixed lengths in several chunks (a budget of 60 ids, batches of 4): the outputs of
    ``predict_batches`` on one padded table of the whole texts, bit for bit."""
    _, _, est = long_fit
    g = np.random.default_rng(11)
    texts = [*long_texts(30, seed=11)[0], "alpha", "", "omega the", " ".join(["so"] * 40)]
    texts = [texts[i] for i in g.permutation(len(texts))]
    monkeypatch.setattr(text_linear, "PAD_BUDGET", 60)
    config = dataclasses.replace(est.train_config_, eval_batch_size=4)
    monkeypatch.setattr(est, "train_config_", config)
    seqs = est._token_ids(texts, whole=True)
    assert len(text_linear.length_chunks(torch.tensor([len(s) for s in seqs]), 4)) >= 4
    with mix_weight(est, w):  # 0.5: the network (cut at CUT) runs too
        want = predict_batches(est.model_, est._inputs(texts), 4)  # (N, longest) table
        assert torch.equal(text_linear.predict_ids(est.model_, seqs, 4), want)
        np.testing.assert_array_equal(est.predict_proba(texts), want.softmax(-1).numpy())
        assert (est.predict(texts) == est.classes_[want.argmax(-1).numpy()]).all()


LONG = 200_000  # tokens of the long document


def test_one_long_document_needs_no_table_of_its_length(monkeypatch):
    """One 200,000-token text among 240 short ones, in fit and in predict: the linear part
    reads it whole (scikit-learn on the hand count of every token), and no padded table
    is larger than a chunk's budget or one batch of the longest text: the one-table way
    built (241, 200000) ids in fit (386 MB) and (61, 200000) in predict."""
    import gatelab.estimators.text as text_module

    shapes = []

    def recording(pad):
        def pad_and_record(seqs, *args, **kwargs):
            out = pad(seqs, *args, **kwargs)
            shapes.append(tuple(out[0].shape))
            return out

        return pad_and_record

    for module in (text_linear, text_module):
        monkeypatch.setattr(module, "pad_sequences", recording(module.pad_sequences))
    X, y = sentiment_texts(300)
    g = np.random.default_rng(0)
    words = sorted({w for t in X for w in t.split()})
    long_doc = lambda: " ".join(g.choice(words, LONG))  # noqa: E731
    X_train, y_train = [*X[:240], long_doc()], [*y[:240], "pos"]
    kw = {**TINY, "lr": 1e-9, "max_len": 20}
    est = TextClassifier(**kw, linear=True).fit(
        X_train, y_train, validation_data=(X[240:], y[240:])
    )
    assert est.linear_weight_ == 1.0 and (1, LONG) in shapes  # read whole, alone
    fit_shapes, shapes[:] = list(shapes), []
    monkeypatch.setattr(
        est, "train_config_", dataclasses.replace(est.train_config_, eval_batch_size=8)
    )
    Xt, yt = sentiment_texts(60, seed=3)
    Xt.insert(17, long_doc())
    got = est.predict_proba(Xt)
    bound = max(text_linear.PAD_BUDGET, 8 * LONG)
    assert max(r * c for r, c in fit_shapes + shapes) <= bound < 61 * LONG
    assert max(c for _, c in shapes) == LONG  # predicted from the whole text
    # the oracle: scikit-learn's TF-IDF + logistic regression on the hand count
    V, buckets = len(est.vocab_), est.model_.linear.buckets
    tfidf = TfidfTransformer(sublinear_tf=True)
    counts = oracle_counts(ids_of(est, X_train), V, buckets)
    assert counts[240].sum() == 2 * LONG - 1  # every token and bigram of the long one
    y_ids = np.searchsorted(est.classes_, y_train)
    lr = LogisticRegression(C=est.linear_C_, max_iter=1000).fit(tfidf.fit_transform(counts), y_ids)
    want = lr.predict_proba(tfidf.transform(oracle_counts(ids_of(est, Xt), V, buckets)))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert est.score(Xt[:17] + Xt[18:], yt) >= 0.95
