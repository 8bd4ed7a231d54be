"""The training loop shared by the character LM and the translator, with checkpoints.

What it guarantees:

* a checkpoint (weights, optimizer moments, RNG state, history) is written atomically
  before the first step and after every epoch, so a crash, a Ctrl-C or a diverged loss
  always leaves the last good state behind, and ``resume=True`` continues from it;
* a non-finite loss or gradient stops training with :class:`TrainingDiverged` *before* the
  optimizer step that would poison the weights; the message names the epoch and step
  and the checkpoint that is kept;
* a time budget ends training after the step that exceeds it; the epoch in progress is
  then validated and checkpointed like a full one;
* the best weights by validation loss are kept apart (``model.safetensors``), written
  after the checkpoint that holds them (``best.*``), so a kill between the two leaves a
  checkpoint from which resuming writes them again;
* the run folder is locked while the loop runs (:func:`gatelab.runs.run_lock`).

Files (no pickle anywhere: tensors in safetensors, the rest JSON)::

    checkpoint.json               epoch, history, best, elapsed time, optimizer settings
    checkpoint-NNNN.safetensors   model.*, best.*, optimizer.<param>.<key>, rng.torch,
                                  rng.cuda.<device> (where CUDA was used)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .runs import (
    CHECKPOINT_FILE,
    WEIGHTS_FILE,
    RunFolderError,
    atomic_write_tensors,
    get_rng_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_checkpoint,
    run_lock,
    set_rng_tensors,
    write_checkpoint,
)
from .training import TrainingError

__all__ = [
    "CHECKPOINT_FILE",
    "FitState",
    "TrainingDiverged",
    "fit_loop",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)


class TrainingDiverged(TrainingError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- checkpoints


@dataclass
class FitState:
    """Where training stands: what a checkpoint stores besides the tensors."""

    epoch: int = 0  # epochs completed
    best_valid: float = math.inf
    best_epoch: int = 0
    elapsed_s: float = 0.0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # the best weights (the checkpoint's best.* tensors), not part of the JSON
    best_state: dict[str, Tensor] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        best = None if math.isinf(self.best_valid) else self.best_valid
        return {
            "epoch": self.epoch,
            "best_valid": best,
            "best_epoch": self.best_epoch,
            "elapsed_s": self.elapsed_s,
            "finished": self.finished,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitState:
        best = d.get("best_valid")
        return cls(
            epoch=int(d["epoch"]),
            best_valid=math.inf if best is None else float(best),
            best_epoch=int(d.get("best_epoch", 0)),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
            finished=bool(d.get("finished", False)),
            history=list(d.get("history", [])),
        )


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    fit: FitState,
) -> None:
    """Write the checkpoint of ``model``, ``optimizer`` and progress ``fit`` atomically
    (:func:`gatelab.runs.write_checkpoint`), with ``fit.best_state`` as ``best.*``."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if fit.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in fit.best_state.items()})
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors.update(get_rng_tensors())
    write_checkpoint(run_dir, fit.epoch, tensors, {"fit": fit.to_dict(), "optimizer": opt_meta})


def load_checkpoint(
    run_dir: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer
) -> FitState:
    """Restore ``model``, ``optimizer`` and the RNG states from a run folder's checkpoint;
    the returned progress carries the best weights (``best_state``) where saved."""
    meta, tensors = read_checkpoint(run_dir)
    path = Path(run_dir) / CHECKPOINT_FILE
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        fit = FitState.from_dict(meta["fit"])
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(optimizer_from_tensors(tensors, meta["optimizer"]))
        set_rng_tensors(tensors)
        best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
        fit.best_state = best or None
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise RunFolderError(
            f"checkpoint '{path}' does not fit this model or is corrupt ({err!r})"
        ) from err
    return fit


# --------------------------------------------------------------------------- the loop


def fit_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run_dir: str | os.PathLike,
    *,
    epochs: int,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any, Any], tuple[Tensor, Any, int]],
    validate: Callable[[], float],
    fit: FitState | None = None,
    time_budget_s: float | None = None,
    clip: float | None = 1.0,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> FitState:
    """Train ``model`` for up to ``epochs`` epochs (or ``time_budget_s`` seconds).

    Args:
        model, optimizer: what to train; the optimizer holds ``model``'s parameters.
        run_dir: where the checkpoint and the best weights (``model.safetensors``) go.
        epochs: total epochs, counting those already done in ``fit``.
        batches: ``epoch -> iterable of batches``.
        step: ``(batch, carry) -> (loss, carry, tokens)``: the mean loss of one batch (a
            scalar with a graph), what to carry to the next batch of the same epoch (the
            TBPTT state, or None) and how many tokens the loss covers.
        validate: ``() -> validation loss`` (lower is better), run after every epoch.
        fit: the progress to continue (from :func:`load_checkpoint`), or None to start.
        time_budget_s: total training time allowed, counting earlier sessions.
        clip: max gradient norm (None: no clipping).
        on_epoch: called with each epoch's record (for progress display).
        on_step: called with ``(epoch, step, loss)`` after every step.

    Returns:
        The final :class:`FitState`; ``model`` holds the last (not the best) weights.

    Raises:
        TrainingDiverged: a non-finite loss, gradient norm or validation loss.
        RunLockedError: another process holds ``run_dir``.
        ValueError: in a distributed job (``WORLD_SIZE`` > 1), which this loop does not
            support yet.
    """
    from . import distributed

    if distributed.world_size() > 1:
        raise ValueError(
            f"WORLD_SIZE={distributed.world_size()}: the TBPTT loop (char LM, translator) "
            "does not train data-parallel yet; run it in one process (no torchrun/--nproc)"
        )
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        return _fit_loop(
            model, optimizer, run_dir, epochs, batches, step, validate, fit or FitState(),
            time_budget_s, clip, on_epoch, on_step,
        )  # fmt: skip


def _fit_loop(
    model, optimizer, run_dir, epochs, batches, step, validate, fit, time_budget_s, clip,
    on_epoch, on_step,
) -> FitState:  # fmt: skip
    if fit.epoch == 0 and not fit.history:
        save_checkpoint(run_dir, model, optimizer, fit)  # the "last good" state from step 0
    elif fit.best_state is not None:
        # the checkpoint is the truth; a kill may have come before this file was written
        atomic_write_tensors(run_dir / WEIGHTS_FILE, fit.best_state)
    if fit.epoch < epochs:
        fit.finished = False
    start = time.monotonic() - fit.elapsed_s
    params = [p for p in model.parameters() if p.requires_grad]

    def out_of_time() -> bool:
        return time_budget_s is not None and time.monotonic() - start >= time_budget_s

    if out_of_time():
        logger.info("time budget of %.0f s already spent; nothing to train", time_budget_s)
    for epoch in range(fit.epoch, epochs):
        if out_of_time():
            break
        model.train()
        carry, total, tokens, n_steps, stopped = None, 0.0, 0, 0, False
        epoch_start = time.monotonic()
        for k, batch in enumerate(batches(epoch)):
            loss, carry, n_tok = step(batch, carry)
            value = float(loss.detach())
            if not math.isfinite(value):
                _diverged(run_dir, fit, epoch, k, f"the loss is {value}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            else:
                norm = math.sqrt(
                    sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None)
                )
            if not math.isfinite(norm):
                _diverged(run_dir, fit, epoch, k, f"the gradient norm is {norm}")
            optimizer.step()
            total += value * n_tok
            tokens += n_tok
            n_steps += 1
            if on_step is not None:
                on_step(epoch, k, value)
            if out_of_time():
                stopped = True
                break
        train_time = time.monotonic() - epoch_start
        valid = float(validate())
        if not math.isfinite(valid):
            _diverged(run_dir, fit, epoch, n_steps, f"the validation loss is {valid}")
        record = {
            "epoch": epoch + 1,
            "steps": n_steps,
            "train_loss": total / max(tokens, 1),
            "valid_loss": valid,
            "tokens_per_s": tokens / max(train_time, 1e-9),
            "elapsed_s": time.monotonic() - start,
            "stopped_by_time_budget": stopped,
        }
        fit.history.append(record)
        fit.epoch = epoch + 1
        fit.elapsed_s = record["elapsed_s"]
        improved = valid < fit.best_valid
        if improved:
            fit.best_valid, fit.best_epoch = valid, epoch + 1
            fit.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        fit.finished = stopped or epoch + 1 == epochs
        save_checkpoint(run_dir, model, optimizer, fit)
        if improved:  # after the checkpoint that holds them: see the module's docstring
            atomic_write_tensors(run_dir / WEIGHTS_FILE, fit.best_state)
        logger.info("epoch %d: train %.4f valid %.4f", epoch + 1, record["train_loss"], valid)
        if on_epoch is not None:
            on_epoch(record)
        if stopped:
            break
    if not fit.finished:  # the budget ran out before an epoch, or there was none to run
        fit.finished = True
        save_checkpoint(run_dir, model, optimizer, fit)
    return fit


def _diverged(run_dir: Path, fit: FitState, epoch: int, step: int, what: str) -> None:
    kept = (
        f"the checkpoint of epoch {fit.epoch} is kept in '{run_dir}'"
        if fit.epoch
        else f"the checkpoint of the initial weights is kept in '{run_dir}'"
    )
    raise TrainingDiverged(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {what}; {kept} (try a "
        "lower learning rate or stronger gradient clipping, then --resume)"
    )
