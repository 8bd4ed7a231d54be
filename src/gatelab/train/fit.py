"""One fit loop for every LSTM -> Dense model: AdamW, clipping, schedule, early stopping.

:func:`fit` trains a :mod:`gatelab.models.heads` model on :class:`TensorData`:

- AdamW (decoupled weight decay on matrices, none on biases and gains), gradient-norm
  clipping, a linear-warmup + cosine learning-rate schedule stepped every batch;
- early stopping on a validation metric, keeping the best weights;
- fixed seeds: the same config and data give bit-identical weights twice (the shuffle of
  each epoch comes from its own generator seeded by ``(seed, epoch)``; dropout uses the
  global torch RNG, seeded at the start and saved in every checkpoint);
- with a ``checkpoint_dir``, a checkpoint each epoch (model, optimizer, scheduler, RNG
  states, epoch, early-stopping state and best weights; tensors in safetensors, the rest
  in JSON), from which ``resume=True`` continues to the very weights an uninterrupted run
  ends with;
- a non-finite loss stops training with a :class:`TrainingError`; the last good
  checkpoint stays on disk.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop trains data-parallel
(:mod:`gatelab.train.distributed`): DDP over the ranks, each taking its part of every global
batch of ``batch_size`` sequences, metrics all-reduced, validation and early stopping on
rank 0 (broadcast), checkpoints written by rank 0 only. In one process nothing changes.

The loop logs and never prints; progress goes to callbacks (:class:`RichProgress` draws
a ``rich`` progress bar when the command line asks for one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.errors import GatelabError
from gatelab.train import distributed as D
from gatelab.train import metrics as M
from gatelab.train.runs import (
    CHECKPOINT_FILE,
    RunFolderError,
    check_same,
    checkpoint_tensors,
    fingerprint_tensors,
    json_safe,
    optimizer_from_tensors,
    read_checkpoint,
    remove_checkpoint,
    run_lock,
    set_rng_tensors,
    write_checkpoint,
)

__all__ = [
    "Callback",
    "History",
    "RichProgress",
    "TensorData",
    "TrainConfig",
    "TrainingError",
    "batch_indices",
    "fit",
    "predict_batches",
]

logger = logging.getLogger(__name__)

SCHEDULES = ("cosine", "constant", "linear")


class TrainingError(GatelabError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


# ----------------------------------------------------------------- config and data


@dataclass
class TrainConfig:
    """How :func:`fit` trains; JSON-serialisable.

    Attributes:
        epochs: passes over the training data (at most, with early stopping).
        batch_size: sequences per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled decay, on weight matrices and embeddings only.
        clip_norm: clip the global gradient norm to this (None: no clipping).
        schedule: ``"cosine"`` (linear warmup, then cosine decay to ``min_lr`` x lr),
            ``"linear"`` (warmup, then linear decay) or ``"constant"`` (warmup, then flat).
        warmup: fraction of all steps spent warming up linearly from 0.
        min_lr: the final learning rate as a fraction of ``lr``.
        patience: stop after this many epochs without a better validation score (None:
            never stop early). The best weights are kept whenever there is validation data.
        monitor: the validation metric for early stopping and best weights: ``"accuracy"``,
            ``"macro_f1"``, ``"rmse"``, ``"mae"``, ``"loss"``; None picks accuracy for a
            classifier, rmse otherwise.
        seed: seeds the dropout RNG and each epoch's shuffle.
        bucket: group sequences of similar length into batches (less padding, faster).
        label_smoothing: of the cross-entropy loss (classifiers).
        loss: ``"auto"`` (cross-entropy for classifiers, MSE otherwise), ``"mse"``,
            ``"huber"`` (regression).
        eval_batch_size: sequences per step when predicting.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0
    schedule: str = "cosine"
    warmup: float = 0.05
    min_lr: float = 0.0
    patience: int | None = 3
    monitor: str | None = None
    seed: int = 0
    bucket: bool = True
    label_smoothing: float = 0.0
    loss: str = "auto"
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; expected an int >= 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r}; expected an int")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience={self.patience!r}; expected an int >= 1 or None")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr={self.lr!r}; expected a positive number")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r}; expected >= 0")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm={self.clip_norm!r}; expected a positive number or None")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup={self.warmup!r}; expected a fraction in [0, 1)")
        if not 0.0 <= self.min_lr <= 1.0:
            raise ValueError(f"min_lr={self.min_lr!r}; expected a fraction in [0, 1]")
        if self.monitor is not None and self.monitor not in M.GREATER_IS_BETTER:
            raise ValueError(
                f"monitor={self.monitor!r}; expected one of {', '.join(M.GREATER_IS_BETTER)}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing!r}; expected [0, 1)")
        if self.loss not in ("auto", "mse", "huber"):
            raise ValueError(f"loss={self.loss!r}; expected 'auto', 'mse' or 'huber'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown train config keys {unknown}; expected some of {sorted(names)}"
            )
        return cls(**d)


@dataclass
class TensorData:
    """A padded data set: ``inputs`` ``(N, T)`` token ids or ``(N, T, C)`` floats, their
    ``lengths (N,)`` (real steps, padding at the end) and ``targets``: class ids ``(N,)``
    (int64) or real values ``(N, K)`` (float)."""

    inputs: Tensor
    lengths: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        N = self.inputs.shape[0]
        if N == 0:
            raise ValueError("a data set needs at least one sequence; got none")
        if self.lengths.shape != (N,) or self.targets.shape[0] != N:
            raise ValueError(
                f"inputs {tuple(self.inputs.shape)}, lengths {tuple(self.lengths.shape)} and "
                f"targets {tuple(self.targets.shape)} must share the first dimension N={N}"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, index: Tensor | Sequence[int]) -> TensorData:
        index = torch.as_tensor(index, dtype=torch.long)
        return TensorData(self.inputs[index], self.lengths[index], self.targets[index])


@dataclass
class History:
    """What :func:`fit` did: one dict of logs per epoch, and the best epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    monitor: str | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**d)


# ----------------------------------------------------------------- callbacks


class Callback:
    """Hooks :func:`fit` calls; override any. ``logs`` hold Python floats."""

    def on_train_begin(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        """Before the first epoch (``start_epoch`` > 0 when resuming)."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based)."""

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        """After each step: running ``loss`` and running training metric of the epoch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch (and its checkpoint): ``loss``, ``val_*`` metrics, ``lr``."""

    def on_train_end(self, history: History) -> None:
        """After the last epoch, with the best weights restored."""


class RichProgress(Callback):
    """A ``rich`` progress bar with the running loss and metric, and one line per epoch.

    Args:
        console: a ``rich.console.Console`` (default: a new one on stderr).
        description: the label in front of the bar.
    """

    def __init__(self, console=None, description: str = "train") -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.description = description
        self._progress = None
        self._task = None

    def on_train_begin(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.epochs, self.steps = epochs, steps_per_epoch
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        if start_epoch:
            self.console.print(f"resuming after epoch {start_epoch}/{epochs}")

    def on_epoch_begin(self, epoch: int) -> None:
        self._task = self._progress.add_task(
            f"{self.description} {epoch + 1}/{self.epochs}", total=self.steps, stats=""
        )

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        stats = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        self._progress.update(self._task, completed=step + 1, stats=stats)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self._progress.remove_task(self._task)
        stats = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {stats}")

    def on_train_end(self, history: History) -> None:
        if self._progress is not None:
            self._progress.stop()
        if history.best_epoch is not None:
            self.console.print(
                f"best epoch {history.best_epoch + 1}: {history.monitor} "
                f"{history.best_score:.4f}" + ("  (stopped early)" if history.stopped_early else "")
            )


# ----------------------------------------------------------------- batching


def _shuffle_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def batch_indices(
    lengths: Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    bucket: bool = True,
) -> list[Tensor]:
    """The index batches of one epoch.

    With ``shuffle``, a permutation from a generator seeded by ``(seed, epoch)``; with
    ``bucket``, each run of ``50 * batch_size`` shuffled sequences is sorted by length
    before it is cut into batches, whose order is then shuffled: batches hold sequences
    of similar length (little padding) and still differ from epoch to epoch.
    """
    N = len(lengths)
    g = _shuffle_generator(seed, epoch) if shuffle else None
    order = torch.randperm(N, generator=g) if shuffle else torch.arange(N)
    varied = bool((lengths != lengths[0]).any()) if N else False
    if not (bucket and varied):
        return list(order.split(batch_size))
    batches: list[Tensor] = []
    chunk = 50 * batch_size
    for start in range(0, N, chunk):
        part = order[start : start + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches += list(part.split(batch_size))
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def _take(data: TensorData, index: Tensor, device: torch.device):
    lengths = data.lengths[index]
    T = int(lengths.max())
    x = data.inputs[index, :T].to(device)
    return x, lengths.to(device), data.targets[index].to(device)


@torch.no_grad()
def predict_batches(model: nn.Module, data: TensorData, batch_size: int = 256) -> Tensor:
    """The model's outputs ``(N, out)`` on ``data``, in data order (eval mode, no grad).

    Batches are sorted by length (less padding); the model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = torch.argsort(data.lengths, stable=True)
    outs = []
    try:
        for index in order.split(batch_size):
            x, lengths, _ = _take(data, index, device)
            outs.append(model(x, lengths).float().cpu())
    finally:
        model.train(was_training)
    out = torch.cat(outs)
    result = torch.empty_like(out)
    result[order] = out
    return result


# ----------------------------------------------------------------- the loop


def _is_classifier(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "kind", "classifier") == "classifier"


def _loss_fn(model: nn.Module, config: TrainConfig):
    if _is_classifier(model):
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=config.label_smoothing)
    if config.loss == "huber":
        return lambda out, y: F.huber_loss(out, y.reshape(out.shape))
    return lambda out, y: F.mse_loss(out, y.reshape(out.shape))


def evaluate_outputs(model: nn.Module, outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """Metrics of raw model outputs against targets: accuracy and macro F1 for a
    classifier (``outputs`` are logits), RMSE and MAE otherwise (in the targets' units)."""
    if _is_classifier(model):
        return M.classification_metrics(targets.numpy(), outputs.argmax(-1).numpy())
    return M.regression_metrics(targets.reshape(outputs.shape).numpy(), outputs.numpy())


def _schedule(config: TrainConfig, total_steps: int):
    warm = int(config.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        decay = (
            0.5 * (1.0 + math.cos(math.pi * progress))
            if config.schedule == "cosine"
            else 1.0 - progress
        )
        return config.min_lr + (1.0 - config.min_lr) * decay

    return factor


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    # The fused kernel updates all parameters in one pass: on CPU it takes the optimizer
    # step of an embedding model (most parameters, every step) from ~30% to ~10% of the
    # step time. Same update rule; it needs floating-point CPU/CUDA parameters.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)


class _Running:
    """Running loss and training metric over one epoch."""

    def __init__(self, classifier: bool) -> None:
        self.classifier = classifier
        self.n = 0
        self.loss_sum = 0.0
        self.hits = 0.0
        self.sq = 0.0
        self.count = 0

    def update(self, loss: float, out: Tensor, y: Tensor) -> dict[str, float]:
        b = out.shape[0]
        self.n += b
        self.loss_sum += loss * b
        with torch.no_grad():
            if self.classifier:
                self.hits += float((out.argmax(-1) == y).sum())
                self.count += b
                return {"loss": self.loss_sum / self.n, "accuracy": self.hits / self.count}
            self.sq += float(((out - y.reshape(out.shape)) ** 2).sum())
            self.count += out.numel()
            return {"loss": self.loss_sum / self.n, "rmse": math.sqrt(self.sq / self.count)}

    def reduced(self) -> dict[str, float]:
        """The epoch's loss and metric over all ranks (sums all-reduced)."""
        n, loss_sum, hits, sq, count = D.all_reduce_sums(
            [self.n, self.loss_sum, self.hits, self.sq, self.count]
        )
        logs = {"loss": loss_sum / max(n, 1)}
        if self.classifier:
            logs["accuracy"] = hits / max(count, 1)
        else:
            logs["rmse"] = math.sqrt(sq / max(count, 1))
        return logs


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The dropout seed of one rank in one epoch of a distributed run: a function of
    ``(seed, epoch, rank)`` only, so that a run resumed at an epoch boundary, with any
    number of ranks, continues as an uninterrupted run with that number does."""
    return (seed * 1_000_003 + epoch) * 65_537 + rank + 1


def _forward(train_model, data, index, loss_fn, device, rank: int, world: int):
    """Forward of this rank's part of the global batch ``index``.

    In one process, the whole batch at weight 1. With ``world`` ranks, this rank's shard
    (:func:`gatelab.train.distributed.shard`) at weight ``n_rank * world / n_batch``: DDP
    averages the ranks' gradients of ``weight * loss``, which is then the gradient of the
    mean loss over the whole batch. A rank with no part of a short batch runs one
    sequence at weight 0 (every rank must join the all-reduce).

    Returns:
        ``(loss, out, y, n, weight)``: the local mean loss (unweighted), outputs and
        targets, the number of this rank's sequences (0 for the stand-in), the weight.
    """
    part = index if world == 1 else D.shard(index, rank, world)
    n = len(part)
    x, lengths, y = _take(data, part if n else index[:1], device)
    out = train_model(x, lengths)
    loss = loss_fn(out, y)
    return loss, out, y, n, (1.0 if world == 1 else n * world / len(index))


def _better(monitor: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score > best if M.GREATER_IS_BETTER[monitor] else score < best


def fit(
    model: nn.Module,
    train: TensorData,
    valid: TensorData | None = None,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    metric_transform=None,
) -> History:
    """Train ``model`` in place; returns the :class:`History` (best weights loaded).

    Args:
        model: a :mod:`gatelab.models.heads` model (``config.kind`` picks loss and metrics).
        train: the training data.
        valid: validation data for early stopping and best weights (optional).
        config: a :class:`TrainConfig` (default settings if None).
        checkpoint_dir: where to write a checkpoint after every epoch (None: nowhere);
            the folder is locked for this process while ``fit`` runs
            (:func:`gatelab.train.runs.run_lock`).
        resume: continue from the checkpoint in ``checkpoint_dir``, if there is one, to
            the same weights an uninterrupted run gives. Its config must equal ``config``
            and its data fingerprints those of ``train`` and ``valid``.
        callbacks: :class:`Callback` objects (progress bars, loggers, interrupts).
        metric_transform: for regression, a function ``(outputs, targets) -> (outputs,
            targets)`` applied before validation metrics (e.g. undo scaling).

    Raises:
        TrainingError: the loss or the gradient norm became NaN or infinite.
        RunFolderError: ``resume`` with a checkpoint that is corrupt or made with another
            config or other data; ``checkpoint_dir`` locked by another process.
    """
    config = config if config is not None else TrainConfig()
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    monitor = config.monitor or ("accuracy" if _is_classifier(model) else "rmse")
    device = next(model.parameters()).device
    loss_fn = _loss_fn(model, config)
    classifier = _is_classifier(model)
    epoch_batches = len(
        batch_indices(train.lengths, config.batch_size, shuffle=False, bucket=config.bucket)
    )
    total_steps = config.epochs * epoch_batches
    D.init()  # joins the process group torchrun describes; nothing in one process
    distributed, rank, world, writer = D.active(), D.rank(), D.world_size(), D.is_writer()
    if distributed and D.device().type == "cuda" and device.type != "cuda":
        raise ValueError(
            f"the model is on {device} but the process group uses nccl (GPUs); move the "
            "model to this rank's GPU, or use gloo (gatelab.train.distributed.init('gloo'))"
        )
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    inputs = None
    if ckpt is not None:
        inputs = {"train": data_fingerprint(train), "valid": data_fingerprint(valid)}
    lock = run_lock(ckpt) if ckpt is not None else contextlib.nullcontext()

    with lock, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        optimizer = _optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
        history = History(monitor=monitor if valid is not None else None)
        best_state: dict[str, Tensor] | None = None
        bad_epochs = 0
        start = 0
        if not writer:
            pass  # rank 0 reads the checkpoint and sends its state below
        elif resume and ckpt is not None and (ckpt / CHECKPOINT_FILE).exists():
            start, bad_epochs, best_state, history = _load_checkpoint(
                ckpt, model, optimizer, scheduler, config, inputs
            )
            logger.info("resuming from %s after epoch %d", ckpt / CHECKPOINT_FILE, start)
        elif ckpt is not None:
            remove_checkpoint(ckpt)
        train_model = model
        if distributed:
            _check_same_data(train, valid)
            start, bad_epochs, best_state, history = _sync_state(
                model, optimizer, scheduler, start, bad_epochs, best_state, history
            )
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            train_model = DistributedDataParallel(model, device_ids=ids)

        for cb in callbacks:
            cb.on_train_begin(config.epochs, epoch_batches, start)
        for epoch in range(start, config.epochs):
            if history.stopped_early:
                break
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            model.train()
            if distributed:
                torch.manual_seed(_rank_seed(config.seed, epoch, rank))
            running = _Running(classifier)
            logs: dict[str, float] = {}  # a rank may have no part of the first batches
            batches = batch_indices(
                train.lengths,
                config.batch_size,
                shuffle=True,
                seed=config.seed,
                epoch=epoch,
                bucket=config.bucket,
            )
            for step, index in enumerate(batches):
                loss, out, y, n, weight = _forward(
                    train_model, train, index, loss_fn, device, rank, world
                )
                if not torch.isfinite(loss):
                    raise TrainingError(_nan_message("loss", loss, epoch, step, ckpt, start))
                optimizer.zero_grad(set_to_none=True)
                (loss if weight == 1.0 else loss * weight).backward()
                if config.clip_norm is not None:
                    norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
                    if not torch.isfinite(norm):
                        raise TrainingError(
                            _nan_message("gradient norm", norm, epoch, step, ckpt, start)
                        )
                optimizer.step()
                scheduler.step()
                if n:
                    logs = running.update(loss.item(), out.detach(), y)
                for cb in callbacks:
                    cb.on_batch_end(epoch, step, logs)

            if distributed:
                logs = running.reduced()
            logs = {f"train_{k}": v for k, v in logs.items()}
            logs["lr"] = optimizer.param_groups[0]["lr"]
            if valid is not None:
                decision = None
                if writer:  # rank 0 validates and decides; the others follow
                    val = _validate(model, valid, config, loss_fn, metric_transform)
                    better = _better(monitor, val[monitor], history.best_score)
                    stop = (
                        not better
                        and config.patience is not None
                        and bad_epochs + 1 >= config.patience
                    )
                    decision = (val, better, stop)
                val, better, stop = D.broadcast_object(decision) if distributed else decision
                logs.update({f"val_{k}": v for k, v in val.items()})
                if better:
                    history.best_score, history.best_epoch, bad_epochs = val[monitor], epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_epochs += 1
                    history.stopped_early = stop
            history.epochs.append(logs)
            logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, logs)
            if ckpt is not None and writer:
                _save_checkpoint(
                    ckpt, epoch + 1, model, optimizer, scheduler, config, history, bad_epochs,
                    best_state, inputs,
                )  # fmt: skip
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)

        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        for cb in callbacks:
            cb.on_train_end(history)
    return history


def _cpu(obj):
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _check_same_data(train: TensorData, valid: TensorData | None) -> None:
    """Refuse a job whose ranks hold different data (each reads its own copy of a file)."""
    mine = (data_fingerprint(train), data_fingerprint(valid))
    first = D.broadcast_object(mine)
    if mine != first:
        raise ValueError(
            f"rank {D.rank()} holds other training or validation data than rank 0 "
            f"(sha256 {mine[0]['sha256'][:12]}... against {first[0]['sha256'][:12]}...); "
            "every rank must read the same data"
        )


def _sync_state(model, optimizer, scheduler, start, bad_epochs, best_state, history):
    """Give every rank rank 0's starting state (a resumed checkpoint's, or the fresh
    model's weights): weights, optimizer, scheduler, early stopping, history."""
    payload = None
    if D.is_writer():
        payload = {
            "model": _cpu(model.state_dict()),
            "optimizer": _cpu(optimizer.state_dict()) if start else None,
            "scheduler": scheduler.state_dict() if start else None,
            "start": start,
            "bad_epochs": bad_epochs,
            "best_state": _cpu(best_state),
            "history": history.to_dict(),
        }
    payload = D.broadcast_object(payload)
    if not D.is_writer():
        model.load_state_dict(payload["model"])
        if payload["optimizer"] is not None:
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
        history = History.from_dict(payload["history"])
        best_state = payload["best_state"]
        start, bad_epochs = payload["start"], payload["bad_epochs"]
    return start, bad_epochs, best_state, history


def _validate(model, valid, config, loss_fn, metric_transform) -> dict[str, float]:
    out = predict_batches(model, valid, config.eval_batch_size)
    y = valid.targets
    result = {"loss": float(loss_fn(out, y))}
    if metric_transform is not None and not _is_classifier(model):
        out, y = metric_transform(out, y)
    result.update(evaluate_outputs(model, out, y))
    return result


def _nan_message(what, value, epoch, step, ckpt, start) -> str:
    where = (
        f"the last good checkpoint (after epoch {epoch}) is kept in '{ckpt / CHECKPOINT_FILE}'"
        if ckpt is not None and epoch > 0
        else "no checkpoint was written before it"
    )
    return (
        f"the training {what} became {value.item()} at epoch {epoch + 1}, step {step + 1}; "
        f"training stopped ({where}). Try a lower learning rate or clip_norm, or check the "
        "data for huge or missing values"
    )


# ----------------------------------------------------------------- checkpoints


def data_fingerprint(data: TensorData | None) -> dict[str, Any] | None:
    """``{"size", "sha256"}`` of a data set's tensors (None for None): what a run folder
    records to refuse resuming on other data."""
    return None if data is None else fingerprint_tensors(data.inputs, data.lengths, data.targets)


def _save_checkpoint(
    ckpt: Path, epoch, model, optimizer, scheduler, config, history, bad_epochs, best_state, inputs
) -> None:
    tensors, opt_meta = checkpoint_tensors(model, optimizer, best_state)
    sched = {
        k: json_safe(v)
        for k, v in scheduler.state_dict().items()
        if k != "lr_lambdas" and not callable(v)
    }
    state = {
        "epoch": epoch,
        "train_config": config.to_dict(),
        "optimizer": opt_meta,
        "scheduler": sched,
        "early_stopping": {
            "bad_epochs": bad_epochs,
            "best_epoch": history.best_epoch,
            "best_score": history.best_score,
            "has_best": best_state is not None,
        },
        "history": history.to_dict(),
        "inputs": inputs,
    }
    if D.world_size() > 1:  # the ranks of the run's last epoch (a resume may change them)
        state["world_size"] = D.world_size()
    write_checkpoint(ckpt, epoch, tensors, state)


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler, config: TrainConfig, inputs):
    path = ckpt / CHECKPOINT_FILE
    state, tensors = read_checkpoint(ckpt)
    try:
        saved_config = state["train_config"]
        epoch = int(state["epoch"])
        early = state["early_stopping"]
        history = History.from_dict(state["history"])
        opt_meta = state["optimizer"]
        sched = state["scheduler"]
    except (KeyError, TypeError, ValueError) as err:
        raise RunFolderError(f"checkpoint '{path}' is corrupt: {err!r} missing or invalid") from err
    if saved_config != config.to_dict():
        diff = {
            k: (saved_config.get(k), v)
            for k, v in config.to_dict().items()
            if saved_config.get(k) != v
        }
        raise RunFolderError(
            f"checkpoint '{path}' was made with other training settings; resuming needs the "
            f"same ones (saved, given): {diff}"
        )
    if state.get("inputs") is not None:  # older checkpoints kept no fingerprints
        check_same(ckpt, {"inputs": state["inputs"]}, {"inputs": inputs})

    def pick(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(pick("model."), strict=True)
        best_state = pick("best.") if early.get("has_best") else None
        optimizer.load_state_dict(optimizer_from_tensors(tensors, opt_meta))
        scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(optimizer.param_groups)})
        set_rng_tensors(tensors)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise RunFolderError(
            f"checkpoint '{path}' does not fit this model or is corrupt ({err})"
        ) from err
    return epoch, int(early.get("bad_epochs", 0)), best_state, history
