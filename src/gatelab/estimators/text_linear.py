"""Fitting the linear part of :class:`gatelab.TextClassifier` and choosing its weight in
the mix (:class:`gatelab.models.bag.WithLinear`), both on the validation data.

- The linear part: scikit-learn's ``LogisticRegression`` (lbfgs, L2) on the TF-IDF
  uni+bigram features of the training ids (:class:`gatelab.models.bag.BagOfNgrams`),
  ``C`` in :data:`LINEAR_C` chosen by the validation log-loss (a tie keeps the smaller);
  its idf, coefficients and intercept are copied into the module.
- The mix: ``w`` in :data:`MIX_WEIGHTS` chosen by the validation log-loss of
  ``(1 - w) p_network + w p_linear`` (a tie keeps the smaller ``w``).
- Whole texts in chunks: the linear part reads every token, so the counts and the
  predictions (:func:`predict_ids`, also the estimator's ``predict``) pad texts of like
  length together, a chunk at a time (:func:`length_chunks`), never all texts to the
  longest one.

Nothing here draws from torch's random generator (lbfgs is deterministic), and it runs
after the networks are trained, so the networks are the same with or without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gatelab.data import pad_sequences
from gatelab.models.bag import BIGRAM_BUCKETS, BagOfNgrams, ngram_columns
from gatelab.train.fit import TensorData, predict_batches

__all__ = [
    "LINEAR_C",
    "MIX_WEIGHTS",
    "choose_weight",
    "count_matrix",
    "fit_linear",
    "length_chunks",
    "log_loss",
    "predict_ids",
]

logger = logging.getLogger(__name__)

LINEAR_C = (1.0, 10.0, 100.0)
MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
PAD_BUDGET = 1 << 22  # ids in one padded chunk of whole texts (int64: 32 MiB), see below


def length_chunks(lengths: Tensor, step: int, budget: int | None = None) -> list[Tensor]:
    """The indices of the texts of ``lengths (N,)`` in stable length order, cut into chunks
    of whole steps of ``step`` texts: each chunk as many steps as keep its size times its
    longest text within ``budget`` ids (None: :data:`PAD_BUDGET`), at least one step.

    Padded to its own longest, no chunk needs more than ``max(budget, step x longest)``
    ids, where one ``(N, longest)`` table of whole texts may need far more (one long
    document among many short texts).
    """
    budget = PAD_BUDGET if budget is None else budget
    order = torch.argsort(lengths, stable=True)
    longest = lengths[order].tolist()
    chunks, start, n = [], 0, len(order)
    while start < n:
        end = min(start + step, n)
        while end < n:
            after = min(end + step, n)
            if (after - start) * longest[after - 1] > budget:
                break
            end = after
        chunks.append(order[start:end])
        start = end
    return chunks


def _padded(seqs: Sequence[Sequence[int]], index: Tensor) -> tuple[Tensor, Tensor]:
    """``(ids (n, T), lengths (n,))`` of the texts ``seqs[index]``, padded to their longest."""
    return pad_sequences([seqs[i] for i in index.tolist()])


def predict_ids(model: nn.Module, seqs: Sequence[Sequence[int]], batch_size: int) -> Tensor:
    """``model``'s outputs ``(N, out)`` on the ids of the texts ``seqs``, in their order.

    The texts in stable length order, in chunks of whole batches (:func:`length_chunks`),
    each padded to its own longest and run through ``predict_batches``: the very batches,
    so the very bits, of ``predict_batches`` on one ``(N, longest)`` table, without it.
    """
    lengths = torch.tensor([len(s) for s in seqs])
    outs, rows = [], []
    for index in length_chunks(lengths, batch_size):
        ids, lens = _padded(seqs, index)
        data = TensorData(ids, lens, torch.zeros(len(index), dtype=torch.long))
        outs.append(predict_batches(model, data, batch_size))  # in order already: the same batches
        rows.append(index)
    out = torch.cat(outs)
    result = torch.empty_like(out)
    result[torch.cat(rows)] = out
    return result


def count_matrix(seqs: Sequence[Sequence[int]], vocab_size: int, buckets: int = BIGRAM_BUCKETS):
    """``(N, V + buckets)`` scipy CSR matrix of uni+bigram counts of the ids of the texts
    ``seqs`` (whole: the linear part reads every token).

    Counted in chunks of texts of like length (:func:`length_chunks`), each padded to its
    own longest, so that a long document needs no ``(N, longest)`` table.
    """
    from scipy import sparse

    r, c = [], []
    for index in length_chunks(torch.tensor([len(s) for s in seqs]), 1):
        ids, lengths = _padded(seqs, index)  # (n, T)
        cols = ngram_columns(ids, lengths, vocab_size, buckets)  # (n, L)
        rows = index[:, None].expand_as(cols)
        keep = cols >= 0
        r.append(rows[keep].numpy())
        c.append(cols[keep].numpy())
    r, c = np.concatenate(r), np.concatenate(c)
    shape = (len(seqs), vocab_size + buckets)
    m = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=shape)  # duplicates summed
    m.sum_duplicates()
    return m


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y (N,)`` under ``proba (N, C)``."""
    return float(-np.log(np.maximum(proba[np.arange(len(y)), y], 1e-12)).mean())


def fit_linear(
    train: Sequence[Sequence[int]],
    y: np.ndarray,
    valid: tuple[Sequence[Sequence[int]], np.ndarray] | None,
    vocab_size: int,
    n_classes: int,
    C: float | None = None,
) -> tuple[BagOfNgrams, float]:
    """The linear part fitted on the ids of the texts ``train`` and their class ids ``y``
    (``0..n_classes-1``).

    ``C`` given: that one; else each of :data:`LINEAR_C`, the best validation log-loss
    on ``valid`` = ``(ids of texts, class ids)`` (required then). Returns ``(module, C)``.
    """
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    tfidf = TfidfTransformer(sublinear_tf=True)
    X = tfidf.fit_transform(count_matrix(train, vocab_size))
    grid = LINEAR_C if C is None else (C,)
    Xv = None
    if valid is not None and C is None:
        Xv = tfidf.transform(count_matrix(valid[0], vocab_size))
    best = None
    for c in grid:
        lr = LogisticRegression(C=c, max_iter=1000).fit(X, y)
        loss = 0.0 if Xv is None else log_loss(lr.predict_proba(Xv), valid[1])
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
