"""The classifier of raw texts, :class:`TextClassifier`, and its naive-Bayes token features."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gatelab.data import Tokenizer, Vocabulary, pad_sequences
from gatelab.errors import DataError
from gatelab.estimators.base import ClassifierBase, read_artifact
from gatelab.estimators.ensemble import members
from gatelab.estimators.text_linear import predict_ids
from gatelab.models.bag import BagOfNgrams, WithLinear
from gatelab.models.heads import ModelConfig
from gatelab.train import runs
from gatelab.train.fit import TensorData, predict_batches
from gatelab.train.runs import RunFolderError

__all__ = ["LINEAR_AUTO_MAX_TEXTS", "NB_AUTO_MAX_TEXTS", "TextClassifier"]

logger = logging.getLogger(__name__)

NB_AUTO_MAX_TEXTS = 20_000  # TextClassifier(nb_features="auto") uses them below this
LINEAR_AUTO_MAX_TEXTS = 20_000  # TextClassifier(linear="auto") mixes in the linear part below
LINEAR_FILE = "linear.json"  # the run folder's record of the linear part and its weight
PRIOR_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the logit adjustment's candidates


class TextClassifier(ClassifierBase):
    """Classify raw texts with an embedding -> (Bi)LSTM -> pooling -> Dense model.

    ``fit(X, y)`` learns a :class:`gatelab.data.Tokenizer` vocabulary from the texts
    ``X`` (a list of strings) and trains; ``predict(X)`` returns labels from ``classes_``.
    Words never seen in training map to the unknown id; a text made only of unknown
    words (or of no words) is still classified, from the unknown tokens alone; check
    :meth:`unknown_fraction` to find such texts.

    Args:
        embedding_dim, hidden_size, num_layers, bidirectional, variant, backend, pooling:
            of the model (:class:`gatelab.models.heads.ModelConfig`).
        dropout: before the Dense head; embedding_dropout: on the embeddings;
            word_dropout: replace training tokens by ``<unk>`` with this probability;
            lstm_dropout: between LSTM layers.
        epochs, batch_size, lr, weight_decay, clip_norm, patience, label_smoothing: of the
            fit loop (:class:`gatelab.train.fit.TrainConfig`); ``epochs=None`` picks 4 to 8
            passes, enough for about 800 optimizer steps.
        validation_fraction: held out of ``fit``'s data (stratified) for early stopping
            and best weights, unless ``fit`` gets ``validation_data``; 0 turns it off.
        min_freq, max_vocab: vocabulary size (:meth:`gatelab.data.Vocabulary.build`);
            words seen once become ``<unk>`` by default (MR: 18k words -> 10k; SST-2, whose
            sub-phrases repeat every word, keeps 13.4k of 13.8k).
        nb_features: append to each word's embedding its naive-Bayes log-count ratios,
            computed from the training texts (fixed features, saved with the weights).
            ``"auto"`` uses them below 20,000 training texts: on MR (10k snippets) they add
            about 2.5 points, on SST-2 (67k phrases, every sub-phrase of a sentence a text
            of its own, so word counts are inflated) they cost 1 to 2.
        nb_folds: with naive-Bayes features, each training text reads ratios computed
            without its ``1/nb_folds`` share of the training texts (out-of-fold), so
            that the model learns how far the ratios hold on text they did not come
            from; new texts read the ratios of all training texts. 0 or 1: every text
            reads the full ratios.
        linear: ``True`` mixes the network's probabilities with a linear part's,
            ``(1 - w) p_network + w p_linear``: logistic regression on TF-IDF unigrams and
            hashed bigrams of the same token ids (:mod:`gatelab.models.bag`), ``C`` in
            {1, 10, 100} and ``w`` in {0, 1/4, 1/2, 3/4, 1} chosen by the validation
            log-loss after the networks are trained (which it leaves as they are). On
            about a thousand texts the linear part wins (``w = 1``), on SST-5 the network
            (``w = 0``). ``"auto"`` does so below 20,000 training texts: on SST-2's 67k
            phrases the held-out phrases (sub-phrases of the training sentences) chose
            ``w = 3/4`` and dev sentences fell from 85.8 to 81.5. Without validation
            data, ``w = 0``. ``False``: the network alone. The choice is in
            ``linear_weight_`` and ``linear_C_``.
        max_len: the network reads the first ``max_len`` tokens of each text (None: all of
            them); the linear part reads every token of each text, in fitting, in the
            choice of ``w`` and in prediction (run folders saved before it did so keep
            cutting the linear part's input too).
        lowercase: lower-case before tokenising.
        n_models: an ensemble of this many models (seeds ``seed, seed + 1, ...``),
            probabilities averaged.
        seed: seeds initialisation, dropout and shuffling: equal seeds, equal models.
        device: ``"cpu"`` or a torch device string.
    """

    task = "text-classifier"
    _ITEMS = "texts"

    def __init__(
        self,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "max",
        variant: str = "standard",
        backend: str = "auto",
        dropout: float = 0.5,
        embedding_dropout: float = 0.25,
        word_dropout: float = 0.1,
        lstm_dropout: float = 0.0,
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        clip_norm: float | None = 1.0,
        patience: int | None = 2,
        label_smoothing: float = 0.0,
        validation_fraction: float = 0.05,
        min_freq: int = 2,
        max_vocab: int | None = None,
        max_len: int | None = 400,
        lowercase: bool = True,
        nb_features: bool | str = "auto",
        nb_folds: int = 5,
        linear: bool | str = "auto",
        n_models: int = 3,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self._store_params(locals())

    def _items(self, X, what: str = "X") -> list[str]:
        """The texts of ``X`` (a list of strings, checked)."""
        if isinstance(X, str):
            raise DataError(f"{what} must be a list of texts, got a single str; wrap it in a list")
        texts = list(X)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(f"{what}[{i}] is a {type(t).__name__} ({t!r}); expected a str")
        if not texts:
            raise DataError(f"{what} holds no texts; expected at least one")
        return texts

    def _token_ids(
        self, texts: list[str], vocab: Vocabulary | None = None, whole: bool = False
    ) -> list[list[int]]:
        """Each text's token ids, cut to ``max_len`` (the network's input) unless ``whole``."""
        vocab = self.vocab_ if vocab is None else vocab
        ids = [vocab.encode(self.tokenizer_(t)) for t in texts]
        cut = None if whole else self.max_len
        # A text with no tokens still needs one step: it becomes a single <unk>.
        return [(s or [1])[:cut] if cut else (s or [1]) for s in ids]

    def _tensor_data(
        self,
        texts: list[str],
        targets: Tensor | None,
        vocab: Vocabulary | None = None,
        whole: bool = False,
    ) -> TensorData:
        padded, lengths = pad_sequences(self._token_ids(texts, vocab, whole))
        if targets is None:
            targets = torch.zeros(len(texts), dtype=torch.long)
        return TensorData(padded, lengths, targets)

    def _whole_texts(self) -> bool:
        """Whether the model reads whole texts: a mix whose network cuts them itself
        (``WithLinear.max_len``); else its input is cut to ``max_len``."""
        return isinstance(self.model_, WithLinear) and self.model_.max_len is not None

    def _inputs(self, X) -> TensorData:
        """The model's input as one padded table (``predict`` pads in chunks instead)."""
        self._check_fitted()
        return self._tensor_data(self._items(X), None, whole=self._whole_texts())

    def _predict_outputs(self, X) -> Tensor:
        """The outputs on the texts ``X``, padded in chunks of like length
        (:func:`gatelab.estimators.text_linear.predict_ids`): the bits of one padded
        table, without its ``(N, longest)`` size when whole texts are long."""
        self._check_fitted()
        seqs = self._token_ids(self._items(X), whole=self._whole_texts())
        return predict_ids(self.model_, seqs, self.train_config_.eval_batch_size)

    def _check_args(self) -> None:
        k = self.nb_folds
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"nb_folds={k!r}; expected an int >= 0 (0 or 1: no folds)")
        if not isinstance(self.linear, bool) and self.linear != "auto":
            raise ValueError(f"linear={self.linear!r}; expected 'auto', True or False")

    def _learn(self, texts: list[str], targets: Tensor) -> TensorData:
        """The tokenizer, the vocabulary and the naive-Bayes tables of the training texts."""
        self.tokenizer_ = Tokenizer(lower=self.lowercase)
        self.vocab_ = Vocabulary.build(
            (self.tokenizer_(t) for t in texts),
            min_freq=self.min_freq,
            max_size=self.max_vocab,
        )
        train = self._tensor_data(texts, targets)
        self._train_texts = texts  # for the linear part, after training
        self._linear_off = False  # True: resuming a run folder from before the linear part
        self.linear_words_: list[str] = []
        self._nb_table = None
        if self._use_nb(len(texts)):
            self._nb_table = _nb_tables(train, len(self.classes_), len(self.vocab_), self.nb_folds)
        return train

    def _fit_config(self, train: TensorData) -> ModelConfig:
        nb = self._nb_table
        return self._model_config(
            output_size=len(self.classes_),
            vocab_size=len(self.vocab_),
            embedding_dropout=self.embedding_dropout,
            word_dropout=self.word_dropout,
            token_features=0 if nb is None else nb.shape[1],
            # the stacked tables (all texts, then one per inner fold) say how many there are
            token_feature_sets=1 if nb is None else nb.shape[0] // len(self.vocab_),
        )

    def _after_fit(self, train_ids: np.ndarray, valid: TensorData | None, run_dir) -> None:
        self.prior_adjustment_ = 0.0
        if len(self.classes_) > 2 and valid is not None:
            counts = np.bincount(train_ids, minlength=len(self.classes_))
            self.prior_adjustment_ = self._adjust_for_priors(valid, counts)
        texts, self._train_texts = self._train_texts, None
        self._add_linear(texts, train_ids, valid)
        if run_dir is not None:
            self._write_results(Path(run_dir))

    def _add_linear(self, texts: list[str], train_ids: np.ndarray, valid: TensorData | None):
        """Fit the linear part on the training ``texts`` and choose its weight ``w`` on
        ``valid``; ``w > 0`` makes ``model_`` a :class:`gatelab.models.bag.WithLinear`
        (log-probabilities) and ``vocab_`` the network's vocabulary followed by the
        linear part's own words (``linear_words_``: words below ``min_freq``)."""
        from gatelab.estimators.text_linear import choose_weight, fit_linear
        from gatelab.train.fit import evaluate_outputs

        self.linear_weight_, self.linear_C_, self.linear_losses_ = 0.0, None, None
        n_classes = len(self.classes_)
        if valid is None or not self._use_linear(len(texts)):
            return
        if len(np.unique(train_ids)) < n_classes:
            logger.info("linear part skipped: a class is missing from the training part")
            return
        every = Vocabulary.build(
            (self.tokenizer_(t) for t in texts), min_freq=1, max_size=self.max_vocab
        )
        words = [t for t in every.tokens if t not in self.vocab_]
        vocab = Vocabulary([*self.vocab_.tokens, *words])  # network ids first, same ids
        # the linear part reads whole texts (lists of ids, padded a chunk at a time); the
        # network (valid) its first max_len tokens
        lin_train = self._token_ids(texts, vocab, whole=True)
        lin_valid = self._token_ids(self._valid_items, vocab, whole=True)
        y = valid.targets.numpy()
        linear, self.linear_C_ = fit_linear(
            lin_train, train_ids, (lin_valid, y), len(vocab), n_classes
        )
        eval_bs = self.train_config_.eval_batch_size
        p_net = predict_batches(self.model_, valid, eval_bs).softmax(-1)  # (N, C)
        p_lin = predict_ids(linear, lin_valid, eval_bs).softmax(-1)
        w, losses = choose_weight(p_net, p_lin, y)
        self.linear_weight_ = w
        self.linear_losses_ = {str(k): v for k, v in losses.items()}
        logger.info(
            "linear part C=%g, mix weight w=%g; validation log-loss by w: %s",
            self.linear_C_,
            w,
            " ".join(f"{k:g}: {v:.4f}" for k, v in losses.items()),
        )
        if w == 0.0:
            return
        mixed = WithLinear(self.model_, linear, w, len(self.vocab_), max_len=self.max_len)
        self.model_ = mixed.to(torch.device(self.device)).eval()
        self.vocab_, self.linear_words_ = vocab, words
        out = predict_ids(self.model_, lin_valid, eval_bs)
        self.validation_metrics_ = evaluate_outputs(self.model_, out, valid.targets)

    def _write_results(self, run: Path) -> None:
        super()._write_results(run)
        if hasattr(self, "linear_weight_"):
            runs.atomic_write_json(run / LINEAR_FILE, self._linear_record())

    def _linear_record(self) -> dict[str, Any]:
        record = {"weight": self.linear_weight_, "C": self.linear_C_}
        record["validation_log_loss"] = self.linear_losses_
        if isinstance(self.model_, WithLinear):
            lin = self.model_.linear
            record.update(vocab_size=lin.vocab_size, outputs=lin.outputs, buckets=lin.buckets)
            record.update(network_vocab_size=self.model_.network_vocab_size)
            # True: the linear part reads every token (the network cuts itself); a folder
            # saved before that (loaded, then saved again) keeps its False
            record["whole_texts"] = self.model_.max_len is not None
            record["words"] = self.linear_words_  # the ids after vocab.json's, in order
        return record

    def _loaded_model(self, model: nn.Module, run: Path) -> nn.Module:
        """``model`` with the linear part that ``linear.json`` records, if any (runs
        saved before the linear part, or with ``w = 0``: the network alone)."""
        self.linear_weight_, self.linear_C_, self.linear_losses_ = 0.0, None, None
        self.linear_words_ = []
        if not (run / LINEAR_FILE).is_file():
            return model
        record = runs.read_json(run / LINEAR_FILE, LINEAR_FILE)
        try:
            self.linear_weight_ = float(record["weight"])
            self.linear_C_ = record["C"]
            self.linear_losses_ = record.get("validation_log_loss")
            if self.linear_weight_ == 0.0:
                return model
            sizes = (int(record[k]) for k in ("vocab_size", "outputs", "buckets"))
            self.linear_words_ = [str(t) for t in record["words"]]
            n = int(record["network_vocab_size"])
            # saved before the linear part read whole texts: its ids stay cut (max_len)
            cut = self.max_len if record.get("whole_texts") is True else None
            return WithLinear(model, BagOfNgrams(*sizes), self.linear_weight_, n, cut)
        except (KeyError, TypeError, ValueError) as err:
            raise RunFolderError(f"'{run / LINEAR_FILE}' is corrupt ({err})") from err

    def _adjust_for_priors(self, valid: TensorData, counts: np.ndarray) -> float:
        """Logit adjustment for more than two classes (Menon et al. 2021): subtract
        ``tau * log(prior)`` from every member's logits, ``tau`` in {0, 1/4, ..., 1}
        chosen on the validation data by the mean of accuracy and macro F1 (a tie keeps
        the smaller). A model trained on skewed classes under-predicts the rare ones
        (SST-5's extremes); ``tau = 1`` aims at balanced recall. Built into the heads'
        biases, so predictions and the saved weights carry it. Returns ``tau``."""
        models = members(self.model_)
        eval_bs = self.train_config_.eval_batch_size
        logits = torch.stack([predict_batches(m, valid, eval_bs) for m in models])  # (M, N, C)
        log_prior = torch.log(torch.as_tensor(np.maximum(counts, 1) / counts.sum()))
        tau, metrics = choose_prior_adjustment(logits, log_prior, valid.targets.numpy())
        with torch.no_grad():
            for m in models:
                m.head.bias.sub_(tau * log_prior.to(m.head.bias.dtype))
        self.validation_metrics_ = metrics
        logger.info("logit adjustment tau=%.2f: validation %s", tau, metrics)
        return tau

    def _resume_free(self, run: Path, model_config: ModelConfig) -> tuple[str, ...]:
        """A run folder from before the linear part lacks ``params.linear``: it resumes as
        it was trained, without the part, whatever ``linear`` says now."""
        free = super()._resume_free(run, model_config)
        if "linear" in runs.read_config(run, self.task).get("params", {}):
            return free
        self._linear_off = True  # read by _use_linear; _learn resets it
        return (*free, "params.linear")

    def _use_linear(self, n_train: int) -> bool:
        if self._linear_off:
            return False
        return n_train < LINEAR_AUTO_MAX_TEXTS if self.linear == "auto" else self.linear

    def _use_nb(self, n_train: int) -> bool:
        if self.nb_features == "auto":
            return n_train < NB_AUTO_MAX_TEXTS
        if not isinstance(self.nb_features, bool):
            raise ValueError(f"nb_features={self.nb_features!r}; expected True, False or 'auto'")
        return self.nb_features

    def _prepare_model(self, model: nn.Module) -> None:
        if self._nb_table is not None:
            model.token_feature_table.copy_(self._nb_table)

    def unknown_fraction(self, X) -> np.ndarray:
        """``(N,)`` fraction of each text's tokens that the vocabulary does not know (1.0
        for a text made only of unknown words, or of no words at all)."""
        self._check_fitted()
        out = []
        for t in self._items(X):
            tokens = self.tokenizer_(t)
            out.append(self.vocab_.unknown_fraction(tokens) if tokens else 1.0)
        return np.asarray(out)

    def _artifacts(self) -> dict[str, Any]:
        # vocab.json: the network's vocabulary; the linear part's own words are in
        # linear.json (their ids follow)
        extra = len(getattr(self, "linear_words_", []))
        network_vocab = Vocabulary(self.vocab_.tokens[: len(self.vocab_) - extra])
        return {
            "vocab.json": network_vocab.to_dict(),
            "tokenizer.json": self.tokenizer_.to_dict(),
            "labels.json": self._labels_artifact(),
        }

    def _load_artifacts(self, run: Path) -> None:
        self.vocab_ = read_artifact(run, "vocab.json", Vocabulary.from_dict)
        if self.linear_words_:  # read by _loaded_model, before
            try:
                self.vocab_ = Vocabulary([*self.vocab_.tokens, *self.linear_words_])
            except DataError as err:
                raise RunFolderError(f"'{run / LINEAR_FILE}' is corrupt ({err})") from err
        self.tokenizer_ = read_artifact(run, "tokenizer.json", Tokenizer.from_dict)
        self._read_labels(run)


def prior_adjusted(logits: Tensor, log_prior: Tensor, tau: float) -> Tensor:
    """The ensemble's probabilities ``(N, C)`` under the logit adjustment: the members'
    softmax of ``logits - tau * log_prior`` averaged; ``logits (M, N, C)``."""
    return (logits - tau * log_prior.float()).softmax(-1).mean(0)


def choose_prior_adjustment(
    logits: Tensor, log_prior: Tensor, y: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The logit adjustment's ``tau`` (:meth:`TextClassifier._adjust_for_priors`): of
    ``PRIOR_TAUS``, the one whose ensemble (members' probabilities of ``logits -
    tau * log_prior`` averaged) scores best on the labels ``y`` by the mean of accuracy
    and macro F1, a tie keeping the smaller; with its metrics. ``logits (M, N, C)``,
    ``log_prior (C,)``, ``y (N,)`` class indices. ``benchmarks/sst5_seeds.py`` applies the
    same rule to kept logits."""
    from gatelab.train.metrics import classification_metrics

    best = None
    for tau in PRIOR_TAUS:
        m = classification_metrics(y, prior_adjusted(logits, log_prior, tau).argmax(-1).numpy())
        score = (m["accuracy"] + m["macro_f1"]) / 2
        if best is None or score > best[0] + 1e-12:
            best = (score, tau, m)
    return best[1], best[2]


def _nb_log_count_ratios(data: TensorData, n_classes: int, vocab_size: int) -> Tensor:
    """Naive-Bayes log-count ratios of each token id (Wang & Manning 2012), ``(V, F)``.

    For class ``c``, ``r_c(w) = log((p_w / |p|) / (q_w / |q|))`` with ``p_w`` (``q_w``) one
    plus the number of training texts of class ``c`` (of the other classes) holding ``w``.
    Binary tasks get one feature (the second class against the first), others one per
    class. Padding and ``<unk>`` get 0.
    """
    counts = torch.zeros(n_classes, vocab_size, dtype=torch.float64)
    T = data.inputs.shape[1]
    mask = torch.arange(T)[None, :] < data.lengths[:, None]  # (N, T)
    present = torch.zeros(len(data), vocab_size, dtype=torch.bool)
    present.scatter_(1, torch.where(mask, data.inputs, 0), True)  # (N, V) texts holding w
    counts.index_add_(0, data.targets, present.double())
    total = counts.sum(0)
    classes = [1] if n_classes == 2 else range(n_classes)
    ratios = []
    for c in classes:
        p, q = 1.0 + counts[c, 2:], 1.0 + total[2:] - counts[c, 2:]  # words only
        ratios.append(torch.log((p / p.sum()) / (q / q.sum())))
    table = torch.zeros(vocab_size, len(ratios))
    table[2:] = torch.stack(ratios, dim=1).float()  # (V - 2, F); padding, <unk> stay 0
    return table


def _nb_tables(train: TensorData, n_classes: int, vocab_size: int, folds: int) -> Tensor:
    """Naive-Bayes ratio tables for ``train``, with out-of-fold ratios for its texts.

    Table 0 holds the ratios of all of ``train`` (what new texts read). With ``folds``
    ``K > 1``, the texts are split into K inner folds (seeded, fixed) and table ``k + 1``
    holds the ratios computed without inner fold ``k``; the token ids of the texts in
    fold ``k`` are moved, in place, to ``(k + 1) * V + id`` so that they read table
    ``k + 1`` (see ``ModelConfig.token_feature_sets``). A model trained on ratios that
    its own texts produced learns to trust them more than they deserve on new text
    (BENCHMARKS.md, MR). Returns ``((K + 1) * V, F)``, or ``(V, F)`` for ``K <= 1``.
    """
    tables = [_nb_log_count_ratios(train, n_classes, vocab_size)]
    if folds <= 1:
        return tables[0]
    fold = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)) % folds
    for k in range(folds):
        keep = fold != k
        part = TensorData(train.inputs[keep], train.lengths[keep], train.targets[keep])
        tables.append(_nb_log_count_ratios(part, n_classes, vocab_size))
    for k in range(folds):  # only now: every table above reads the original ids
        rows = (fold == k).nonzero().squeeze(1)
        x = train.inputs[rows]
        train.inputs[rows] = torch.where(x > 0, x + (k + 1) * vocab_size, x)
    return torch.cat(tables, dim=0)
