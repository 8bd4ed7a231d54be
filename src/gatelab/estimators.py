"""scikit-learn estimators over the LSTM -> Dense models: text, series, forecasting.

- :class:`TextClassifier`: a list of raw strings -> classes (tokenizer + vocabulary are
  learnt in ``fit``);
- :class:`SeriesClassifier`: ``(N, T, C)`` arrays (or a list of ``(T_i, C)`` arrays of
  different lengths) -> classes;
- :class:`Forecaster`: a 1-D series -> its next ``horizon`` values.

Each follows scikit-learn's contract (constructor arguments stored as given, learnt state
in attributes ending in ``_``, ``get_params / set_params``, ``fit / predict / score``;
classifiers have ``predict_proba`` and ``classes_``), so they work inside
``sklearn.pipeline.Pipeline`` and ``cross_val_score``. ``save(path)`` writes a run folder
(:mod:`gatelab.train.runs`) and ``load(path)`` reads one back; ``fit(..., run_dir=DIR)`` trains
with a checkpoint each epoch and ``resume=True`` continues an interrupted run (the same
settings and data, checked); a folder that holds a run is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from torch import Tensor, nn

from gatelab.data import Labels, Scaler, Tokenizer, Vocabulary, pad_sequences
from gatelab.errors import DataError
from gatelab.models.heads import ModelConfig, build_model
from gatelab.train import distributed as D
from gatelab.train.fit import Callback, History, TensorData, TrainConfig, evaluate_outputs, fit
from gatelab.train.fit import data_fingerprint as _data_fingerprint
from gatelab.train.fit import predict_batches as _predict_batches
from gatelab.train.runs import (
    CONFIG_FILE,
    MEMBER_PREFIX,
    METRICS_FILE,
    WEIGHTS_FILE,
    RunFolderError,
    atomic_write_json,
    atomic_write_tensors,
    load_state,
    read_config,
    read_json,
    run_lock,
    section,
    start_run,
    write_config,
)

__all__ = [
    "ESTIMATORS",
    "Forecaster",
    "SeriesClassifier",
    "TextClassifier",
    "load",
    "register_estimator",
]

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[_LSTMEstimator]] = {}
NB_AUTO_MAX_TEXTS = 20_000  # TextClassifier(nb_features="auto") uses them below this
SELECTION_FILE = "selection.json"  # SeriesClassifier: the inner cross-validation
LEVEL_FILE = "level.json"  # SeriesClassifier: scaling of each series' level and log scale


def register_estimator(cls: type[_LSTMEstimator]) -> type[_LSTMEstimator]:
    """Register an estimator class under its run-folder task kind ``cls.task``."""
    ESTIMATORS[cls.task] = cls
    return cls


def load(path: str | os.PathLike) -> _LSTMEstimator:
    """The fitted estimator saved in run folder ``path``, whatever its task kind."""
    config = read_config(path)
    kind = config["task"]
    if kind not in ESTIMATORS:
        raise RunFolderError(
            f"run folder '{path}' holds a {kind!r} run; estimators exist for "
            f"{', '.join(sorted(ESTIMATORS))}"
        )
    return ESTIMATORS[kind].load(path)


class _Ensemble(nn.Module):
    """Members trained with different seeds; outputs averaged (probabilities for
    classifiers, returned as log-probabilities so that argmax and softmax still apply)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        outs = torch.stack([m(x, lengths) for m in self.members])  # (M, B, out)
        if self.config.kind == "classifier":
            return torch.logsumexp(outs.log_softmax(-1), dim=0) - np.log(len(self.members))
        return outs.mean(dim=0)


# ----------------------------------------------------------------- the shared base


class _LSTMEstimator(BaseEstimator):
    """What the three estimators share: configs, fitting, ensembles, run folders."""

    task: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    _artifact_files: ClassVar[tuple[str, ...]] = ()

    # --- configs from the constructor arguments

    def _model_config(self, **data) -> ModelConfig:
        """The model config from the constructor arguments; ``data`` adds the sizes the
        data decide and overrides arguments resolved from the data (e.g. hidden_size)."""
        fields = dict(
            kind=self.kind,
            embedding_dim=self.embedding_dim,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            variant=self.variant,
            backend=self.backend,
            pooling=self.pooling,
            dropout=self.dropout,
            lstm_dropout=self.lstm_dropout,
        )
        return ModelConfig(**{**fields, **data})

    def _epochs(self, n_train: int) -> int:
        """``epochs``, or for None: enough passes for about 800 optimizer steps, at
        least 4 and at most 8 (4 on SST-2's 67k phrases, 8 on MR's 10k snippets)."""
        if self.epochs is not None:
            return self.epochs
        steps = math.ceil(n_train / self.batch_size)
        return min(8, max(4, math.ceil(800 / steps)))

    def _train_config(self, n_train: int) -> TrainConfig:
        return TrainConfig(
            epochs=self._epochs(n_train),
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            patience=self.patience,
            seed=self.seed,
            label_smoothing=getattr(self, "label_smoothing", 0.0),
        )

    def _check_common(self) -> None:
        n = self.n_models
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n_models={n!r}; expected an int >= 1")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction={self.validation_fraction!r}; expected a fraction in [0, 1)"
            )

    # --- fitting

    def _fit_tensors(
        self,
        train: TensorData,
        valid: TensorData | None,
        model_config: ModelConfig,
        *,
        run_dir,
        resume: bool,
        callbacks: Sequence[Callback],
        metric_transform=None,
        overwrite: bool = False,
    ) -> None:
        run = Path(run_dir) if run_dir is not None else None
        with run_lock(run) if run is not None else contextlib.nullcontext():
            self._fit_run(
                train, valid, model_config, run, resume, overwrite, callbacks, metric_transform
            )

    def _fit_run(
        self, train, valid, model_config, run, resume, overwrite, callbacks, metric_transform
    ) -> None:
        train_config = self._train_config(len(train))
        if run is not None:
            inputs = {"train": _data_fingerprint(train), "valid": _data_fingerprint(valid)}
            self._start_run(run, model_config, train_config, resume, overwrite, inputs)
        device = torch.device(self.device)
        members, histories = [], []
        start = time.perf_counter()
        for k in range(self.n_models):
            seed = self.seed + k
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(model_config)
            self._prepare_model(model)
            model.to(device)
            ckpt = run / f"{MEMBER_PREFIX}{k}" if run is not None and self.n_models > 1 else run
            history = fit(
                model,
                train,
                valid,
                dataclasses.replace(train_config, seed=seed),
                checkpoint_dir=ckpt,
                resume=resume,
                callbacks=callbacks,
                metric_transform=metric_transform,
            )
            members.append(model)
            histories.append(history)
        self.model_config_ = model_config
        self.train_config_ = train_config
        self.model_ = members[0] if len(members) == 1 else _Ensemble(members).eval()
        self.history_: list[History] = histories
        self.validation_metrics_: dict[str, float] | None = None
        if valid is not None:
            out = _predict_batches(self.model_, valid, train_config.eval_batch_size)
            y = valid.targets
            if metric_transform is not None:
                out, y = metric_transform(out, y)
            self.validation_metrics_ = evaluate_outputs(self.model_, out, y)
        self.train_seconds_ = time.perf_counter() - start
        if run is not None:
            self._write_results(run)

    def _start_run(self, run: Path, model_config, train_config, resume, overwrite, inputs) -> None:
        now = {**self._config_sections(model_config, train_config), "inputs": inputs}
        saved = start_run(run, self.task, now, resume=resume, overwrite=overwrite)
        if saved is None:  # a fresh run: artifacts, then the config, which marks a run
            self._write_config(run, model_config, train_config, inputs)
            return
        for name, content in self._artifacts().items():
            if read_json(run / name, name) != content:
                raise RunFolderError(
                    f"cannot resume '{run}': '{run / name}' differs from what this run's "
                    "training data give (different data?)"
                )

    def _config_sections(self, model_config, train_config) -> dict[str, Any]:
        return {
            "params": _json_params(self.get_params()),
            "model": model_config.to_dict(),
            "train": train_config.to_dict(),
            "n_models": self.n_models,
        }

    def _write_config(self, run: Path, model_config, train_config, inputs=None) -> None:
        for name, content in self._artifacts().items():
            atomic_write_json(run / name, content)
        sections = self._config_sections(model_config, train_config)
        if inputs is not None:
            sections["inputs"] = inputs
        write_config(run, self.task, **sections)

    def _write_results(self, run: Path) -> None:
        atomic_write_tensors(run / WEIGHTS_FILE, self.model_.state_dict())
        metrics = {
            "validation": self.validation_metrics_,
            "train_seconds": self.train_seconds_,
            "history": [h.to_dict() for h in self.history_],
        }
        atomic_write_json(run / METRICS_FILE, metrics)

    # --- run folders

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(...) or load(path)"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted estimator as a run folder ``path`` (created if needed).

        A run of this kind already in ``path`` is replaced (saving is the request), its
        checkpoints and members' files included, so that no resume continues a training
        this save did not write; a run of another kind is refused (RunFolderError). The
        config records no input data (``"inputs": {}``): a ``fit(path, resume=True)``
        with data is refused, since the data cannot be checked.
        """
        self._check_fitted()
        run = Path(path)
        with run_lock(run):
            start_run(run, self.task, {}, resume=False, overwrite=True)
            self._write_config(run, self.model_config_, self.train_config_, inputs={})
            self._write_results(run)
        return run

    @classmethod
    def load(cls, path: str | os.PathLike):
        """The fitted estimator in run folder ``path`` (safetensors + JSON; never pickle).

        Raises:
            RunFolderError: no such folder; a missing or corrupt file (named); a folder of
                another task kind or another gatelab major version.
        """
        run = Path(path)
        config = read_config(run, cls.task)
        cfg_path = run / CONFIG_FILE
        try:
            est = cls(**section(config, "params", run))
            model_config = ModelConfig.from_dict(section(config, "model", run))
            train_config = TrainConfig.from_dict(section(config, "train", run))
            n_models = int(section(config, "n_models", run))
        except (TypeError, ValueError) as err:
            if isinstance(err, RunFolderError):
                raise
            raise RunFolderError(f"run config '{cfg_path}' is corrupt ({err})") from err
        with torch.random.fork_rng(devices=[]):
            members = [build_model(model_config) for _ in range(n_models)]
        model = members[0] if n_models == 1 else _Ensemble(members)
        load_state(model, run)
        est._load_artifacts(run)
        est.model_config_ = model_config
        est.train_config_ = train_config
        est.model_ = model.to(torch.device(est.device)).eval()
        metrics = read_json(run / METRICS_FILE, "metrics file")
        try:
            est.history_ = [History.from_dict(h) for h in metrics.get("history", [])]
            est.validation_metrics_ = metrics.get("validation")
            est.train_seconds_ = metrics.get("train_seconds")
        except (TypeError, AttributeError) as err:
            raise RunFolderError(f"metrics file '{run / METRICS_FILE}' is corrupt") from err
        return est

    def _prepare_model(self, model: nn.Module) -> None:
        """Set data-derived, untrained parts of a freshly built model (hook)."""

    def _artifacts(self) -> dict[str, Any]:
        """``{file name: JSON content}`` of what turns raw input into tensors."""
        return {}

    def _load_artifacts(self, run: Path) -> None:
        pass

    # --- prediction

    def _outputs(self, data: TensorData) -> Tensor:
        self._check_fitted()
        return _predict_batches(self.model_, data, self.train_config_.eval_batch_size)


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    for k, v in params.items():
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise TypeError(f"parameter {k}={v!r} cannot be saved in a run folder (not JSON)")
    return dict(params)


def _read_artifact(run: Path, name: str, reader):
    content = read_json(run / name, name)
    try:
        return reader(content)
    except (DataError, TypeError, ValueError, KeyError) as err:
        raise RunFolderError(f"'{run / name}' is corrupt ({err})") from err


# ----------------------------------------------------------------- classifiers


class _ClassifierBase(ClassifierMixin, _LSTMEstimator):
    """Labels <-> ids, stratified validation split, predict / predict_proba."""

    kind = "classifier"

    def _encode_labels(self, y) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"y must be 1-D (one label per sample), got shape {y.shape}")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise DataError(
                f"y holds a single class {self.classes_[0]!r} in all {len(y)} samples; "
                "a classifier needs at least two classes"
            )
        return np.searchsorted(self.classes_, y)

    def _split(self, n: int, y_ids: np.ndarray):
        """-> (train index, valid index or None), stratified where possible."""
        if self.validation_fraction == 0:
            return np.arange(n), None
        from sklearn.model_selection import train_test_split

        n_valid = round(n * self.validation_fraction)
        if n_valid < 1 or n - n_valid < 2:
            return np.arange(n), None
        index = np.arange(n)
        try:
            tr, va = train_test_split(
                index, test_size=n_valid, random_state=self.seed, stratify=y_ids
            )
        except ValueError:  # a class too small to stratify
            tr, va = train_test_split(index, test_size=n_valid, random_state=self.seed)
        return np.sort(tr), np.sort(va)

    def _labels_artifact(self) -> dict[str, Any]:
        d = Labels([str(c) for c in self.classes_]).to_dict()
        # Labels sorts names itself; keep our order (np.unique's) and the original values.
        d["names"] = [str(c) for c in self.classes_]
        d["values"] = self.classes_.tolist()
        return d

    def _read_labels(self, run: Path) -> None:
        def reader(d):
            Labels.from_dict(d)
            return np.asarray(d.get("values", d["names"]))

        self.classes_ = _read_artifact(run, "labels.json", reader)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, columns in ``classes_`` order."""
        return torch.softmax(self._outputs(self._inputs(X)), dim=-1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample, ``(N,)`` (values of ``classes_``)."""
        return self.classes_[self._outputs(self._inputs(X)).argmax(-1).numpy()]


@register_estimator
class TextClassifier(_ClassifierBase):
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
        max_len: texts are cut to their first ``max_len`` tokens.
        lowercase: lower-case before tokenising.
        n_models: an ensemble of this many models (seeds ``seed, seed + 1, ...``),
            probabilities averaged.
        seed: seeds initialisation, dropout and shuffling: equal seeds, equal models.
        device: ``"cpu"`` or a torch device string.
    """

    task = "text-classifier"

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
        n_models: int = 3,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.variant = variant
        self.backend = backend
        self.dropout = dropout
        self.embedding_dropout = embedding_dropout
        self.word_dropout = word_dropout
        self.lstm_dropout = lstm_dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.patience = patience
        self.label_smoothing = label_smoothing
        self.validation_fraction = validation_fraction
        self.min_freq = min_freq
        self.max_vocab = max_vocab
        self.max_len = max_len
        self.lowercase = lowercase
        self.nb_features = nb_features
        self.nb_folds = nb_folds
        self.n_models = n_models
        self.seed = seed
        self.device = device

    def _texts(self, X) -> list[str]:
        if isinstance(X, str):
            raise DataError("X must be a list of texts, got a single str; wrap it in a list")
        texts = list(X)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(f"X[{i}] is a {type(t).__name__} ({t!r}); expected a str")
        if not texts:
            raise DataError("X holds no texts; expected at least one")
        return texts

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        ids = [self.vocab_.encode(self.tokenizer_(t)) for t in texts]
        # A text with no tokens still needs one step: it becomes a single <unk>.
        return [(s or [1])[: self.max_len] if self.max_len else (s or [1]) for s in ids]

    def _tensor_data(self, texts: list[str], targets: Tensor | None) -> TensorData:
        padded, lengths = pad_sequences(self._token_ids(texts))
        if targets is None:
            targets = torch.zeros(len(texts), dtype=torch.long)
        return TensorData(padded, lengths, targets)

    def _inputs(self, X) -> TensorData:
        self._check_fitted()
        return self._tensor_data(self._texts(X), None)

    def fit(
        self,
        X,
        y,
        *,
        validation_data: tuple[Any, Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> TextClassifier:
        """Learn the vocabulary and train.

        Args:
            X: N texts (strings). y: N labels (any sortable values).
            validation_data: ``(X_valid, y_valid)`` for early stopping and best weights
                (otherwise ``validation_fraction`` of ``X`` is held out).
            run_dir: write a run folder there, with a checkpoint each epoch.
            resume: continue the interrupted run in ``run_dir`` (the same data and
                settings; each difference is named). Without it (or ``overwrite``), a
                ``run_dir`` that holds a run is refused.
            overwrite: replace the run ``run_dir`` holds.
            callbacks: :class:`gatelab.train.fit.Callback` objects (e.g. progress).
        """
        self._check_common()
        k = self.nb_folds
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"nb_folds={k!r}; expected an int >= 0 (0 or 1: no folds)")
        texts = self._texts(X)
        if len(texts) != len(y):
            raise DataError(f"X has {len(texts)} texts but y has {len(y)} labels")
        y_ids = self._encode_labels(y)
        train_idx, valid_idx = (
            (np.arange(len(texts)), None) if validation_data is not None else self._split(
                len(texts), y_ids
            )
        )  # fmt: skip
        self.tokenizer_ = Tokenizer(lower=self.lowercase)
        train_texts = [texts[i] for i in train_idx]
        self.vocab_ = Vocabulary.build(
            (self.tokenizer_(t) for t in train_texts),
            min_freq=self.min_freq,
            max_size=self.max_vocab,
        )
        train = self._tensor_data(train_texts, torch.as_tensor(y_ids[train_idx]))
        self._nb_table = None
        if self._use_nb(len(train_texts)):
            self._nb_table = _nb_tables(train, len(self.classes_), len(self.vocab_), self.nb_folds)
        valid = None
        if validation_data is not None:
            vx, vy = validation_data
            vtexts = self._texts(vx)
            unknown = set(np.unique(np.asarray(vy))) - set(self.classes_.tolist())
            if unknown:
                raise DataError(
                    f"validation labels {sorted(map(str, unknown))} are not among the training "
                    f"classes {self.classes_.tolist()}"
                )
            vids = np.searchsorted(self.classes_, np.asarray(vy))
            valid = self._tensor_data(vtexts, torch.as_tensor(vids))
        elif valid_idx is not None:
            valid = self._tensor_data(
                [texts[i] for i in valid_idx], torch.as_tensor(y_ids[valid_idx])
            )
        model_config = self._model_config(
            output_size=len(self.classes_),
            vocab_size=len(self.vocab_),
            embedding_dropout=self.embedding_dropout,
            word_dropout=self.word_dropout,
            token_features=0 if self._nb_table is None else self._nb_table.shape[1],
            # the stacked tables (all texts, then one per inner fold) say how many there are
            token_feature_sets=1
            if self._nb_table is None
            else self._nb_table.shape[0] // len(self.vocab_),
        )
        run = {"run_dir": run_dir, "resume": resume, "overwrite": overwrite}
        self._fit_tensors(train, valid, model_config, callbacks=callbacks, **run)
        self.prior_adjustment_ = 0.0
        if len(self.classes_) > 2 and valid is not None:
            counts = np.bincount(y_ids[train_idx], minlength=len(self.classes_))
            self.prior_adjustment_ = self._adjust_for_priors(valid, counts)
            if run_dir is not None:
                self._write_results(Path(run_dir))
        return self

    def _adjust_for_priors(self, valid: TensorData, counts: np.ndarray) -> float:
        """Logit adjustment for more than two classes (Menon et al. 2021): subtract
        ``tau * log(prior)`` from every member's logits, ``tau`` in {0, 1/4, ..., 1}
        chosen on the validation data by the mean of accuracy and macro F1 (a tie keeps
        the smaller). A model trained on skewed classes under-predicts the rare ones
        (SST-5's extremes); ``tau = 1`` aims at balanced recall. Built into the heads'
        biases, so predictions and the saved weights carry it. Returns ``tau``."""
        from gatelab.train.metrics import classification_metrics

        members = self.model_.members if isinstance(self.model_, _Ensemble) else [self.model_]
        eval_bs = self.train_config_.eval_batch_size
        logits = torch.stack([_predict_batches(m, valid, eval_bs) for m in members])  # (M, N, C)
        log_prior = torch.log(torch.as_tensor(np.maximum(counts, 1) / counts.sum()))
        y = valid.targets.numpy()
        best = None
        for tau in (0.0, 0.25, 0.5, 0.75, 1.0):
            proba = (logits - tau * log_prior.float()).softmax(-1).mean(0)  # (N, C)
            m = classification_metrics(y, proba.argmax(-1).numpy())
            score = (m["accuracy"] + m["macro_f1"]) / 2
            if best is None or score > best[0] + 1e-12:
                best = (score, tau, m)
        _, tau, metrics = best
        with torch.no_grad():
            for m in members:
                m.head.bias.sub_(tau * log_prior.to(m.head.bias.dtype))
        self.validation_metrics_ = metrics
        logger.info("logit adjustment tau=%.2f: validation %s", tau, metrics)
        return tau

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
        for t in self._texts(X):
            tokens = self.tokenizer_(t)
            out.append(self.vocab_.unknown_fraction(tokens) if tokens else 1.0)
        return np.asarray(out)

    def _artifacts(self) -> dict[str, Any]:
        return {
            "vocab.json": self.vocab_.to_dict(),
            "tokenizer.json": self.tokenizer_.to_dict(),
            "labels.json": self._labels_artifact(),
        }

    def _load_artifacts(self, run: Path) -> None:
        self.vocab_ = _read_artifact(run, "vocab.json", Vocabulary.from_dict)
        self.tokenizer_ = _read_artifact(run, "tokenizer.json", Tokenizer.from_dict)
        self._read_labels(run)


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


def _series_list(X, what: str = "X") -> list[np.ndarray]:
    """(N, T, C) / (N, T) arrays or a list of (T_i, C) / (T_i,) arrays -> list of (T_i, C)."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 2:
            X = X[:, :, None]
        if X.ndim != 3:
            raise DataError(
                f"{what} has shape {X.shape}; expected (N, T, C), (N, T) or a list of (T_i, C)"
            )
        items = list(X)
    else:
        items = [np.asarray(s) for s in X]
    if not items:
        raise DataError(f"{what} holds no series; expected at least one")
    out = []
    for i, s in enumerate(items):
        s = np.asarray(s, dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] < 1:
            raise DataError(f"{what}[{i}] has shape {s.shape}; expected (T, C) with T >= 1")
        bad = np.argwhere(~np.isfinite(s))
        if len(bad):
            t, c = bad[0]
            raise DataError(
                f"{what}[{i}] has a missing or infinite value at step {t}, channel {c} "
                f"({len(bad)} such values in this series); fill them first"
            )
        out.append(s)
    channels = {s.shape[1] for s in out}
    if len(channels) != 1:
        raise DataError(f"{what} mixes series with {sorted(channels)} channels; expected one C")
    return out


@register_estimator
class SeriesClassifier(_ClassifierBase):
    """Classify numeric series: (patches ->) (Bi)LSTM -> pooling, beside a fully
    convolutional branch (LSTM-FCN), -> Dense.

    ``X`` is an ``(N, T, C)`` array, an ``(N, T)`` array (one channel), or a list of
    ``(T_i, C)`` arrays of different lengths (padded and masked inside: nothing is cut,
    pooling and batch norm see only the real steps). NaN or infinite values raise
    :class:`gatelab.errors.DataError` naming the series, step and channel.

    Architectures (``architecture``): ``"lstm"`` (the LSTM alone) and ``"lstm-fcn"`` (the
    LSTM beside convolution blocks of ``conv_width``, ``2 conv_width`` and ``conv_width``
    channels, Karim et al. 2017). ``"auto"`` chooses between them by stratified inner
    cross-validation on the training data only (``selection_folds`` folds, one model
    each, stopped after the fold during which ``selection_budget`` seconds ran out); the
    scores and the choice are in ``selection_`` and in the run folder's
    ``selection.json``.

    Sizes from the data when left to None (docs/models.md): ``patch`` = ceil(T / 64), so
    the LSTM reads at most 64 steps, each a patch projected to ``embedding_dim`` (32, or
    the raw channels without patches); the convolutional branch reads the series
    averaged over ceil(T / 128) steps; ``epochs`` enough for about 1,000 optimizer steps
    (30 to 200).

    Args:
        normalize: ``"series"`` z-normalises each series per channel over its own steps
            (the UCR convention), ``"global"`` with the training set's per-channel mean and
            standard deviation, ``None`` leaves values as they are.
        embedding_dim: size of the input projection (None: 32 with patches, else 0 = the
            raw channels). Other arguments as :class:`TextClassifier`.
    """

    task = "series-classifier"
    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("lstm-fcn", "lstm")
    _TARGET_STEPS: ClassVar[int] = 1000
    _LSTM_STEPS: ClassVar[int] = 64
    _CONV_STEPS: ClassVar[int] = 128

    def __init__(
        self,
        architecture: str = "auto",
        embedding_dim: int | None = None,
        hidden_size: int = 32,
        num_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "last",
        variant: str = "standard",
        backend: str = "auto",
        dropout: float = 0.1,
        lstm_dropout: float = 0.0,
        patch: int | None = None,
        conv_width: int = 32,
        normalize: str | None = "series",
        epochs: int | None = None,
        batch_size: int = 16,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        clip_norm: float | None = 1.0,
        patience: int | None = None,
        label_smoothing: float = 0.0,
        validation_fraction: float = 0.0,
        selection_folds: int = 3,
        selection_budget: float = 120.0,
        n_models: int = 3,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.architecture = architecture
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.variant = variant
        self.backend = backend
        self.dropout = dropout
        self.lstm_dropout = lstm_dropout
        self.patch = patch
        self.conv_width = conv_width
        self.normalize = normalize
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.patience = patience
        self.label_smoothing = label_smoothing
        self.validation_fraction = validation_fraction
        self.selection_folds = selection_folds
        self.selection_budget = selection_budget
        self.n_models = n_models
        self.seed = seed
        self.device = device

    def _normalized(self, series: list[np.ndarray]) -> list[np.ndarray]:
        if self.normalize == "series":
            out = []
            for s in series:
                std = s.std(axis=0)
                z = (s - s.mean(axis=0)) / np.where(std > 0, std, 1.0)
                if getattr(self, "level_scaler_", None) is not None:
                    # the level and scale z-normalisation removes, as constant channels
                    level = self.level_scaler_.transform(_level(s))  # (2C,)
                    z = np.concatenate([z, np.broadcast_to(level, (len(s), len(level)))], 1)
                out.append(z)
            return out
        if self.normalize == "global":
            return [self.scaler_.transform(s) for s in series]
        return series

    def _tensor_data(self, series: list[np.ndarray], targets: Tensor | None) -> TensorData:
        if series[0].shape[1] != getattr(self, "n_channels_", series[0].shape[1]):
            raise DataError(
                f"X has {series[0].shape[1]} channels; the model was fitted on {self.n_channels_}"
            )
        series = self._normalized(series)
        lengths = torch.tensor([s.shape[0] for s in series], dtype=torch.long)
        x = torch.zeros(len(series), int(lengths.max()), series[0].shape[1])
        for i, s in enumerate(series):
            x[i, : s.shape[0]] = torch.from_numpy(s.astype(np.float32))
        if targets is None:
            targets = torch.zeros(len(series), dtype=torch.long)
        return TensorData(x, lengths, targets)

    def _inputs(self, X) -> TensorData:
        self._check_fitted()
        return self._tensor_data(_series_list(X), None)

    def _check_series_args(self) -> None:
        if self.normalize not in ("series", "global", None):
            raise ValueError(f"normalize={self.normalize!r}; expected 'series', 'global' or None")
        if self.architecture not in ("auto", *self.ARCHITECTURES):
            raise ValueError(
                f"architecture={self.architecture!r}; expected 'auto' or one of "
                f"{', '.join(self.ARCHITECTURES)}"
            )
        for name, minimum in (("patch", 1), ("embedding_dim", 0), ("epochs", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
                raise ValueError(f"{name}={v!r}; expected an int >= {minimum} or None")
        for name, minimum in (("conv_width", 1), ("selection_folds", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name}={v!r}; expected an int >= {minimum}")

    def _sizes(self, max_len: int) -> dict[str, int]:
        """The data-decided sizes for series of at most ``max_len`` steps."""
        patch = self.patch if self.patch is not None else math.ceil(max_len / self._LSTM_STEPS)
        emb = self.embedding_dim
        if emb is None:
            emb = 32 if patch > 1 else 0
        return {
            "patch": patch,
            "embedding_dim": emb,
            "conv_pool": max(1, math.ceil(max_len / self._CONV_STEPS)),
        }

    def _epochs(self, n_train: int) -> int:
        if self.epochs is not None:
            return self.epochs
        steps = math.ceil(n_train / self.batch_size)
        return min(200, max(30, math.ceil(self._TARGET_STEPS / steps)))

    def _config_for(self, architecture: str, n_classes: int, sizes: dict) -> ModelConfig:
        w = self.conv_width
        return self._model_config(
            output_size=n_classes,
            input_size=self.n_channels_ * (1 if self.level_scaler_ is None else 3),
            conv_channels=[w, 2 * w, w] if architecture == "lstm-fcn" else [],
            **sizes,
        )

    def fit(
        self,
        X,
        y,
        *,
        validation_data: tuple[Any, Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> SeriesClassifier:
        """Train on series ``X`` with labels ``y``; arguments as :meth:`TextClassifier.fit`."""
        self._check_common()
        self._check_series_args()
        series = _series_list(X)
        if len(series) != len(y):
            raise DataError(f"X has {len(series)} series but y has {len(y)} labels")
        y_ids = self._encode_labels(y)
        if hasattr(self, "n_channels_"):
            del self.n_channels_
        train_idx, valid_idx = (
            (np.arange(len(series)), None)
            if validation_data is not None
            else self._split(len(series), y_ids)
        )
        train_series = [series[i] for i in train_idx]
        self.scaler_ = Scaler().fit(np.concatenate(train_series))
        self.level_scaler_ = None
        if self.normalize == "series" and not _z_normalised(train_series):
            self.level_scaler_ = Scaler().fit(np.stack([_level(s) for s in train_series]))
        train = self._tensor_data(train_series, torch.as_tensor(y_ids[train_idx]))
        self.n_channels_ = series[0].shape[1]
        valid = None
        if validation_data is not None:
            vx, vy = validation_data
            vids = np.searchsorted(self.classes_, np.asarray(vy))
            valid = self._tensor_data(_series_list(vx, "validation X"), torch.as_tensor(vids))
        elif valid_idx is not None:
            valid = self._tensor_data(
                [series[i] for i in valid_idx], torch.as_tensor(y_ids[valid_idx])
            )
        sizes = self._sizes(int(train.lengths.max()))
        architecture = self.architecture
        self.selection_ = None
        if architecture == "auto":
            self.selection_ = self._select(train, sizes)
            architecture = self.selection_["chosen"]
        self.architecture_ = architecture
        model_config = self._config_for(architecture, len(self.classes_), sizes)
        run = {"run_dir": run_dir, "resume": resume, "overwrite": overwrite}
        self._fit_tensors(train, valid, model_config, callbacks=callbacks, **run)
        if run_dir is not None and self.selection_ is not None:
            atomic_write_json(Path(run_dir) / SELECTION_FILE, self.selection_)
        return self

    def _select(self, data: TensorData, sizes: dict) -> dict[str, Any]:
        """Inner stratified cross-validation on the training data: every architecture
        trains one model per fold (seed ``seed``) and is scored on the held-out fold;
        folds run until ``selection_budget`` seconds are spent (at least one). The best
        mean accuracy wins; a tie keeps the earlier of :attr:`ARCHITECTURES`."""
        from sklearn.model_selection import StratifiedKFold

        y = data.targets.numpy()
        k = min(self.selection_folds, int(np.bincount(y).min()))
        scores: dict[str, list[float]] = {a: [] for a in self.ARCHITECTURES}
        start = time.perf_counter()
        if k < 2:
            logger.info("a class has fewer than 2 series: no inner cross-validation")
            return {"chosen": self.ARCHITECTURES[0], "scores": scores, "folds": 0, "seconds": 0.0}
        splits = StratifiedKFold(k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y)
        done = 0
        for tr, va in splits:
            tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
            part = TensorData(data.inputs[tr_t], data.lengths[tr_t], data.targets[tr_t])
            held = TensorData(data.inputs[va_t], data.lengths[va_t], data.targets[va_t])
            for arch in self.ARCHITECTURES:
                config = self._config_for(arch, len(self.classes_), sizes)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    model = build_model(config)
                fit(model, part, None, self._train_config(len(part)))
                out = _predict_batches(model.eval(), held, 256)
                scores[arch].append(float((out.argmax(-1) == held.targets).float().mean()))
            done += 1
            spent = time.perf_counter() - start > self.selection_budget
            if D.broadcast_object(spent) if D.active() else spent:  # every rank stops alike
                break
        means = {a: float(np.mean(s)) for a, s in scores.items()}
        chosen = max(self.ARCHITECTURES, key=lambda a: (means[a], -self.ARCHITECTURES.index(a)))
        seconds = time.perf_counter() - start
        logger.info("architecture by %d inner folds: %s -> %s", done, means, chosen)
        return {
            "chosen": chosen,
            "scores": scores,
            "mean_accuracy": means,
            "folds": done,
            "of_folds": k,
            "seconds": seconds,
        }

    def _artifacts(self) -> dict[str, Any]:
        out = {"scaler.json": self.scaler_.to_dict(), "labels.json": self._labels_artifact()}
        if self.level_scaler_ is not None:
            out[LEVEL_FILE] = self.level_scaler_.to_dict()
        return out

    def _load_artifacts(self, run: Path) -> None:
        self.scaler_ = _read_artifact(run, "scaler.json", Scaler.from_dict)
        self.n_channels_ = int(np.size(self.scaler_.mean))
        self.level_scaler_ = None
        if (run / LEVEL_FILE).exists():
            self.level_scaler_ = _read_artifact(run, LEVEL_FILE, Scaler.from_dict)
        self._read_labels(run)
        path = run / SELECTION_FILE
        self.selection_ = read_json(path, "selection file") if path.exists() else None
        auto = self.architecture == "auto" and isinstance(self.selection_, dict)
        self.architecture_ = self.selection_.get("chosen") if auto else self.architecture


def _level(s: np.ndarray) -> np.ndarray:
    """``(2C,)``: a series' per-channel mean and log standard deviation."""
    return np.concatenate([s.mean(axis=0), np.log(s.std(axis=0) + 1e-8)])


def _z_normalised(series: list[np.ndarray]) -> bool:
    """Whether every series is z-normalised already (mean within 0.05 of 0, standard
    deviation within 10% of 1, either ddof): the UCR archive ships most sets so."""
    return all(
        bool(np.all(np.abs(s.mean(axis=0)) < 0.05) and np.all(np.abs(s.std(axis=0) - 1) < 0.1))
        for s in series
    )


# ----------------------------------------------------------------- forecaster


@register_estimator
class Forecaster(RegressorMixin, _LSTMEstimator):
    """Forecast the next ``horizon`` values of a series: a linear autoregressive part plus
    an LSTM term, the LSTM kept only as far as it helps on validation data.

    ``fit(series)`` takes a 1-D series. Its last part (``validation_fraction``; by default
    a fifth, at least ``horizon + 7`` values) validates; the rest fits:

    1. the season ``s`` is found from the data (:func:`gatelab.models.autoregressive.find_season`,
       the autocorrelation peak of the differences) unless ``season`` is given;
    2. the linear part is an AR(p) with a constant fitted by least squares, p by AIC, on
       the values, their first differences, their seasonal differences or both (and the
       same on logs for a positive series); the transform with the lowest validation
       RMSE wins (persistence and the seasonal naive forecast are among the candidates),
       and is refitted on the whole series;
    3. the LSTM learns what the linear part leaves: its input is the window's last
       ``network steps`` values minus the window's last value (a per-window level, so a
       trend never leaves the range the network saw) when the linear part differences,
       else standard-scaled values; its target is the linear part's error, scaled;
    4. the LSTM term is then multiplied by the weight in {0, 1/4, 1/2, 3/4, 1} that gives
       the lowest validation RMSE, so the forecaster is never worse than its linear part
       on the validation data (weight 0 drops the LSTM term).

    History, model size and epochs follow from the data when left to None (docs/models.md
    lists the rules). ``fit(X, y)`` with windows ``X (N, W)`` and ``y (N,)`` or
    ``(N, horizon)`` trains on given windows instead (scikit-learn style; the linear part
    is then a direct least-squares map from the window to the horizon).

    ``predict()`` forecasts the ``horizon`` values after the training series; ``predict(s)``
    with a 1-D series ``s`` (at least ``history_steps_`` long) those after ``s``; with windows
    ``X (N, history_steps_)`` it returns ``(N, horizon)`` (``(N,)`` when ``horizon == 1``).

    Args:
        history: past values each forecast reads (None: from the season, the horizon and
            the length, at least what the linear part needs). horizon: steps at once.
        season: the seasonal period (None: found from the data; 0: none).
        linear: fit the linear part (False: the LSTM alone, on standard-scaled values).
        highway: a linear skip inside the network from its last ``highway`` inputs (0 off;
            see :class:`gatelab.models.heads.ForecastNet`).
        hidden_size: None picks 8 to 64 from the number of training windows.
        epochs: None picks enough for about 1,500 optimizer steps (20 to 300 epochs).
        patience: epochs without a better validation RMSE before stopping; None: a fifth
            of the epochs (at least 10).
        Other arguments as :class:`TextClassifier`.
    """

    task = "forecaster"
    kind = "forecaster"
    _GATE_WEIGHTS: ClassVar[tuple[float, ...]] = (0.0, 0.25, 0.5, 0.75, 1.0)
    _TARGET_STEPS: ClassVar[int] = 1500

    def __init__(
        self,
        history: int | None = None,
        horizon: int = 1,
        season: int | None = None,
        linear: bool = True,
        embedding_dim: int = 0,
        hidden_size: int | None = None,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "last",
        variant: str = "standard",
        backend: str = "auto",
        dropout: float = 0.0,
        lstm_dropout: float = 0.0,
        highway: int = 0,
        epochs: int | None = None,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        clip_norm: float | None = 1.0,
        patience: int | None = None,
        validation_fraction: float | None = None,
        n_models: int = 3,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.history = history
        self.horizon = horizon
        self.season = season
        self.linear = linear
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.variant = variant
        self.backend = backend
        self.dropout = dropout
        self.lstm_dropout = lstm_dropout
        self.highway = highway
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.n_models = n_models
        self.seed = seed
        self.device = device

    # --- arguments and the rules behind the defaults

    def _check_common(self) -> None:
        n = self.n_models
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n_models={n!r}; expected an int >= 1")
        v = self.validation_fraction
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError(f"validation_fraction={v!r}; expected None or a fraction in [0, 1)")

    def _check_sizes(self) -> None:
        for name, minimum in (("horizon", 1), ("history", 1), ("season", 0)):
            v = getattr(self, name)
            if name != "horizon" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(
                    f"{name}={v!r}; expected an int >= {minimum}"
                    + ("" if name == "horizon" else " or None")
                )
        h = self.highway
        if isinstance(h, bool) or not isinstance(h, int) or h < 0:
            raise ValueError(f"highway={h!r}; expected an int >= 0")
        if self.history is not None and h > self.history:
            raise ValueError(f"highway={h!r}; expected an int in [0, history={self.history}]")
        if self.hidden_size is not None and (
            isinstance(self.hidden_size, bool)
            or not isinstance(self.hidden_size, int)
            or self.hidden_size < 1
        ):
            raise ValueError(f"hidden_size={self.hidden_size!r}; expected an int >= 1 or None")

    def _n_valid(self, n: int) -> int:
        """Values held out at the end of a series of ``n`` for validation: a fifth (at
        least ``horizon + 7``, so that 8 forecasts are scored), none when that would
        leave fewer than 16 to fit."""
        frac = 0.2 if self.validation_fraction is None else self.validation_fraction
        if frac == 0:
            return 0
        k = max(round(frac * n), self.horizon + 7)
        return k if n - k >= 16 else 0

    def _network_steps(self, season: int, n_fit: int) -> int:
        """Values the LSTM reads: two seasons (12 without one), at least 4 horizons,
        within [8, 48] and at most a quarter of the fitting part."""
        steps = max(2 * season if season else 12, 4 * self.horizon)
        return max(4, min(steps, 48, n_fit // 4))

    def _hidden(self, n_windows: int) -> int:
        """8 to 64 units: the power of two nearest 2 sqrt(windows) (32 for 250 windows)."""
        if self.hidden_size is not None:
            return self.hidden_size
        return int(min(64, max(8, 2 ** round(math.log2(2 * math.sqrt(max(n_windows, 1)))))))

    def _epochs(self, n_train: int) -> int:
        if self.epochs is not None:
            return self.epochs
        steps = math.ceil(n_train / self.batch_size)
        return min(300, max(20, math.ceil(self._TARGET_STEPS / steps)))

    def _train_config(self, n_train: int) -> TrainConfig:
        epochs = self._epochs(n_train)
        patience = self.patience if self.patience is not None else max(10, epochs // 5)
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
            patience=patience,
            seed=self.seed,
        )

    # --- tensors

    def _windows_data(self, X: np.ndarray, Y: np.ndarray | None, linear=None) -> TensorData:
        """Network inputs ``(N, steps, 1)`` for raw windows ``X (N, >= steps)``; targets
        are the scaled errors of the linear part (``linear``, default the fitted one) when
        ``Y (N, horizon)`` is given."""
        X = np.asarray(X, dtype=np.float64)
        w = X[:, -self.network_steps_ :]
        z = np.log(np.maximum(w, 1e-12)) if self.input_["log"] else w
        if self.input_["mode"] == "level":
            z = z - z[:, -1:]
        else:
            z = z - self.input_["center"]
        x = torch.from_numpy((z / self.input_["scale"]).astype(np.float32))[..., None]
        if Y is None:
            y = torch.zeros(len(X), self.horizon)
        else:
            resid = np.asarray(Y, dtype=np.float64) - self._linear(X, linear)
            y = torch.from_numpy(self.scaler_.transform(resid).astype(np.float32))
        lengths = torch.full((len(X),), x.shape[1], dtype=torch.long)
        return TensorData(x, lengths, y)  # x (N, steps, 1), y (N, horizon)

    def _linear(self, X: np.ndarray, linear=None) -> np.ndarray:
        linear = linear if linear is not None else self.linear_
        if linear is None:
            return np.zeros((len(X), self.horizon))
        return linear.forecast(X, self.horizon)

    def _forecast(self, X: np.ndarray) -> np.ndarray:
        """``(N, horizon)`` forecasts of raw windows ``X (N, history_steps_)``."""
        out = self._outputs(self._windows_data(X, None)).numpy().astype(np.float64)
        return self._linear(X) + self.scaler_.inverse_transform(out)

    # --- fitting

    def fit(
        self,
        X,
        y=None,
        *,
        validation_data: tuple[Any, Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> Forecaster:
        """Train on a 1-D series ``X`` (``y`` None), or on windows ``X (N, W)`` with
        targets ``y``. ``validation_data``: a later series (or ``(windows, targets)``)
        to validate on instead of the end of ``X``. Other arguments as
        :meth:`TextClassifier.fit`."""
        from gatelab.data import make_windows
        from gatelab.models.autoregressive import find_season, fit_ar, fit_direct, select_linear

        self._check_common()
        self._check_sizes()
        X = _finite_array(X, "X")
        h = self.horizon
        if y is None:
            if X.ndim != 1:
                raise DataError(f"fit(X) takes a 1-D series, got shape {X.shape}; or pass y")
            n_valid = 0 if validation_data is not None else self._n_valid(len(X))
            fit_part = X[: len(X) - n_valid]
            season = self.season if self.season is not None else find_season(fit_part)
            steps = self._network_steps(season, len(fit_part))
            if self.history is not None:
                steps = min(steps, self.history)
            history = self.history if self.history is not None else steps
            linear, final, table, mode = None, None, [], "global"
            if self.linear:
                max_window = self.history or max(steps, min(len(fit_part) // 3, 64))
                p_max = min(max(12, season + 1), max_window)
                if n_valid or validation_data is not None:
                    vw, vt = self._validation_windows(X, n_valid, validation_data, max_window)
                    vw = vw[:, -max_window:]
                    (log, d, D), table = select_linear(
                        fit_part, vw, vt, season=season, max_window=max_window, p_max=p_max
                    )
                else:
                    log, d, D = False, 0, 0
                kw = dict(log=log, d=d, D=D, season=season)
                linear = fit_ar(fit_part, **kw, p_max=min(p_max, max_window - d - season * D))
                final = fit_ar(X, **kw, p_max=min(p_max, max_window - d - season * D))
                history = max(history, linear.window, final.window)
                mode = "level" if d or D else "global"
                log_input = log
            else:
                log_input = False
            if len(X) - n_valid < history + h:
                raise DataError(
                    f"a series of {len(X)} values (holding out {n_valid} to validate) is too "
                    f"short for history={history} + horizon={h}"
                )
            windows, targets = make_windows(X, history, h)
            windows, targets = windows.astype(np.float64), targets.astype(np.float64)
            n_train = len(fit_part) - history - h + 1
            self.last_window_ = X[-history:].astype(np.float64)
            z = np.log(np.maximum(fit_part, 1e-12)) if log_input else fit_part
            scale = float(np.std(np.diff(z)) if mode == "level" else np.std(z)) or 1.0
            self.input_ = {
                "mode": mode,
                "log": log_input,
                "center": float(np.mean(z)),
                "scale": scale,
            }
        else:
            windows = X
            targets = _finite_array(y, "y")
            targets = targets[:, None] if targets.ndim == 1 else targets
            if windows.ndim != 2 or (self.history is not None and windows.shape[1] != self.history):
                raise DataError(
                    f"X has shape {windows.shape}; expected (N, {self.history or 'W'}) windows"
                )
            if targets.shape != (len(windows), h):
                raise DataError(
                    f"y has shape {targets.shape}; expected ({len(windows)},) or "
                    f"({len(windows)}, {h})"
                )
            history = windows.shape[1]
            n_valid = 0 if validation_data is not None else self._n_valid(len(windows))
            n_train = len(windows) - n_valid
            season, table = 0, []
            linear = fit_direct(windows[:n_train], targets[:n_train]) if self.linear else None
            final = fit_direct(windows, targets) if self.linear else None
            steps = history
            self.last_window_ = windows[-1].astype(np.float64)
            part = windows[:n_train]
            self.input_ = {
                "mode": "global",
                "log": False,
                "center": float(part.mean()),
                "scale": float(part.std()) or 1.0,
            }
        if n_train < 1:
            raise DataError(f"no training windows left after holding out {n_valid} values")
        if self.highway > steps:
            raise ValueError(
                f"highway={self.highway!r}; expected an int in [0, {steps}] (the values "
                "the network reads)"
            )
        self.history_steps_, self.season_, self.network_steps_ = history, season, steps
        # The network learns the errors of the linear part fitted without the validation
        # values; forecasts use the one refitted on every value (`final`).
        self.linear_ = final
        resid = targets[:n_train] - self._linear(windows[:n_train], linear)
        # without a linear part the network learns the values themselves: centre them
        centre = float(np.mean(resid)) if linear is None else 0.0
        self.scaler_ = Scaler.from_dict(
            {"type": "standard_scaler", "mean": centre, "scale": float(np.std(resid)) or 1.0}
        )
        train = self._windows_data(windows[:n_train], targets[:n_train], linear)
        if validation_data is not None:
            vw, vt = self._validation_windows(X if y is None else None, 0, validation_data, history)
        else:
            vw, vt = windows[n_train:], targets[n_train:]
        valid = self._windows_data(vw, vt, linear) if len(vw) else None
        model_config = self._model_config(
            output_size=h,
            input_size=1,
            highway=self.highway,
            hidden_size=self._hidden(n_train),
        )
        self._fit_tensors(
            train,
            valid,
            model_config,
            run_dir=run_dir,
            resume=resume,
            callbacks=callbacks,
            overwrite=overwrite,
        )
        self.linear_table_ = table
        self.network_weight_ = self._gate(vw, vt, linear)
        if run_dir is not None:
            self._write_results(Path(run_dir))
        return self

    def _validation_windows(self, X, n_valid: int, validation_data, width: int):
        """``(windows (N, width), targets (N, horizon))``: those of ``X`` whose targets lie
        in its last ``n_valid`` values, or those of ``validation_data`` (a later series,
        continued from the end of ``X``, or ``(windows, targets)``)."""
        from gatelab.data import make_windows

        if validation_data is None:
            w, t = make_windows(X, width, self.horizon)
            first = len(X) - n_valid - width  # the window whose target is value n - n_valid
            return w[first:].astype(np.float64), t[first:].astype(np.float64)
        if isinstance(validation_data, tuple):
            vx, vy = validation_data
        else:
            vx, vy = validation_data, None
        vx = _finite_array(vx, "validation X")
        if vx.ndim == 1:
            joined = vx if X is None else np.concatenate([X[-width:], vx])
            w, t = make_windows(joined, width, self.horizon)
            return w.astype(np.float64), t.astype(np.float64)
        vy = _finite_array(vy, "validation y")
        return vx, (vy[:, None] if vy.ndim == 1 else vy)

    def _gate(self, vw: np.ndarray, vt: np.ndarray, linear) -> float:
        """Scale the LSTM term by the weight with the lowest validation RMSE (exactly:
        the heads' weights and biases are multiplied); 1.0 when there is no validation
        data."""
        if not len(vw):
            self.validation_metrics_ = None
            return 1.0
        net = self.scaler_.inverse_transform(
            self._outputs(self._windows_data(vw, None)).numpy().astype(np.float64)
        )
        lin = self._linear(vw, linear)
        scores = {a: float(np.sqrt(np.mean((lin + a * net - vt) ** 2))) for a in self._GATE_WEIGHTS}
        best = min(scores, key=lambda a: (scores[a], a))  # a tie drops the LSTM term
        members = self.model_.members if isinstance(self.model_, _Ensemble) else [self.model_]
        with torch.no_grad():
            for m in members:
                m.head.weight.mul_(best)
                m.head.bias.mul_(best)
                if self.highway:
                    m.highway.weight.mul_(best)
                    m.highway.bias.mul_(best)
        from gatelab.train.metrics import regression_metrics

        self.validation_metrics_ = {
            **regression_metrics(vt, lin + best * net),
            "linear_rmse": scores[0.0],
            "network_weight": best,
        }
        logger.info(
            "validation RMSE: linear %.4g, with the LSTM term %.4g; LSTM weight %.2f",
            scores[0.0],
            scores[1.0],
            best,
        )
        return best

    def predict(self, X=None) -> np.ndarray:
        """Forecasts: ``(horizon,)`` after the training series (``X`` None) or after a 1-D
        series ``X``; ``(N, horizon)`` for windows ``X (N, history_steps_)`` (``(N,)`` if
        ``horizon == 1``)."""
        self._check_fitted()
        if X is None:
            X = self.last_window_
        X = _finite_array(X, "X")
        single = X.ndim == 1
        if single:
            if len(X) < self.history_steps_:
                raise DataError(
                    f"the series has {len(X)} values; forecasting needs the last "
                    f"history={self.history_steps_}"
                )
            X = X[None, -self.history_steps_ :]
        if X.ndim != 2 or X.shape[1] != self.history_steps_:
            raise DataError(f"X has shape {X.shape}; expected (N, {self.history_steps_}) or 1-D")
        out = self._forecast(X)
        if single:
            return out[0]
        return out[:, 0] if self.horizon == 1 else out

    def _artifacts(self) -> dict[str, Any]:
        return {
            "scaler.json": self.scaler_.to_dict(),
            "window.json": {"type": "series_tail", "values": self.last_window_.tolist()},
            "forecast.json": {
                "type": "forecast_parts",
                "history": self.history_steps_,
                "season": self.season_,
                "network_steps": self.network_steps_,
                "input": self.input_,
                "linear": None if self.linear_ is None else self.linear_.to_dict(),
            },
        }

    def _load_artifacts(self, run: Path) -> None:
        from gatelab.models.autoregressive import LinearForecast

        self.scaler_ = _read_artifact(run, "scaler.json", Scaler.from_dict)

        def parts(d):
            if not isinstance(d, dict) or d.get("type") != "forecast_parts":
                raise ValueError("expected {'type': 'forecast_parts', ...}")
            linear = None if d["linear"] is None else LinearForecast.from_dict(d["linear"])
            return int(d["history"]), int(d["season"]), int(d["network_steps"]), d["input"], linear

        (
            self.history_steps_,
            self.season_,
            self.network_steps_,
            self.input_,
            self.linear_,
        ) = _read_artifact(run, "forecast.json", parts)

        def tail(d):
            if not isinstance(d, dict) or d.get("type") != "series_tail":
                raise ValueError("expected {'type': 'series_tail', 'values': [...]}")
            values = np.asarray(d["values"], dtype=np.float64)
            if values.shape != (self.history_steps_,):
                raise ValueError(f"expected {self.history_steps_} values, got shape {values.shape}")
            return values

        self.last_window_ = _read_artifact(run, "window.json", tail)


def _finite_array(X, what: str) -> np.ndarray:
    try:
        a = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} must be numbers ({err})") from None
    if a.size == 0:
        raise DataError(f"{what} is empty; expected numbers")
    bad = np.argwhere(~np.isfinite(a))
    if len(bad):
        raise DataError(
            f"{what} has a missing or infinite value at index {tuple(int(i) for i in bad[0])} "
            f"({len(bad)} in all); fill them first"
        )
    return a
