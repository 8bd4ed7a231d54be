"""Fitting the linear part of :class:`gatelab.TextClassifier` and choosing its weight in
the mix (:class:`gatelab.models.bag.WithLinear`), both on the validation data.

- The linear part: scikit-learn's ``LogisticRegression`` (lbfgs, L2) on the TF-IDF
  uni+bigram features of the training ids (:class:`gatelab.models.bag.BagOfNgrams`),
  ``C`` in :data:`LINEAR_C` chosen by the validation log-loss (a tie keeps the smaller);
  its idf, coefficients and intercept are copied into the module.
- The mix: ``w`` in :data:`MIX_WEIGHTS` chosen by the validation log-loss of
  ``(1 - w) p_network + w p_linear`` (a tie keeps the smaller ``w``).

Nothing here draws from torch's random generator (lbfgs is deterministic), and it runs
after the networks are trained, so the networks are the same with or without it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from gatelab.models.bag import BIGRAM_BUCKETS, BagOfNgrams, ngram_columns
from gatelab.train.fit import TensorData

__all__ = ["LINEAR_C", "MIX_WEIGHTS", "choose_weight", "count_matrix", "fit_linear", "log_loss"]

logger = logging.getLogger(__name__)

LINEAR_C = (1.0, 10.0, 100.0)
MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
COUNT_CHUNK = 1024  # texts per chunk of count_matrix


def count_matrix(data: TensorData, vocab_size: int, buckets: int = BIGRAM_BUCKETS):
    """``(N, V + buckets)`` scipy CSR matrix of uni+bigram counts of ``data``'s ids.

    Built :data:`COUNT_CHUNK` texts at a time, each chunk cut to its longest text, so that
    whole long documents (the linear part reads every token) need no ``(N, 2T)`` table.
    """
    from scipy import sparse

    r, c = [], []
    for start in range(0, len(data), COUNT_CHUNK):
        lengths = data.lengths[start : start + COUNT_CHUNK]
        ids = data.inputs[start : start + COUNT_CHUNK, : int(lengths.max())]  # (n, T)
        cols = ngram_columns(ids, lengths, vocab_size, buckets)  # (n, L)
        rows = torch.arange(start, start + len(ids))[:, None].expand_as(cols)
        keep = cols >= 0
        r.append(rows[keep].numpy())
        c.append(cols[keep].numpy())
    r, c = np.concatenate(r), np.concatenate(c)
    shape = (len(data), vocab_size + buckets)
    m = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=shape)  # duplicates summed
    m.sum_duplicates()
    return m


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y (N,)`` under ``proba (N, C)``."""
    return float(-np.log(np.maximum(proba[np.arange(len(y)), y], 1e-12)).mean())


def fit_linear(
    train: TensorData,
    valid: TensorData | None,
    vocab_size: int,
    n_classes: int,
    C: float | None = None,
) -> tuple[BagOfNgrams, float]:
    """The linear part fitted on ``train`` (ids and class ids ``0..n_classes-1``).

    ``C`` given: that one; else each of :data:`LINEAR_C`, the best validation log-loss
    on ``valid`` (required then). Returns ``(module, C)``.
    """
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    tfidf = TfidfTransformer(sublinear_tf=True)
    X = tfidf.fit_transform(count_matrix(train, vocab_size))
    y = train.targets.numpy()
    grid = LINEAR_C if C is None else (C,)
    Xv = (
        None if valid is None or C is not None else tfidf.transform(count_matrix(valid, vocab_size))
    )
    best = None
    for c in grid:
        lr = LogisticRegression(C=c, max_iter=1000).fit(X, y)
        loss = 0.0 if Xv is None else log_loss(lr.predict_proba(Xv), valid.targets.numpy())
        logger.info("linear part C=%g: validation log-loss %.4f", c, loss)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, c, lr)
    _, c, lr = best
    module = BagOfNgrams(vocab_size, 1 if n_classes == 2 else n_classes)
    with torch.no_grad():
        module.idf.copy_(torch.as_tensor(tfidf.idf_))
        module.coef.copy_(torch.as_tensor(lr.coef_.T))
        module.intercept.copy_(torch.as_tensor(lr.intercept_))
    return module, c


def choose_weight(p_network: Tensor, p_linear: Tensor, y: np.ndarray) -> tuple[float, dict]:
    """``w`` in :data:`MIX_WEIGHTS` with the lowest log-loss of ``(1 - w) p_network + w
    p_linear`` (``(N, C)`` probabilities) on labels ``y``; a tie keeps the smaller.
    Returns ``(w, {w: log-loss})``."""
    pn, pl = p_network.double().numpy(), p_linear.double().numpy()
    losses = {w: log_loss((1 - w) * pn + w * pl, y) for w in MIX_WEIGHTS}
    best = MIX_WEIGHTS[0]
    for w in MIX_WEIGHTS[1:]:
        if losses[w] < losses[best] - 1e-12:
            best = w
    return best, losses
