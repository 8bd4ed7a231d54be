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
- a non-finite loss stops training with a :class:`~gatelab.errors.TrainingDiverged`; the last good
  checkpoint stays on disk.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop trains data-parallel
(:mod:`gatelab.train.distributed`): DDP over the ranks, each taking its part of every global
batch of ``batch_size`` sequences, metrics all-reduced, validation and early stopping on
rank 0 (broadcast), checkpoints written by rank 0 only. In one process nothing changes.

The loop logs and never prints; progress goes to callbacks (:class:`Callback`; the command
line's is :class:`gatelab.cli.progress.RichProgress`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gatelab.errors import RunFolderError, TrainingDiverged
from gatelab.train import distributed as D
from gatelab.train import metrics as M
from gatelab.train.checkpoint import (
    CHECKPOINT_FILE,
    read_checkpoint,
    remove_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from gatelab.train.config import History, TrainConfig
from gatelab.train.files import json_safe
from gatelab.train.fingerprints import check_same, fingerprint_tensors
from gatelab.train.lock import run_lock
from gatelab.train.optim import adamw, lr_factor

__all__ = [
    "Callback",
    "History",
    "TensorData",
    "TrainConfig",
    "batch_indices",
    "evaluate_outputs",
    "fit",
    "predict_batches",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------- data


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
        TrainingDiverged: the loss or the gradient norm became NaN or infinite (a
            :class:`~gatelab.errors.TrainingError` and a ``FloatingPointError``).
        RunFolderError: ``resume`` with a checkpoint that is corrupt or made with another
            config or other data; ``checkpoint_dir`` locked by another process.
    (Over 80 lines with this docstring: the epoch loop stays in one piece so that the order
    of each epoch's work, train, validate, record, checkpoint, callbacks, reads top down;
    its parts are :func:`_begin`, :func:`_train_epoch` and :func:`_judge`.)
    """
    config = config if config is not None else TrainConfig()
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    monitor = config.monitor or ("accuracy" if _is_classifier(model) else "rmse")
    device = next(model.parameters()).device
    loss_fn = _loss_fn(model, config)
    epoch_batches = len(
        batch_indices(train.lengths, config.batch_size, shuffle=False, bucket=config.bucket)
    )
    total_steps = config.epochs * epoch_batches
    D.init()  # joins the process group torchrun describes; nothing in one process
    distributed, writer = D.active(), D.is_writer()
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
        optimizer = adamw(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
        history = History(monitor=monitor if valid is not None else None)
        start, bad_epochs, best_state, history = _begin(
            model, optimizer, scheduler, config, history, train, valid, ckpt, resume, inputs
        )
        train_model = model
        if distributed:
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
            where = (epoch, ckpt, start)
            logs = _train_epoch(
                train_model, model, train, config, optimizer, scheduler, loss_fn, where, callbacks
            )
            if valid is not None:
                judged = _judge(
                    model, valid, config, loss_fn, metric_transform, history, epoch, monitor
                )
                logs.update(judged["logs"])
                if judged["better"]:
                    bad_epochs, best_state = 0, judged["weights"]
                else:
                    bad_epochs += 1
                    history.stopped_early = judged["stop"] and bad_epochs >= config.patience
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


def _begin(model, optimizer, scheduler, config, history, train, valid, ckpt, resume, inputs):
    """The state :func:`fit` starts from: a resumed checkpoint's (read by rank 0, sent to
    every rank), or a fresh start's (any old checkpoint removed).

    Returns ``(start epoch, bad_epochs, best_state, history)``."""
    start, bad_epochs, best_state = 0, 0, None
    if not D.is_writer():
        pass  # rank 0 reads the checkpoint and sends its state below
    elif resume and ckpt is not None and (ckpt / CHECKPOINT_FILE).exists():
        start, bad_epochs, best_state, history = _load_checkpoint(
            ckpt, model, optimizer, scheduler, config, inputs
        )
        logger.info("resuming from %s after epoch %d", ckpt / CHECKPOINT_FILE, start)
    elif ckpt is not None:
        remove_checkpoint(ckpt)
    if D.active():
        _check_same_data(train, valid)
        start, bad_epochs, best_state, history = _sync_state(
            model, optimizer, scheduler, start, bad_epochs, best_state, history
        )
    return start, bad_epochs, best_state, history


def _train_epoch(
    train_model, model, train, config, optimizer, scheduler, loss_fn, where, callbacks
) -> dict[str, float]:
    """One pass over ``train``: the epoch's ``train_*`` logs and the learning rate.

    ``where`` is ``(epoch, checkpoint folder, first epoch of this session)``, for the
    message of a :class:`~gatelab.errors.TrainingDiverged`."""
    epoch, ckpt, start = where
    rank, world = D.rank(), D.world_size()
    device = next(model.parameters()).device
    model.train()
    if D.active():
        torch.manual_seed(_rank_seed(config.seed, epoch, rank))
    running = M.Running(_is_classifier(model))
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
        loss, out, y, n, weight = _forward(train_model, train, index, loss_fn, device, rank, world)
        if not torch.isfinite(loss):
            raise TrainingDiverged(_nan_message("loss", loss, epoch, step, ckpt, start))
        optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1.0 else loss * weight).backward()
        if config.clip_norm is not None:
            norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            if not torch.isfinite(norm):
                raise TrainingDiverged(
                    _nan_message("gradient norm", norm, epoch, step, ckpt, start)
                )
        optimizer.step()
        scheduler.step()
        if n:
            logs = running.update(loss.item(), out.detach(), y)
        for cb in callbacks:
            cb.on_batch_end(epoch, step, logs)
    if D.active():
        logs = running.reduced()
    logs = {f"train_{k}": v for k, v in logs.items()}
    logs["lr"] = optimizer.param_groups[0]["lr"]
    return logs


def _judge(
    model, valid, config, loss_fn, metric_transform, history, epoch, monitor
) -> dict[str, Any]:
    """Validate after ``epoch``: ``{"logs": val_* metrics, "better": bool, "stop": bool,
    "weights": the model's weights if better}`` by ``monitor``, decided on rank 0 and sent
    to every rank.

    A better score is recorded in ``history``; ``stop`` says whether patience applies (the
    caller counts the epochs without progress)."""
    decision = None
    if D.is_writer():  # rank 0 validates and decides; the others follow
        val = _validate(model, valid, config, loss_fn, metric_transform)
        decision = (val, _better(monitor, val[monitor], history.best_score))
    val, better = D.broadcast_object(decision) if D.active() else decision
    weights = None
    if better:
        history.best_score, history.best_epoch = val[monitor], epoch
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    stop = not better and config.patience is not None
    return {"logs": {f"val_{k}": v for k, v in val.items()}, "better": better, "stop": stop,
            "weights": weights}  # fmt: skip


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
            "model": D.to_cpu(model.state_dict()),
            "optimizer": D.to_cpu(optimizer.state_dict()) if start else None,
            "scheduler": scheduler.state_dict() if start else None,
            "start": start,
            "bad_epochs": bad_epochs,
            "best_state": D.to_cpu(best_state),
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
    """Write :func:`fit`'s checkpoint (:func:`gatelab.train.checkpoint.save_checkpoint`)
    with its own state: the config, the scheduler, early stopping, the history and the
    data fingerprints."""
    sched = {
        k: json_safe(v)
        for k, v in scheduler.state_dict().items()
        if k != "lr_lambdas" and not callable(v)
    }
    state = {
        "epoch": epoch,
        "train_config": config.to_dict(),
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
    save_checkpoint(ckpt, epoch, model, optimizer, best_state, state)


def _load_checkpoint(ckpt: Path, model, optimizer, scheduler, config: TrainConfig, inputs):
    """Restore what :func:`_save_checkpoint` wrote, after checking that it was made with
    ``config`` and on the data ``inputs`` fingerprints.

    Returns ``(epoch, bad_epochs, best_state, history)``."""
    path = ckpt / CHECKPOINT_FILE
    state, tensors = read_checkpoint(ckpt)
    try:
        saved_config = state["train_config"]
        epoch = int(state["epoch"])
        early = state["early_stopping"]
        history = History.from_dict(state["history"])
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
    best_state = restore_checkpoint(ckpt, state, tensors, model, optimizer)
    try:
        scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(optimizer.param_groups)})
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise RunFolderError(
            f"checkpoint '{path}' does not fit this model or is corrupt ({err!r})"
        ) from err
    best_state = best_state if early.get("has_best") else None
    return epoch, int(early.get("bad_epochs", 0)), best_state, history
