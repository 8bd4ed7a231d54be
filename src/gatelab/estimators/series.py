"""The classifier of numeric series, :class:`SeriesClassifier` (LSTM beside LSTM-FCN's
convolutional branch), with its inner cross-validation choice of architecture."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from gatelab.data import Scaler
from gatelab.errors import DataError, TrainingDiverged
from gatelab.estimators.base import TRAIN_PARAMS, ClassifierBase, read_artifact
from gatelab.estimators.budget import FitBudget, StepClock, check_budget, epoch_steps
from gatelab.estimators.ensemble import members
from gatelab.models.heads import ModelConfig, build_model
from gatelab.train import distributed as D
from gatelab.train.fit import TensorData, TrainConfig, fit, predict_batches
from gatelab.train.runs import atomic_write_json, read_json

__all__ = ["LEVEL_FILE", "SELECTION_FILE", "SeriesClassifier"]

logger = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"  # the inner cross-validation and the time budget
LEVEL_FILE = "level.json"  # scaling of each series' level and log scale
PROBE_STEPS = 10  # the optimizer steps (batches) of the probe that times a fixed architecture
# The inner CV runs only if every fold's training part holds at least this many series of
# each class: with one, every architecture scores near chance on the held-out series (on
# PigCVP, 52 classes of 2: 10-18 %), and the ranking is noise (docs/models.md).
MIN_FOLD_SERIES = 2
# The inner CV's fourth candidate: lstm-rocket's ridge alone (``head_weight=0``), scored on
# the lstm-rocket models' held-out folds (no model of its own). It is also the choice when
# no fold can run: with one or two series of a class the LSTM head, fitted to those few,
# outvoted the ridge on new series (docs/models.md, "few series per class").
RIDGE_ALONE = "ridge"


def _series_list(X, what: str = "X") -> list[np.ndarray]:
    """(N, T, C) / (N, T) arrays or a list of (T_i, C) / (T_i,) arrays -> list of (T_i, C).

    An array-like that is not a list (a pandas DataFrame, one series a row, as
    scikit-learn reads 2-D input; a tensor) is read as the array it converts to:
    iterating a DataFrame gives its column names, not its rows."""
    if not isinstance(X, (list, tuple, np.ndarray)) and hasattr(X, "__array__"):
        X = np.asarray(X)
        if X.dtype == object and X.ndim > 1:
            raise DataError(
                f"{what} is a {X.shape} table of objects (a nested DataFrame?); expected "
                "numbers (N, T) or (N, T, C), or a list of (T_i, C) arrays"
            )
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


class SeriesClassifier(ClassifierBase):
    """Classify numeric series: (patches ->) (Bi)LSTM -> pooling, beside a fully
    convolutional branch (LSTM-FCN), -> Dense.

    ``X`` is an ``(N, T, C)`` array, an ``(N, T)`` array (one channel), or a list of
    ``(T_i, C)`` arrays of different lengths (padded and masked inside: nothing is cut,
    pooling and batch norm see only the real steps). NaN or infinite values raise
    :class:`gatelab.errors.DataError` naming the series, step and channel.

    Architectures (``architecture``): ``"lstm"`` (the LSTM alone), ``"lstm-fcn"`` (the
    LSTM beside convolution blocks of ``conv_width``, ``2 conv_width`` and ``conv_width``
    channels, Karim et al. 2017) and ``"lstm-rocket"`` (MiniRocket, Dempster et al. 2021,
    beside the LSTM: a closed-form ridge over about ``kernel_features`` fixed
    random-kernel features, its strength chosen by leave-one-out error, whose scores,
    times a temperature fitted to its leave-one-out scores, are added to the LSTM head's
    logits: :mod:`gatelab.models.kernels`). ``"auto"`` chooses among them by stratified
    inner cross-validation on the training data only (``selection_folds`` folds, one
    model each, stopped after the fold during which ``selection_budget`` seconds ran
    out, or before a fold that would end past it or past half of ``time_budget``). A
    fourth candidate, ``"ridge"``, is ``lstm-rocket`` with its LSTM head off
    (``head_weight=0`` in ``model_config_``: the ridge's scores alone), scored on the
    ``lstm-rocket`` models' folds; a tie keeps the LSTM. It is also the choice, without
    folds, when a fold would train on a single series of a class (with so few series the
    LSTM head, fitted to them, outvoted the ridge on new series: docs/models.md). The
    scores and the choice are in ``selection_`` and in the run folder's
    ``selection.json``, with each ``lstm-rocket`` member's ridge strength, temperature
    and head weight (``ridge``) and what the time budget did (``budget``, also
    ``budget_``); ``architecture_`` is ``"lstm-rocket"`` for ``"ridge"``.

    Time (docs/models.md): with ``epochs=None`` the inner CV's models train about 500
    optimizer steps, the final members about 1,000, whatever N and T (the LSTM reads at
    most 64 steps), so a model costs about the same on every set. ``time_budget``
    seconds (240; None: no bound) bound the whole ``fit`` as a backstop: the inner CV
    starts no fold it cannot finish in its share, and each final member trains the
    epochs that fit in what is left at the rate the inner CV (then the members before
    it; with a fixed architecture, first a one-epoch probe of the first member over at
    most 10 batches, its weights put back after) measured, at least a quarter of its
    planned epochs. What it cut depends on the machine and its load; ``time_budget=None``
    gives the same model on every machine. With a fixed architecture ``selection.json``
    holds the choice and the budget's record alone.

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
            raw channels).
        weight_decay: AdamW's decay; None: 1.0 for ``lstm-rocket`` (the LSTM learns a
            correction to the ridge's logits), 0.01 for the others.
        time_budget: seconds for the whole ``fit`` (a number > 0), or None (no bound).
            Other arguments as :class:`TextClassifier`.
    """

    task = "series-classifier"
    _ITEMS = "series"
    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("lstm-rocket", "lstm-fcn", "lstm")
    _EPOCHS = (30, 200, 1000)  # epochs=None: about 1,000 optimizer steps, 30 to 200 passes
    # epochs=None, the inner CV's models: about half the steps (they rank, not predict)
    _SELECTION_EPOCHS = (15, 100, 500)
    _LSTM_STEPS: ClassVar[int] = 64
    _CONV_STEPS: ClassVar[int] = 128
    # weight_decay=None: AdamW's decay for each architecture. lstm-rocket's 1.0 was chosen
    # when its Dense layer read the ~10,000 kernel features (OSULeaf, one model, seeds 0
    # and 1: 86.8 / 86.0 at 0.01, 89.3 / 89.3 at 1); the closed-form ridge took that job
    # and 1.0 was kept: it holds the LSTM's correction to the ridge's logits small
    _WEIGHT_DECAY: ClassVar[dict[str, float]] = {"lstm-rocket": 1.0, "lstm-fcn": 0.01, "lstm": 0.01}

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
        kernel_features: int = 10_000,
        normalize: str | None = "series",
        epochs: int | None = None,
        batch_size: int = 16,
        lr: float = 3e-3,
        weight_decay: float | None = None,
        clip_norm: float | None = 1.0,
        patience: int | None = None,
        label_smoothing: float = 0.0,
        validation_fraction: float = 0.0,
        selection_folds: int = 3,
        selection_budget: float = 120.0,
        time_budget: float | None = 240.0,
        n_models: int = 3,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self._store_params(locals())

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

    def _items(self, X, what: str = "X") -> list[np.ndarray]:
        return _series_list(X, what)

    def _check_args(self) -> None:
        if self.normalize not in ("series", "global", None):
            raise ValueError(f"normalize={self.normalize!r}; expected 'series', 'global' or None")
        if self.architecture not in ("auto", *self.ARCHITECTURES):
            raise ValueError(
                f"architecture={self.architecture!r}; expected 'auto' or one of "
                f"{', '.join(self.ARCHITECTURES)}"
            )
        wd = self.weight_decay
        if wd is not None and (isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0):
            raise ValueError(f"weight_decay={wd!r}; expected a number >= 0 or None")
        for name, minimum in (("patch", 1), ("embedding_dim", 0), ("epochs", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
                raise ValueError(f"{name}={v!r}; expected an int >= {minimum} or None")
        check_budget("time_budget", self.time_budget)
        for name, minimum in (("conv_width", 1), ("kernel_features", 84), ("selection_folds", 2)):
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
            "kernel_length": max_len,
        }

    def _config_for(self, architecture: str, n_classes: int, sizes: dict) -> ModelConfig:
        w = self.conv_width
        rocket = architecture == "lstm-rocket"
        return self._model_config(
            output_size=n_classes,
            input_size=self.n_channels_ * (1 if self.level_scaler_ is None else 3),
            conv_channels=[w, 2 * w, w] if architecture == "lstm-fcn" else [],
            kernel_features=self.kernel_features if rocket else 0,
            kernel_ridge=rocket,
            head_weight=self._head_weight if rocket else 1.0,
            **sizes,
        )

    def _train_config(self, n_train: int, architecture: str | None = None) -> TrainConfig:
        """The training config; ``weight_decay=None`` takes the architecture's decay
        (``architecture``, else the one being fitted). The members of a fit whose LSTM head
        is off (the ridge alone) train one epoch: nothing they learn enters a prediction."""
        config = super()._train_config(n_train) if self.weight_decay is not None else None
        if config is None:
            arch = architecture or getattr(self, "architecture_", None) or self.ARCHITECTURES[0]
            fields = {name: getattr(self, name) for name in TRAIN_PARAMS}
            fields.update(
                weight_decay=self._WEIGHT_DECAY[arch], label_smoothing=self.label_smoothing
            )
            config = TrainConfig(epochs=self._epochs(n_train), **fields)
        if architecture is None and self._head_weight == 0.0:
            config = dataclasses.replace(config, epochs=1)
        return config

    def _resume_free(self, run: Path, model_config: ModelConfig) -> tuple[str, ...]:
        """A run folder from before the random-kernel branch lacks its keys: it resumes
        without the branch (``model_config.kernel_features == 0``); its ``weight_decay``
        was 0.01, which None gives without the branch (the train section holds the decay
        in effect, and is checked)."""
        free = super()._resume_free(run, model_config)
        saved = read_json(Path(run) / "config.json", "run config")
        if "time_budget" not in saved.get("params", {}):  # from before the time budget
            free = (*free, "params.time_budget")
        if "kernel_features" in saved.get("model", {}) or model_config.kernel_features:
            return free
        return (*free, "params.weight_decay", "params.kernel_features", "model.kernel_length")

    def _prepare_model(self, model) -> None:
        """The random-kernel branch's biases and ridge, from the training series being
        fitted."""
        data = getattr(self, "_bias_data", None)
        if getattr(model, "kernels", None) is not None and data is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + self._bias_draws)
                model.kernels.fit_biases(data.inputs, data.lengths, data.targets)
            self._bias_draws += 1

    def _learn(self, series: list[np.ndarray], targets: Tensor) -> TensorData:
        """The scalers of the training series (the global one, and of each series' level
        where z-normalisation removes it), and the number of channels."""
        if hasattr(self, "n_channels_"):
            del self.n_channels_
        self.scaler_ = Scaler().fit(np.concatenate(series))
        self.level_scaler_ = None
        if self.normalize == "series" and not _z_normalised(series):
            self.level_scaler_ = Scaler().fit(np.stack([_level(s) for s in series]))
        train = self._tensor_data(series, targets)
        self.n_channels_ = series[0].shape[1]
        return train

    def _fit_config(self, train: TensorData) -> ModelConfig:
        """The sizes from the data, and the architecture (``"auto"``: chosen by inner
        cross-validation on ``train``)."""
        self._budget = FitBudget(self.time_budget, getattr(self, "_fit_start", None))
        self._budget.lap("prepare")
        sizes = self._sizes(int(train.lengths.max()))
        self._bias_data, self._bias_draws = train, 0
        architecture = self.architecture
        self.selection_ = None
        self._head_weight = 1.0
        if architecture == "auto":
            self.selection_ = self._select(train, sizes)
            architecture = self.selection_["chosen"]
            if architecture == RIDGE_ALONE:  # lstm-rocket with its LSTM head off
                architecture, self._head_weight = "lstm-rocket", 0.0
            self._budget.lap("selection")
        self.architecture_ = architecture
        return self._config_for(architecture, len(self.classes_), sizes)

    def _member_config(
        self, k: int, config: TrainConfig, train: TensorData, saved_epochs: int | None, model
    ) -> TrainConfig:
        """Member ``k``'s epochs: what the time left allows at the rate measured (the
        inner CV's models of the chosen architecture, then the members before it; with a
        fixed architecture the first member's rate comes from a probe, :meth:`_probe`); a
        member resumed from its checkpoint keeps the checkpoint's epochs, and under
        torch.distributed every rank takes rank 0's (its clock decides)."""
        setup = self._budget.lap("members")  # this member's set-up (its random kernels)
        if self._budget.needs_rate(config.epochs, saved_epochs):
            self._probe(model, train, config)
        epochs = self._budget.member_epochs(
            config.epochs,
            epoch_steps(len(train), config.batch_size),
            self.n_models - k,
            setup,
            saved_epochs,
        )
        if D.active():
            epochs = self._budget.agreed(D.broadcast_object(epochs))
        if epochs < config.epochs:
            logger.info(
                "time budget: member %d trains %d of %d epochs (%.0f s left)",
                k, epochs, config.epochs, self._budget.left(),
            )  # fmt: skip
        return dataclasses.replace(config, epochs=epochs)

    def _probe(self, model, train: TensorData, config: TrainConfig) -> None:
        """Time one epoch of ``model`` on up to :data:`PROBE_STEPS` batches of ``train``
        (series drawn with ``seed``), the rate the budget bounds the first member's epochs
        by when no inner CV measured one (a fixed architecture); then put its weights and
        buffers back. The member and the global random state are left as they were, so a
        budget that cuts nothing gives the model of no budget; the probe's seconds are the
        ``probe`` phase. Only the steps are timed (the first fit of a process builds
        AdamW, whose first use imports torch._dynamo: 3.5 s, 10 times the steps of a
        PLAID probe). Trained in place, not as a copy: a copy carries no memo of the
        random-kernel features, and computing them again made the probe of a PLAID
        ``lstm-rocket`` member 27 times slower per step than the member. A probe that
        diverges (its one short epoch has no learning-rate warm-up to speak of) measures
        nothing: the weights are put back all the same and the member trains its planned
        epochs (``budget_["probe"]`` says ``diverged``)."""
        n = min(len(train), PROBE_STEPS * config.batch_size)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
        part = train.subset(pick[:n])
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        clock = StepClock()
        try:
            fit(model, part, None, dataclasses.replace(config, epochs=1), callbacks=[clock])
        except TrainingDiverged:
            self._budget.probe = {"diverged": True}
            self._budget.lap("probe")
            logger.warning("time budget: the probe diverged; the member keeps its epochs")
            return
        finally:
            model.load_state_dict(state)
            model.train()
        seconds = clock.seconds()
        self._budget.probed(seconds, clock.steps)
        self._budget.lap("probe")
        logger.info("time budget: a probe of %d series took %.2f s", n, seconds)

    def _member_trained(
        self, seconds: float, config: TrainConfig, n_train: int, epochs: int
    ) -> None:
        """The rate of the steps the member ran in this call (``epochs``, not
        ``config.epochs``: a member stopped early or resumed runs fewer)."""
        self._budget.lap("members")  # the next member's set-up is timed from here
        self._budget.member_seconds.append(seconds)
        self._budget.measured(seconds, epochs * epoch_steps(n_train, config.batch_size))

    def _after_fit(self, train_ids: np.ndarray, valid: TensorData | None, run_dir) -> None:
        self._budget.lap("members")
        self.budget_ = self._budget.record()
        logger.info("time budget: %s", self.budget_)
        if self.selection_ is not None:
            self.selection_["budget"] = self.budget_
        self._bias_data = None
        if self.selection_ is not None and self.model_config_.kernel_ridge:
            self.selection_["ridge"] = [  # each member's, on all the training series
                {
                    "alpha": float(m.kernels.ridge_alpha),
                    "temperature": float(m.kernels.ridge_temperature),
                    "head_weight": m.config.head_weight,
                }
                for m in members(self.model_)
            ]
        if run_dir is not None:  # the fit loop wrote the weights before the budget's record
            self._write_selection(Path(run_dir))

    def _write_results(self, run: Path) -> None:
        """The weights and metrics, and ``selection.json``, for ``fit`` into a run folder
        and for ``save``."""
        super()._write_results(run)
        self._write_selection(run)

    def _write_selection(self, run: Path) -> None:
        """``selection.json``: the inner CV's record, or a fixed architecture's budget
        record alone (``budget_`` is set by ``_after_fit``, after the fit loop's write)."""
        budget = getattr(self, "budget_", None)
        record = self.selection_ or {"chosen": self.architecture_, "budget": budget}
        atomic_write_json(run / SELECTION_FILE, record)

    def _select(self, data: TensorData, sizes: dict) -> dict[str, Any]:
        """Inner stratified cross-validation on the training data: every architecture
        trains one model per fold (seed ``seed``; with ``epochs=None``, about 500 optimizer
        steps, :attr:`_SELECTION_EPOCHS`) and is scored on the held-out fold. Folds run
        until ``selection_budget`` seconds are spent (at least one); with a
        ``time_budget``, a fold starts only if, as long as the mean fold so far, it ends
        within ``selection_budget`` and within half the time budget. The lstm-rocket models
        also score their ridge alone (:data:`RIDGE_ALONE`). The best mean accuracy wins; a
        tie keeps the earlier of :attr:`ARCHITECTURES`, then the ridge. No fold runs, and
        the ridge alone is taken, when a fold's training part would hold fewer than
        :data:`MIN_FOLD_SERIES` series of some class. The mean
        held-out cross-entropy is recorded too (as a tie-break it chose lstm-fcn on ACSF1,
        74.0 against 91.0: the kernel branch is confidently wrong on the folds it
        misses)."""
        from sklearn.model_selection import StratifiedKFold

        y = data.targets.numpy()
        smallest = int(np.bincount(y).min())
        k = min(self.selection_folds, smallest)
        order = (*self.ARCHITECTURES, RIDGE_ALONE)  # a tie keeps the earlier
        scores: dict[str, list[float]] = {a: [] for a in order}
        losses: dict[str, list[float]] = {a: [] for a in order}
        timing = {a: [0.0, 0] for a in self.ARCHITECTURES}  # seconds, optimizer steps
        start = time.perf_counter()
        # what the smallest class keeps in a fold's training part (its largest held-out
        # part is ceil(smallest / k): StratifiedKFold deals each class out evenly)
        if k < 2 or smallest - -(-smallest // k) < MIN_FOLD_SERIES:
            logger.info(
                "the smallest class has %d training series, fewer than %d would stay in a "
                "fold's training part: no inner cross-validation, lstm-rocket's ridge alone",
                smallest, MIN_FOLD_SERIES,
            )  # fmt: skip
            return {"chosen": RIDGE_ALONE, "scores": scores, "folds": 0, "seconds": 0.0}
        splits = StratifiedKFold(k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y)
        fold_seconds: list[float] = []
        for tr, va in splits:
            fold_start = time.perf_counter()
            tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)
            part = TensorData(data.inputs[tr_t], data.lengths[tr_t], data.targets[tr_t])
            held = TensorData(data.inputs[va_t], data.lengths[va_t], data.targets[va_t])
            for arch in self.ARCHITECTURES:
                outs = self._fold_model(arch, part, held, sizes, timing[arch])
                for name, out in outs.items():
                    scores[name].append(float((out.argmax(-1) == held.targets).float().mean()))
                    loss = torch.nn.functional.cross_entropy(out, held.targets)
                    losses[name].append(float(loss))
            fold_seconds.append(time.perf_counter() - fold_start)
            spent = time.perf_counter() - start
            stop = spent > self.selection_budget
            if not stop and self.time_budget is not None and len(fold_seconds) < k:
                stop = not self._budget.another_fold(fold_seconds, self.selection_budget - spent)
            if D.broadcast_object(stop) if D.active() else stop:  # every rank stops alike
                break
        self._bias_data, self._bias_draws = data, 0
        means = {a: float(np.mean(s)) for a, s in scores.items()}
        loss = {a: float(np.mean(v)) for a, v in losses.items()}
        chosen = max(order, key=lambda a: (means[a], -order.index(a)))
        self._budget.measured(*timing["lstm-rocket" if chosen == RIDGE_ALONE else chosen])
        done = len(fold_seconds)
        logger.info(
            "architecture by %d inner folds (%s s each): %s -> %s",
            done, [round(f) for f in fold_seconds], means, chosen,
        )  # fmt: skip
        return {
            "chosen": chosen,
            "scores": scores,
            "mean_accuracy": means,
            "mean_cross_entropy": loss,
            "folds": done,
            "of_folds": k,
            "seconds": time.perf_counter() - start,
            "fold_seconds": fold_seconds,
            "architecture_seconds": {a: t[0] for a, t in timing.items()},
        }

    def _fold_model(
        self, arch: str, part: TensorData, held: TensorData, sizes, timing
    ) -> dict[str, Tensor]:
        """One inner-CV model of ``arch`` trained on ``part``: its outputs on ``held``, by
        candidate (``lstm-rocket`` also gives its ridge's alone, :data:`RIDGE_ALONE`);
        ``timing`` (``[seconds, steps]``) gains its training's seconds and steps."""
        config = self._train_config(len(part), arch)
        if self.epochs is None:
            config = dataclasses.replace(
                config, epochs=self._epochs(len(part), self._SELECTION_EPOCHS)
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_model(self._config_for(arch, len(self.classes_), sizes))
        self._bias_data = part
        self._prepare_model(model)
        fit_start = time.perf_counter()
        history = fit(model, part, None, config)
        timing[0] += time.perf_counter() - fit_start
        timing[1] += len(history.epochs) * epoch_steps(len(part), config.batch_size)
        outs = {arch: predict_batches(model.eval(), held, 256)}
        if model.config.kernel_ridge:
            outs[RIDGE_ALONE] = _ridge_scores(model, held)
        return outs

    def _artifacts(self) -> dict[str, Any]:
        out = {"scaler.json": self.scaler_.to_dict(), "labels.json": self._labels_artifact()}
        if self.level_scaler_ is not None:
            out[LEVEL_FILE] = self.level_scaler_.to_dict()
        return out

    def _load_artifacts(self, run: Path) -> None:
        self.scaler_ = read_artifact(run, "scaler.json", Scaler.from_dict)
        self.n_channels_ = int(np.size(self.scaler_.mean))
        self.level_scaler_ = None
        if (run / LEVEL_FILE).exists():
            self.level_scaler_ = read_artifact(run, LEVEL_FILE, Scaler.from_dict)
        self._read_labels(run)
        path = run / SELECTION_FILE
        saved = read_json(path, "selection file") if path.exists() else None
        auto = self.architecture == "auto" and isinstance(saved, dict)
        self.selection_ = saved if auto else None  # a fixed architecture's holds no choice
        chosen = saved.get("chosen") if auto else self.architecture
        self.architecture_ = "lstm-rocket" if chosen == RIDGE_ALONE else chosen
        # None for a folder without a record (not a stale one from an earlier fit)
        self.budget_ = saved.get("budget") if isinstance(saved, dict) else None


@torch.no_grad()
def _ridge_scores(model, data: TensorData, chunk: int = 64) -> Tensor:
    """An ``lstm-rocket`` model's ridge scores alone on ``data``: ``(N, classes)``."""
    device = model.kernels.weight.device
    parts = [
        model.kernels(data.inputs[i : i + chunk].to(device), data.lengths[i : i + chunk].to(device))
        for i in range(0, len(data), chunk)
    ]
    return torch.cat(parts).float().cpu()


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
