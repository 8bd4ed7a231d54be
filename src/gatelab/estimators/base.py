"""What the estimators share: the scikit-learn base (configs from the constructor
arguments, fitting one model or an ensemble, prediction plumbing), run-folder save / load,
the registry of estimator task kinds, and the classifiers' labels and validation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import Tensor, nn

from gatelab.data import Labels
from gatelab.errors import DataError
from gatelab.estimators.ensemble import Ensemble
from gatelab.models.heads import ModelConfig, build_model
from gatelab.train import fit as fitting
from gatelab.train import runs
from gatelab.train.fingerprints import differences
from gatelab.train.runs import RunFolderError

__all__ = ["ClassifierBase", "LSTMEstimator"]

logger = logging.getLogger(__name__)

# Relative tolerance of the artifacts a resumed run recomputes from its data (scalers, a
# fitted linear part): a run folder made on a Zen 3 read scale 0.16476469796946414, the
# same data on a Xeon 0.16476469796946352 (4e-15 apart; the linear part's coefficients up
# to 3e-14); other data differ far more, and their fingerprints are checked first.
ARTIFACT_RTOL = 1e-9

# the constructor arguments that are ModelConfig fields of the same name
MODEL_PARAMS = (
    "embedding_dim",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "variant",
    "backend",
    "pooling",
    "dropout",
    "lstm_dropout",
)
# the constructor arguments that are TrainConfig fields of the same name
TRAIN_PARAMS = ("batch_size", "lr", "weight_decay", "clip_norm", "patience", "seed")


class LSTMEstimator(BaseEstimator):
    """What the three estimators share: configs, fitting, ensembles, run folders.

    A subclass names its run-folder task kind in ``task`` (its key in
    :data:`gatelab.tasks.registry.TASK_KINDS`)
    and its model kind in ``kind`` (:attr:`gatelab.models.heads.ModelConfig.kind`), and
    sets ``_EPOCHS``, the rule behind ``epochs=None``.
    """

    task: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    # epochs=None: enough passes for about `steps` optimizer steps, within [low, high]
    _EPOCHS: ClassVar[tuple[int, int, int]] = (4, 8, 800)  # (low, high, steps)
    _VALIDATION_NONE_OK: ClassVar[bool] = False  # validation_fraction=None has a meaning

    def _store_params(self, args: dict[str, Any]) -> None:
        """Keep each constructor argument as given, under its own name (scikit-learn's
        contract); ``args`` is the constructor's ``locals()``."""
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self":
                setattr(self, name, args[name])

    # --- configs from the constructor arguments

    def _model_config(self, **data) -> ModelConfig:
        """The model config from the constructor arguments; ``data`` adds the sizes the
        data decide and overrides arguments resolved from the data (e.g. hidden_size)."""
        fields = {name: getattr(self, name) for name in MODEL_PARAMS}
        return ModelConfig(kind=self.kind, **{**fields, **data})

    def _epochs(self, n_train: int, rule: tuple[int, int, int] | None = None) -> int:
        """``epochs``, or for None the rule ``_EPOCHS`` (or ``rule``), ``(low, high,
        steps)``: about ``steps`` optimizer steps, within ``low..high`` passes (the
        classifier of texts: about 800 optimizer steps, at least 4 and at most 8 passes; 4
        on SST-2's 67k phrases, 8 on MR's 10k snippets)."""
        if self.epochs is not None:
            return self.epochs
        low, high, target = rule or self._EPOCHS
        steps = math.ceil(n_train / self.batch_size)
        return min(high, max(low, math.ceil(target / steps)))

    def _train_config(self, n_train: int) -> fitting.TrainConfig:
        fields = {name: getattr(self, name) for name in TRAIN_PARAMS}
        smoothing = getattr(self, "label_smoothing", 0.0)  # the classifiers'
        return fitting.TrainConfig(
            epochs=self._epochs(n_train), label_smoothing=smoothing, **fields
        )

    def _check_common(self) -> None:
        n = self.n_models
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n_models={n!r}; expected an int >= 1")
        v, none_ok = self.validation_fraction, self._VALIDATION_NONE_OK
        if (v is None and not none_ok) or (v is not None and not 0.0 <= v < 1.0):
            expected = "None or a fraction" if none_ok else "a fraction"
            raise ValueError(f"validation_fraction={v!r}; expected {expected} in [0, 1)")

    # --- fitting

    def _fit_tensors(
        self,
        train: fitting.TensorData,
        valid: fitting.TensorData | None,
        model_config: ModelConfig,
        *,
        run_dir,
        resume: bool,
        callbacks: Sequence[fitting.Callback],
        metric_transform=None,
        overwrite: bool = False,
    ) -> None:
        run = Path(run_dir) if run_dir is not None else None
        with runs.run_lock(run) if run is not None else contextlib.nullcontext():
            self._fit_run(
                train, valid, model_config, run, resume, overwrite, callbacks, metric_transform
            )

    def _fit_run(
        self, train, valid, model_config, run, resume, overwrite, callbacks, metric_transform
    ) -> None:
        train_config = self._train_config(len(train))
        if run is not None:
            inputs = {
                "train": fitting.data_fingerprint(train),
                "valid": fitting.data_fingerprint(valid),
            }
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
            ckpt = (
                run / f"{runs.MEMBER_PREFIX}{k}" if run is not None and self.n_models > 1 else run
            )
            member_config = self._member_config(
                k,
                dataclasses.replace(train_config, seed=seed),
                train,
                _saved_epochs(ckpt) if resume and ckpt is not None else None,
                model,
            )
            start_epoch = _StartEpoch()
            member_start = time.perf_counter()
            history = fitting.fit(
                model,
                train,
                valid,
                member_config,
                checkpoint_dir=ckpt,
                resume=resume,
                callbacks=[*callbacks, start_epoch],
                metric_transform=metric_transform,
            )
            seconds = time.perf_counter() - member_start
            ran = len(history.epochs) - start_epoch.epoch  # in this call, not restored ones
            self._member_trained(seconds, member_config, len(train), ran)
            members.append(model)
            histories.append(history)
        self.model_config_ = model_config
        self.train_config_ = train_config
        self.model_ = members[0] if len(members) == 1 else Ensemble(members).eval()
        self.history_: list[fitting.History] = histories
        self.validation_metrics_: dict[str, float] | None = None
        if valid is not None:
            out = fitting.predict_batches(self.model_, valid, train_config.eval_batch_size)
            y = valid.targets
            if metric_transform is not None:
                out, y = metric_transform(out, y)
            self.validation_metrics_ = fitting.evaluate_outputs(self.model_, out, y)
        self.train_seconds_ = time.perf_counter() - start
        if run is not None:
            self._write_results(run)

    def _start_run(self, run: Path, model_config, train_config, resume, overwrite, inputs) -> None:
        now = {**self._config_sections(model_config, train_config), "inputs": inputs}
        old = resume and not overwrite and (run / runs.CONFIG_FILE).is_file()
        free = self._resume_free(run, model_config) if old else ()  # start_run checks the rest
        saved = runs.start_run(run, self.task, now, resume=resume, overwrite=overwrite, free=free)
        if saved is None:  # a fresh run: artifacts, then the config, which marks a run
            self._write_config(run, model_config, train_config, inputs)
            return
        for name, content in self._artifacts().items():
            # the data's fingerprints matched (start_run): what is computed from them may
            # still differ in the last bits on another CPU or BLAS (a fitted linear part)
            found = differences(runs.read_json(run / name, name), content, rel_tol=ARTIFACT_RTOL)
            if found:
                raise RunFolderError(
                    f"cannot resume '{run}': '{run / name}' differs from what this run's "
                    f"training data give (different data?): {'; '.join(found)}"
                )

    def _resume_free(self, run: Path, model_config: ModelConfig) -> tuple[str, ...]:
        """Dotted config keys that may differ when resuming ``run`` with ``model_config``:
        the model fields an older run folder lacks where ``model_config`` holds their
        default (what reading that folder gives them). Subclasses add their own."""
        saved = runs.read_config(run, self.task).get("model", {})
        free = []
        for f in dataclasses.fields(model_config):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.name not in saved and getattr(model_config, f.name) == default:
                free.append(f"model.{f.name}")
        return tuple(free)

    def _config_sections(self, model_config, train_config) -> dict[str, Any]:
        return {
            "params": _json_params(self.get_params()),
            "model": model_config.to_dict(),
            "train": train_config.to_dict(),
            "n_models": self.n_models,
        }

    def _write_config(self, run: Path, model_config, train_config, inputs=None) -> None:
        for name, content in self._artifacts().items():
            runs.atomic_write_json(run / name, content)
        sections = self._config_sections(model_config, train_config)
        if inputs is not None:
            sections["inputs"] = inputs
        runs.write_config(run, self.task, **sections)

    def _write_results(self, run: Path) -> None:
        runs.atomic_write_tensors(run / runs.WEIGHTS_FILE, self.model_.state_dict())
        metrics = {
            "validation": self.validation_metrics_,
            "train_seconds": self.train_seconds_,
            "history": [h.to_dict() for h in self.history_],
        }
        runs.atomic_write_json(run / runs.METRICS_FILE, metrics)

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
        with runs.run_lock(run):
            runs.start_run(run, self.task, {}, resume=False, overwrite=True)
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
        config = runs.read_config(run, cls.task)
        try:
            est = cls(**runs.section(config, "params", run))
            model_config = ModelConfig.from_dict(runs.section(config, "model", run))
            train_config = fitting.TrainConfig.from_dict(runs.section(config, "train", run))
            n_models = int(runs.section(config, "n_models", run))
        except (TypeError, ValueError) as err:
            if isinstance(err, RunFolderError):
                raise
            raise RunFolderError(
                f"run config '{run / runs.CONFIG_FILE}' is corrupt ({err})"
            ) from err
        with torch.random.fork_rng(devices=[]):
            members = [build_model(model_config) for _ in range(n_models)]
        model = members[0] if n_models == 1 else Ensemble(members)
        model = est._loaded_model(model, run)
        runs.load_state(model, run)
        est._load_artifacts(run)
        est.model_config_ = model_config
        est.train_config_ = train_config
        est.model_ = model.to(torch.device(est.device)).eval()
        metrics = runs.read_json(run / runs.METRICS_FILE, "metrics file")
        try:
            est.history_ = [fitting.History.from_dict(h) for h in metrics.get("history", [])]
            est.validation_metrics_ = metrics.get("validation")
            est.train_seconds_ = metrics.get("train_seconds")
        except (TypeError, ValueError, AttributeError) as err:
            raise RunFolderError(f"metrics file '{run / runs.METRICS_FILE}' is corrupt") from err
        return est

    def _loaded_model(self, model: nn.Module, run: Path) -> nn.Module:
        """The model whose weights ``run`` holds, from the one built by its config (hook:
        parts added after training, e.g. the text classifier's linear part)."""
        return model

    def _prepare_model(self, model: nn.Module) -> None:
        """Set data-derived, untrained parts of a freshly built model (hook)."""

    def _member_config(
        self,
        k: int,
        config: fitting.TrainConfig,
        train: fitting.TensorData,
        saved_epochs: int | None,
        model: nn.Module,
    ) -> fitting.TrainConfig:
        """The training config of ensemble member ``k`` (its seed set) on ``train``, e.g.
        fewer epochs for a time budget (hook); ``saved_epochs``: the epochs of the member's
        checkpoint being resumed (None: no checkpoint); ``model``: the member as built and
        prepared, before it trains (to be left as it is)."""
        return config

    def _member_trained(
        self, seconds: float, config: fitting.TrainConfig, n_train: int, epochs: int
    ) -> None:
        """A member trained with ``config`` on ``n_train`` samples took ``seconds`` for the
        ``epochs`` it trained in this call (fewer than ``config.epochs`` when it stopped
        early; a resumed member's only those after its checkpoint) (hook)."""

    def _artifacts(self) -> dict[str, Any]:
        """``{file name: JSON content}`` of what turns raw input into tensors."""
        return {}

    def _load_artifacts(self, run: Path) -> None:
        pass

    # --- prediction

    def _outputs(self, data: fitting.TensorData) -> Tensor:
        self._check_fitted()
        return fitting.predict_batches(self.model_, data, self.train_config_.eval_batch_size)


class _StartEpoch(fitting.Callback):
    """The epoch a ``fit`` call starts from (> 0: resumed from a checkpoint)."""

    epoch = 0

    def on_train_begin(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        self.epoch = start_epoch


def _saved_epochs(ckpt: Path) -> int | None:
    """The ``epochs`` of the training config saved in checkpoint folder ``ckpt``; None
    when there is no checkpoint (or it holds no readable value: ``fit`` then reports the
    checkpoint itself)."""
    path = ckpt / runs.CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        return int(runs.read_json(path, "checkpoint")["train_config"]["epochs"])
    except (KeyError, TypeError, ValueError, RunFolderError):
        return None


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    for k, v in params.items():
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise TypeError(f"parameter {k}={v!r} cannot be saved in a run folder (not JSON)")
    return dict(params)


def read_artifact(run: Path, name: str, reader):
    """``reader`` applied to the JSON file ``name`` of run folder ``run``; what it raises
    on bad content becomes a RunFolderError naming the file."""
    content = runs.read_json(run / name, name)
    try:
        return reader(content)
    except (DataError, TypeError, ValueError, KeyError) as err:
        raise RunFolderError(f"'{run / name}' is corrupt ({err})") from err


class ClassifierBase(ClassifierMixin, LSTMEstimator):
    """Labels <-> ids, stratified validation split, the fit sequence, predict /
    predict_proba.

    A subclass supplies the hooks ``_items`` (raw input -> a checked list of samples),
    ``_check_args``, ``_learn`` (learn the input state, e.g. a vocabulary, from the
    training samples and return their tensors), ``_tensor_data`` (samples -> tensors with
    that state), ``_fit_config`` and ``_after_fit``.
    """

    kind = "classifier"
    _ITEMS: ClassVar[str] = "samples"  # what X holds, for messages

    def fit(
        self,
        X,
        y,
        *,
        validation_data: tuple[Any, Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[fitting.Callback] = (),
    ) -> Self:
        """Learn what turns ``X`` into tensors (vocabulary, scaling) and train.

        Args:
            X: N samples (texts, series: see the class). y: N labels (any sortable values).
            validation_data: ``(X_valid, y_valid)`` for early stopping and best weights
                (otherwise ``validation_fraction`` of ``X`` is held out).
            run_dir: write a run folder there, with a checkpoint each epoch.
            resume: continue the interrupted run in ``run_dir`` (the same data and
                settings; each difference is named). Without it (or ``overwrite``), a
                ``run_dir`` that holds a run is refused.
            overwrite: replace the run ``run_dir`` holds.
            callbacks: :class:`gatelab.train.fit.Callback` objects (e.g. progress).
        """
        self._fit_start = time.perf_counter()  # a fit's time budget counts from here
        self._check_common()
        self._check_args()
        items = self._items(X)
        if len(items) != len(y):
            raise DataError(f"X has {len(items)} {self._ITEMS} but y has {len(y)} labels")
        y_ids = self._encode_labels(y)
        if validation_data is not None:
            train_idx, valid_idx = np.arange(len(items)), None
        else:
            train_idx, valid_idx = self._split(len(items), y_ids)
        train = self._learn([items[i] for i in train_idx], torch.as_tensor(y_ids[train_idx]))
        valid, valid_items = None, None
        if validation_data is not None:
            vx, vy = validation_data
            valid_items = self._items(vx, "validation X")
            valid = self._tensor_data(valid_items, torch.as_tensor(self._label_ids(vy)))
        elif valid_idx is not None:
            valid_items = [items[i] for i in valid_idx]
            valid = self._tensor_data(valid_items, torch.as_tensor(y_ids[valid_idx]))
        model_config = self._fit_config(train)
        run = {"run_dir": run_dir, "resume": resume, "overwrite": overwrite}
        self._valid_items = valid_items  # the raw validation items, for _after_fit
        try:
            self._fit_tensors(train, valid, model_config, callbacks=callbacks, **run)
            self._after_fit(y_ids[train_idx], valid, run_dir)
        finally:
            self._valid_items = None
        return self

    def _items(self, X, what: str = "X") -> list:
        raise NotImplementedError

    def _check_args(self) -> None:
        """Check the constructor arguments ``fit`` reads beyond the shared ones (hook)."""

    def _learn(self, items: list, targets: Tensor) -> fitting.TensorData:
        raise NotImplementedError

    def _tensor_data(self, items: list, targets: Tensor | None) -> fitting.TensorData:
        raise NotImplementedError

    def _fit_config(self, train: fitting.TensorData) -> ModelConfig:
        raise NotImplementedError

    def _after_fit(self, train_ids: np.ndarray, valid, run_dir) -> None:
        """After training, with the training label ids and the validation data (hook);
        ``self._valid_items`` holds the validation items themselves (or None)."""

    def _inputs(self, X) -> fitting.TensorData:
        self._check_fitted()
        return self._tensor_data(self._items(X), None)

    def _predict_outputs(self, X) -> Tensor:
        """The model's outputs on raw ``X`` (hook: the text classifier's in chunks)."""
        return self._outputs(self._inputs(X))

    def _label_ids(self, y) -> np.ndarray:
        """Ids of labels ``y`` (of ``validation_data``), each among ``classes_``."""
        y = np.asarray(y)
        unknown = set(np.unique(y)) - set(self.classes_.tolist())
        if unknown:
            raise DataError(
                f"validation labels {sorted(map(str, unknown))} are not among the training "
                f"classes {self.classes_.tolist()}"
            )
        return np.searchsorted(self.classes_, y)

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

        self.classes_ = read_artifact(run, "labels.json", reader)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, columns in ``classes_`` order."""
        return torch.softmax(self._predict_outputs(X), dim=-1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample, ``(N,)`` (values of ``classes_``)."""
        return self.classes_[self._predict_outputs(X).argmax(-1).numpy()]
