"""The training loop shared by the character LM and the translator, with checkpoints.

What it guarantees:

* a checkpoint (weights, optimizer moments, RNG state, history) is written atomically
  before the first step and after every epoch, so a crash, a Ctrl-C or a diverged loss
  always leaves the last good state behind, and ``resume=True`` continues from it;
* a non-finite loss or gradient stops training with
  :class:`~gatelab.errors.TrainingDiverged` *before* the
  optimizer step that would poison the weights; the message names the epoch and step
  and the checkpoint that is kept;
* a time budget ends training after the step that exceeds it; the epoch in progress is
  then validated and checkpointed like a full one;
* the best weights by validation loss are kept apart (``model.safetensors``), written
  after the checkpoint that holds them (``best.*``), so a kill between the two leaves a
  checkpoint from which resuming writes them again;
* the run folder is locked while the loop runs (:func:`gatelab.train.runs.run_lock`).

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
import torch.distributed as dist
from torch import Tensor, nn

from gatelab._config import config_fields
from gatelab.errors import RunFolderError, TrainingDiverged
from gatelab.train import checkpoint as C
from gatelab.train import distributed as D
from gatelab.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from gatelab.train.files import atomic_write_tensors
from gatelab.train.lock import run_lock
from gatelab.train.runs import WEIGHTS_FILE

__all__ = [
    "CHECKPOINT_FILE",
    "FitState",
    "fit_loop",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)


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
        """The progress :meth:`to_dict` wrote (an unknown key is an error naming it,
        :func:`gatelab._config.config_fields`; ``epoch`` is required)."""
        d = config_fields(cls, d, "TBPTT progress")
        if "best_state" in d:
            raise ValueError("TBPTT progress holds 'best_state'; the best weights are tensors")
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
    (:func:`gatelab.train.checkpoint.save_checkpoint`), with ``fit.best_state`` as ``best.*``."""
    C.save_checkpoint(run_dir, fit.epoch, model, optimizer, fit.best_state, {"fit": fit.to_dict()})


def load_checkpoint(
    run_dir: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer
) -> FitState:
    """Restore ``model``, ``optimizer`` and the RNG states from a run folder's checkpoint
    (:func:`gatelab.train.checkpoint.restore_checkpoint`); the returned progress carries the
    best weights (``best_state``) where saved."""
    state, tensors = read_checkpoint(run_dir)
    try:
        fit = FitState.from_dict(state["fit"])
    except (KeyError, ValueError, TypeError) as err:
        raise RunFolderError(
            f"checkpoint '{Path(run_dir) / CHECKPOINT_FILE}' does not fit this model or is "
            f"corrupt ({err!r})"
        ) from err
    fit.best_state = C.restore_checkpoint(run_dir, state, tensors, model, optimizer)
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
    sharded: bool = False,
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
        sharded: in a distributed job, ``batches`` gives this rank's own part of each batch
            (e.g. :func:`gatelab.data.batching.stream_batches` of the rank's
            :func:`~gatelab.data.batching.stream_shard`), the same number of batches on
            every rank; False: every rank gets the whole batches and takes its rows.

    Returns:
        The final :class:`FitState`; ``model`` holds the last (not the best) weights.

    Raises:
        TrainingDiverged: a non-finite loss, gradient norm or validation loss.
        RunLockedError: another process holds ``run_dir``.

    In a distributed job (``WORLD_SIZE`` > 1, :mod:`gatelab.train.distributed`) every rank
    iterates the same batches and takes its rows of each (every ``world_size``-th; the
    batches must be batch-first tensors, or tuples/lists/dicts of them; a TBPTT stream's
    carried state stays with its rows), or with ``sharded`` iterates its own batches; the
    gradients are summed over the ranks weighted
    by their tokens, so a step is the step of the whole batch. Rank 0's state starts
    every rank, its validation loss and its clock (the time budget) decide for all, and
    only it writes the run folder.
    """
    D.init()  # joins the process group torchrun describes; nothing in one process
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        return _fit_loop(
            model, optimizer, run_dir, epochs, batches, step, validate, fit or FitState(),
            time_budget_s, clip, on_epoch, on_step, sharded,
        )  # fmt: skip


def _fit_loop(
    model, optimizer, run_dir, epochs, batches, step, validate, fit, time_budget_s, clip,
    on_epoch, on_step, sharded=False,
) -> FitState:  # fmt: skip
    """:func:`fit_loop` in the run folder it holds.

    Over 80 lines: one step's order (forward, finite check, backward, all-reduce, clip,
    finite check, optimizer step) and one epoch's (validate, record, checkpoint, best
    weights after the checkpoint that holds them) are the guarantees of the module's
    docstring; they stay in one piece to be read, and checked, top down."""
    distributed, rank, world = D.active(), D.rank(), D.world_size()
    if distributed:
        fit = _sync_start(model, optimizer, fit)
    if fit.epoch == 0 and not fit.history:
        save_checkpoint(run_dir, model, optimizer, fit)  # the "last good" state from step 0
    elif fit.best_state is not None:
        # the checkpoint is the truth; a kill may have come before this file was written
        atomic_write_tensors(run_dir / WEIGHTS_FILE, fit.best_state)
    if fit.epoch < epochs:
        fit.finished = False
    start = time.monotonic() - fit.elapsed_s
    params = [p for p in model.parameters() if p.requires_grad]

    def own_clock() -> bool:
        return time_budget_s is not None and time.monotonic() - start >= time_budget_s

    def out_of_time() -> bool:  # rank 0's clock decides for every rank
        return D.broadcast_object(own_clock()) if distributed else own_clock()

    if out_of_time():
        logger.info("time budget of %.0f s already spent; nothing to train", time_budget_s)
    for epoch in range(fit.epoch, epochs):
        if out_of_time():
            break
        model.train()
        if distributed:  # dropout: one stream per rank, drawn from rank 0's checkpointed RNG
            base = D.broadcast_object(int(torch.randint(0, 2**62, ())))
            torch.manual_seed(base + rank)
        carry, total, tokens, n_steps, stopped = None, 0.0, 0, 0, False
        epoch_start = time.monotonic()
        for k, batch in enumerate(batches(epoch)):
            real = True
            if distributed and not sharded:
                batch, real = _rows(batch, rank, world)
            loss, carry, n_tok = step(batch, carry)
            value = float(loss.detach())
            if not distributed and not math.isfinite(value):
                _diverged(run_dir, fit, epoch, k, f"the loss is {value}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if distributed:
                value, n_tok, time_up = _reduce_step(
                    params, value, n_tok if real else 0, own_clock()
                )
                if not math.isfinite(value):
                    _diverged(run_dir, fit, epoch, k, f"the loss is {value}")
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
            if time_up if distributed else out_of_time():
                stopped = True
                break
        train_time = time.monotonic() - epoch_start
        valid = float(validate())
        if distributed:
            valid = D.broadcast_object(valid)
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


def _rows(batch: Any, rank: int, world: int) -> tuple[Any, bool]:
    """This rank's rows of a batch-first batch (a tensor or a tuple/list/dict of them, all
    ``(B, ...)``): every ``world``-th row from ``rank``. A rank with no row of a short
    batch gets row 0 as a stand-in (it still joins the all-reduce, at weight 0)."""
    first = batch
    while not isinstance(first, Tensor):  # the first tensor of a (nested) batch
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    B = first.shape[0]
    real = rank < B
    take = slice(rank, None, world) if real else slice(0, 1)

    def cut(x):
        if isinstance(x, Tensor):
            if x.shape[:1] != (B,):
                raise ValueError(
                    f"a batch holds tensors of shapes {tuple(first.shape)} and "
                    f"{tuple(x.shape)}; a distributed job needs batch-first tensors that share "
                    "their first dimension"
                )
            return x[take]
        if isinstance(x, dict):
            return {k: cut(v) for k, v in x.items()}
        if isinstance(x, (tuple, list)):
            return type(x)(cut(v) for v in x)
        return x

    return cut(batch), real


def _reduce_step(params, value: float, n_tok: int, time_up: bool) -> tuple[float, int, bool]:
    """Sum over the ranks of ``n_tok``-weighted gradients (set as the gradients of the whole
    batch's token mean), the loss and the tokens; rank 0's ``time_up`` for all.

    Returns ``(loss of the whole batch, its tokens, time_up)``."""
    total_loss, total_tok, up = D.all_reduce_sums(
        [value * n_tok, float(n_tok), float(time_up and D.rank() == 0)]
    )
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flat = torch._utils._flatten_dense_tensors(grads) * n_tok
        dist.all_reduce(flat)
        flat /= max(total_tok, 1.0)
        for g, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(reduced)
    return total_loss / max(total_tok, 1.0), int(total_tok), up > 0


def _sync_start(model, optimizer, fit: FitState) -> FitState:
    """Every rank takes rank 0's weights, optimizer state and progress (a resumed
    checkpoint's, or the fresh start's), whatever it read or built itself."""
    payload = None
    if D.is_writer():
        payload = {
            "model": D.to_cpu(model.state_dict()),
            "optimizer": D.to_cpu(optimizer.state_dict()),
            "fit": fit.to_dict(),
            "best": D.to_cpu(fit.best_state),
        }
    payload = D.broadcast_object(payload)
    if D.is_writer():
        return fit
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    synced = FitState.from_dict(payload["fit"])
    synced.best_state = payload["best"]
    return synced


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
