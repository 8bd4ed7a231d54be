"""The linear part of :class:`gatelab.TextClassifier`: TF-IDF of unigrams and hashed
bigrams of the token ids the network reads, a linear (logistic regression) layer on top,
and :class:`WithLinear`, the network and the linear part mixed as probabilities.

Features of a text with token ids ``w_1 .. w_n`` (vocabulary ids, ``V`` of them)::

    unigram w_t            -> column w_t                                   (0 <= . < V)
    bigram (w_t, w_{t+1})  -> column V + (w_t * 1_000_003 + w_{t+1}) mod K  (V <= . < V + K)
    tf(f)    = 1 + log(count of f in the text)        (sublinear tf)
    idf(f)   = log((1 + N) / (1 + df(f))) + 1         (smooth idf, N training texts)
    x        = tf * idf / ||tf * idf||_2
    decision = x @ coef + intercept                   (B, 1) for 2 classes, else (B, C)

which is scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` (smooth idf, l2 norm) over
these columns and ``LogisticRegression.decision_function``; the weights are fitted by
scikit-learn and copied into buffers (:mod:`gatelab.estimators.text_linear`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BIGRAM_BUCKETS", "BagOfNgrams", "WithLinear", "ngram_columns"]

BIGRAM_BUCKETS = 2**18  # hashed bigram columns: few collisions below ~100k distinct bigrams
_PRIME = 1_000_003


def ngram_columns(ids: Tensor, lengths: Tensor, vocab_size: int, buckets: int) -> Tensor:
    """The feature column of each unigram and bigram of padded ``ids (B, T)`` int64 with
    ``lengths (B,)``: ``(B, 2T - 1)`` int64, ``-1`` past a text's end. Ids at or above
    ``vocab_size`` (the naive-Bayes fold tables' stacked ids) read as ``id mod V``."""
    T = ids.shape[1]
    w = ids % vocab_size  # (B, T)
    real = torch.arange(T, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
    uni = torch.where(real, w, -1)  # (B, T)
    bi = vocab_size + (w[:, :-1] * _PRIME + w[:, 1:]) % buckets  # (B, T - 1)
    bi = torch.where(real[:, 1:], bi, -1)
    return torch.cat([uni, bi], dim=1)


class BagOfNgrams(nn.Module):
    """TF-IDF uni+bigram features of token ids -> a linear layer (see the module).

    ``forward(ids (B, T), lengths (B,)) -> (B, classes)`` logits: ``decision`` for more
    than two classes, ``[0, decision]`` for two (so that softmax gives scikit-learn's
    ``predict_proba`` either way). Buffer ``idf (F,)``, frozen parameters
    ``coef (F, outputs)``, ``intercept (outputs,)``, ``F = vocab_size + buckets``;
    ``outputs`` is 1 for two classes, else the number of classes.
    """

    def __init__(self, vocab_size: int, outputs: int, buckets: int = BIGRAM_BUCKETS) -> None:
        super().__init__()
        self.vocab_size, self.outputs, self.buckets = vocab_size, outputs, buckets
        F = vocab_size + buckets
        self.register_buffer("idf", torch.ones(F))
        # parameters (fitted by scikit-learn, not by gradients) so that the usual
        # device and predict helpers that look for parameters find them
        self.coef = nn.Parameter(torch.zeros(F, outputs), requires_grad=False)
        self.intercept = nn.Parameter(torch.zeros(outputs), requires_grad=False)

    def features(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(columns (B, L), values (B, L))``: each distinct column of a text once (the
        rest ``-1`` with value 0) and its l2-normalised TF-IDF value."""
        cols = ngram_columns(ids, lengths, self.vocab_size, self.buckets)  # (B, L)
        s, _ = cols.sort(dim=1)  # -1 (none) first
        new = torch.ones_like(s, dtype=torch.bool)
        new[:, 1:] = s[:, 1:] != s[:, :-1]
        group = new.long().cumsum(1) - 1  # (B, L) index of each run of equal columns
        ones = torch.ones(s.shape, device=s.device)
        counts = torch.zeros(s.shape, device=s.device).scatter_add_(1, group, ones)  # (B, L)
        col = torch.full_like(s, -1).scatter_(1, group, s)  # (B, L) each run's column
        used = (col >= 0) & (counts > 0)
        tf = 1.0 + torch.log(counts.clamp(min=1.0))
        v = torch.where(used, tf * self.idf[col.clamp(min=0)], 0.0)  # (B, L)
        norm = v.norm(dim=1, keepdim=True)
        v = v / torch.where(norm > 0, norm, 1.0)  # an empty text stays 0, as in sklearn
        return torch.where(used, col, -1), v

    def decision(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """scikit-learn's ``decision_function``: ``(B,)`` for two classes, else ``(B, C)``."""
        col, v = self.features(ids, lengths)
        d = (self.coef[col.clamp(min=0)] * v[..., None]).sum(1) + self.intercept  # (B, out)
        return d[:, 0] if self.outputs == 1 else d

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], device=x.device)
        d = self.decision(x, lengths)
        return torch.stack([torch.zeros_like(d), d], dim=1) if self.outputs == 1 else d


class WithLinear(nn.Module):
    """A classifier network (a model or an :class:`~gatelab.estimators.Ensemble`) and a
    :class:`BagOfNgrams` of the same input, mixed as probabilities::

        log p = log((1 - w) softmax(network(x')) + w softmax(linear(x)))

    ``forward(x (B, T), lengths (B,)) -> (B, classes)`` log-probabilities (argmax and
    softmax apply as to logits); ``weight`` is ``w`` in (0, 1], a buffer. The ids ``x``
    may reach past the network's vocabulary (the linear part's own words, those the
    network's vocabulary drops): ``x'`` maps ids at or above ``network_vocab_size`` to
    ``<unk>`` (id 1); None: ``x' = x``. ``max_len``: the network reads the first
    ``max_len`` steps of each text (``x'[:, :max_len]``, lengths clamped to it) while the
    linear part reads all of ``x``; None: both read all of ``x`` (run folders written
    before the linear part read whole texts: their ids arrive already cut).
    """

    def __init__(
        self,
        network: nn.Module,
        linear: BagOfNgrams,
        weight: float,
        network_vocab_size: int | None = None,
        max_len: int | None = None,
    ) -> None:
        super().__init__()
        self.network, self.linear = network, linear
        self.network_vocab_size, self.max_len = network_vocab_size, max_len
        self.config = network.config
        self.register_buffer("weight", torch.tensor(float(weight)))

    def network_ids(self, x: Tensor) -> Tensor:
        """``x`` with the ids the network does not know replaced by ``<unk>`` (1)."""
        n = self.network_vocab_size
        return x if n is None else torch.where(x < n, x, 1)

    def network_input(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """What the network reads of ``x (B, T)``: ``(B, min(T, max_len))`` ids (those it
        does not know as ``<unk>``) and the lengths clamped to ``max_len``."""
        n = self.max_len
        if n is not None and x.shape[1] > n:
            x = x[:, :n]  # (B, max_len)
            lengths = None if lengths is None else lengths.clamp(max=n)
        return self.network_ids(x), lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        w = self.weight
        lin = self.linear(x, lengths).log_softmax(-1) + torch.log(w)  # (B, C)
        if float(w) == 1.0:  # the network does not count: not run
            return lin
        net = self.network(*self.network_input(x, lengths)).log_softmax(-1) + torch.log1p(-w)
        return torch.logaddexp(net, lin)
