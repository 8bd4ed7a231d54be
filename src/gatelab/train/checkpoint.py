"""Checkpoints: the one writer and reader of both training loops (:func:`gatelab.train.fit.fit`
and :func:`gatelab.train.tbptt.fit_loop`).

A checkpoint is a pair in the run folder (no pickle: tensors in safetensors, the rest JSON)::

    checkpoint.json               the loop's state (epoch, history, ...), the optimizer's
                                  settings ("optimizer") and the tensors file's name ("tensors")
    checkpoint-NNNN.safetensors   model.*, best.* (the best weights, where kept),
                                  optimizer.<param>.<key>, rng.torch, rng.cuda.<device>

:func:`save_checkpoint` writes one (the tensors file first, then the JSON naming it, then
the previous tensors file is removed); :func:`read_checkpoint` and
:func:`restore_checkpoint` read one back into a model and its optimizer. Each loop adds
its own state to the JSON (``fit``'s early stopping and scheduler, the TBPTT loop's
:class:`~gatelab.train.tbptt.FitState`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gatelab.errors import RunFolderError
from gatelab.train.distributed import is_writer, world_size
from gatelab.train.files import (
    atomic_write_json,
    atomic_write_tensors,
    fsync_dir,
    json_safe,
    read_json,
    read_tensors,
)

__all__ = [
    "CHECKPOINT_FILE",
    "checkpoint_tensors",
    "get_rng_tensors",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "read_checkpoint",
    "remove_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
    "set_rng_tensors",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
TENSORS_NAME = re.compile(r"^checkpoint-\d+(-\d+)?\.safetensors$")


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer."
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON.

    Returns ``(tensors, meta)``: tensors named ``{prefix}{param}.{key}``, and the param
    groups and non-tensor state entries as JSON-safe values.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = json_safe(value)
    return tensors, {"param_groups": json_safe(sd["param_groups"]), "scalars": scalars}


def optimizer_from_tensors(
    tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str = "optimizer."
) -> dict[str, Any]:
    """The ``state_dict`` that :func:`optimizer_to_tensors` split, for ``load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            pid, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if isinstance(g.get("betas"), list):  # Adam's betas are a tuple
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def named_tensors(folder: Path) -> str | None:
    """The tensors file ``checkpoint.json`` names, or None (absent or unreadable)."""
    try:
        state = json.loads((folder / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    name = state.get("tensors") if isinstance(state, dict) else None
    return name if isinstance(name, str) and Path(name).name == name else None


def checkpoint_tensors(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, Tensor] | None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors of a checkpoint both loops write (``model.*``, ``best.*`` where there
    are best weights, the optimizer's moments, the RNG states) and the optimizer's JSON."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors.update(get_rng_tensors())
    return tensors, opt_meta


def write_checkpoint(
    folder: str | os.PathLike, epoch: int, tensors: dict[str, Tensor], state: dict[str, Any]
) -> Path:
    """Write a checkpoint pair: ``checkpoint-{epoch}.safetensors``, then ``checkpoint.json``
    (``state`` plus the tensors file's name), then the tensors file the previous
    ``checkpoint.json`` named, and only that one, is removed.

    The tensors never go under the name the current JSON names (a second checkpoint of
    one epoch gets ``checkpoint-{epoch}-1.safetensors``), so a kill at any instant leaves a
    JSON naming a complete tensors file of its own epoch.
    """
    folder = Path(folder)
    if not is_writer():
        return folder / CHECKPOINT_FILE
    previous = named_tensors(folder)
    name, k = f"checkpoint-{epoch:04d}.safetensors", 0
    while name == previous:
        k += 1
        name = f"checkpoint-{epoch:04d}-{k}.safetensors"
    atomic_write_tensors(folder / name, tensors, metadata={"epoch": str(epoch)})
    path = atomic_write_json(folder / CHECKPOINT_FILE, {**state, "tensors": name})
    if previous is not None:
        (folder / previous).unlink(missing_ok=True)
        fsync_dir(folder)
    return path


def read_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(state, tensors)`` of the checkpoint :func:`write_checkpoint` left in ``folder``."""
    path = Path(folder) / CHECKPOINT_FILE
    state = read_json(path, "checkpoint")
    name = state.get("tensors") if isinstance(state, dict) else None
    if not isinstance(name, str) or Path(name).name != name:
        raise RunFolderError(f"checkpoint '{path}' is corrupt: it names no tensors file")
    return state, read_tensors(Path(folder) / name, "checkpoint tensors")


def remove_checkpoint(folder: str | os.PathLike) -> None:
    """Remove the checkpoint pair from ``folder`` (JSON first: never a JSON without tensors).

    Call it only on a folder this process holds (:func:`run_lock`): every
    ``checkpoint-*.safetensors`` there is removed.
    """
    folder = Path(folder)
    if not is_writer():
        return
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    for old in folder.glob("checkpoint-*.safetensors"):
        old.unlink(missing_ok=True)
    if folder.is_dir():
        fsync_dir(folder)


def get_rng_tensors() -> dict[str, Tensor]:
    """The RNG states a checkpoint saves: ``rng.torch`` (CPU) and, where CUDA has been
    used in this process, ``rng.cuda.{i}`` for every device."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def set_rng_tensors(tensors: Mapping[str, Tensor]) -> None:
    """Restore what :func:`get_rng_tensors` saved (``KeyError`` without ``rng.torch``).

    CUDA states are restored on the devices that exist; a checkpoint with CUDA states
    resumed without CUDA logs a warning (a CPU run's dropout then differs from the
    original's)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = {int(k.rsplit(".", 1)[1]): v for k, v in tensors.items() if k.startswith("rng.cuda.")}
    if not cuda:
        return
    if not torch.cuda.is_available():
        logger.warning(
            "the checkpoint holds CUDA RNG states but CUDA is not available; they are not restored"
        )
        return
    for i, state in cuda.items():
        if i < torch.cuda.device_count():
            torch.cuda.set_rng_state(state, i)


def save_checkpoint(
    folder: str | os.PathLike,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, Tensor] | None,
    state: dict[str, Any],
) -> Path:
    """Write the checkpoint of a training loop after ``epoch`` epochs: the tensors of
    :func:`checkpoint_tensors` and, in ``checkpoint.json``, the loop's ``state`` (JSON
    values) with the optimizer's settings under ``"optimizer"`` and, under DDP, the ranks of
    the epoch it holds under ``"world_size"`` (a resume may change them)
    (:func:`write_checkpoint`: a kill at any instant leaves a complete pair)."""
    tensors, opt_meta = checkpoint_tensors(model, optimizer, best_state)
    state = {**state, "optimizer": opt_meta}
    if world_size() > 1:
        state["world_size"] = world_size()
    return write_checkpoint(folder, epoch, tensors, state)


def _prefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def restore_checkpoint(
    folder: str | os.PathLike,
    state: dict[str, Any],
    tensors: Mapping[str, Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Tensor] | None:
    """Load what :func:`read_checkpoint` returned into ``model`` (``model.*``, strictly),
    ``optimizer`` (its moments and ``state["optimizer"]``) and the RNG states.

    Returns the best weights (``best.*``), or None where the checkpoint keeps none.

    Raises:
        RunFolderError: the tensors do not fit ``model`` or ``optimizer``, or an entry is
            missing (the checkpoint is corrupt).
    """
    try:
        model.load_state_dict(_prefixed(tensors, "model."), strict=True)
        optimizer.load_state_dict(optimizer_from_tensors(dict(tensors), state["optimizer"]))
        set_rng_tensors(tensors)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise RunFolderError(
            f"checkpoint '{Path(folder) / CHECKPOINT_FILE}' does not fit this model or is "
            f"corrupt ({err!r})"
        ) from err
    return _prefixed(tensors, "best.") or None
