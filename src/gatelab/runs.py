"""Run folders: everything a trained model needs, in safetensors and JSON, written atomically.

A run folder holds::

    config.json            gatelab version, folder format, task kind, model/train/task config
    model.safetensors      the (best) weights
    vocab.json, labels.json, scaler.json, ...   what turns raw input into tensors (per task)
    metrics.json           per-epoch history and the final validation metrics
    checkpoint.json        the last epoch's state (optimizer, scheduler, early stopping)
    checkpoint-NNNN.safetensors   its tensors (weights, optimizer moments, RNG states)

A checkpoint is a pair written in one order (:func:`write_checkpoint`): the tensors under
a new name first, then the JSON that names them, then the older tensors are removed. A
crash at any point leaves a JSON that names a complete tensors file of the same epoch, so
resuming never mixes the state of two epochs.

Every file is written atomically: to a temporary file in the same folder, then
``os.replace`` (a rename, atomic on POSIX and Windows), so a crash never leaves a partial
file under a real name. Nothing is ever read with pickle: tensors come from safetensors,
everything else from JSON. A folder from another gatelab major version, or with a missing
or corrupt file, raises :class:`RunFolderError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from .errors import GatelabError

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "WEIGHTS_FILE",
    "RunFolderError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_tensors",
    "json_safe",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "read_checkpoint",
    "read_config",
    "read_json",
    "read_tensors",
    "remove_checkpoint",
    "write_checkpoint",
    "write_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.json"
FORMAT_VERSION = 1


class RunFolderError(GatelabError, ValueError):
    """A run folder is missing, incomplete, corrupt, or from another gatelab version."""


def _version() -> str:
    from . import __version__

    return __version__


# ----------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    On any failure the temp file is removed and ``path`` keeps its old content (or stays
    absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN/inf refused: they are not JSON) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_tensors(
    path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` as a safetensors file atomically (contiguous CPU copies)."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, safetensors.torch.save(flat, metadata=metadata))


# ----------------------------------------------------------------- reading


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a missing or unparsable file raises :class:`RunFolderError`."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{what} '{path}' is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{what} '{path}' is corrupt: not valid JSON ({err})") from err


def read_tensors(path: str | os.PathLike, what: str = "weights file") -> dict[str, Tensor]:
    """Load a safetensors file (never pickle); missing or corrupt raises RunFolderError."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{what} '{path}' is missing")
    try:
        return safetensors.torch.load(path.read_bytes())
    except Exception as err:  # safetensors raises its own SafetensorError and others
        raise RunFolderError(
            f"{what} '{path}' is corrupt: not a valid safetensors file ({err})"
        ) from err


# ----------------------------------------------------------------- checkpoints


def json_safe(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively (what JSON round-trips)."""
    if isinstance(value, (tuple, list)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


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


def write_checkpoint(
    folder: str | os.PathLike, epoch: int, tensors: dict[str, Tensor], state: dict[str, Any]
) -> Path:
    """Write a checkpoint pair atomically: ``checkpoint-{epoch}.safetensors``, then
    ``checkpoint.json`` (``state`` plus the tensors file's name), then remove older tensors.
    """
    folder = Path(folder)
    name = f"checkpoint-{epoch:04d}.safetensors"
    atomic_write_tensors(folder / name, tensors, metadata={"epoch": str(epoch)})
    path = atomic_write_json(folder / CHECKPOINT_FILE, {**state, "tensors": name})
    for old in folder.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
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
    """Remove the checkpoint pair from ``folder`` (JSON first: never a JSON without tensors)."""
    folder = Path(folder)
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    for old in folder.glob("checkpoint-*.safetensors"):
        old.unlink(missing_ok=True)


# ----------------------------------------------------------------- config


def write_config(run_dir: str | os.PathLike, task: str, **sections: Any) -> Path:
    """Write ``config.json``: ``{"gatelab_version", "format", "task", **sections}``."""
    config = {"gatelab_version": _version(), "format": FORMAT_VERSION, "task": task}
    config.update(sections)
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, config)


def read_config(run_dir: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """Read and check ``config.json`` of a run folder.

    Args:
        run_dir: the run folder.
        task: the task kind the caller expects; None accepts any.

    Raises:
        RunFolderError: no such folder, a missing/corrupt config, another gatelab major
            version, another format, or another task kind than ``task``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder '{run_dir}' does not exist or is not a folder")
    path = run_dir / CONFIG_FILE
    config = read_json(path, "run config")
    if not isinstance(config, dict):
        raise RunFolderError(f"run config '{path}' is corrupt: expected a JSON object")
    for key in ("gatelab_version", "format", "task"):
        if key not in config:
            raise RunFolderError(f"run config '{path}' is corrupt: no {key!r} entry")
    version = str(config["gatelab_version"])
    if version.split(".")[0] != _version().split(".")[0]:
        raise RunFolderError(
            f"run config '{path}' was written by gatelab {version}; this is gatelab "
            f"{_version()}, a different major version, which cannot read it"
        )
    if config["format"] != FORMAT_VERSION:
        raise RunFolderError(
            f"run config '{path}' has folder format {config['format']!r}; expected {FORMAT_VERSION}"
        )
    if task is not None and config["task"] != task:
        raise RunFolderError(
            f"run folder '{run_dir}' holds a {config['task']!r} run; expected a {task!r} run"
        )
    return config


def section(config: dict[str, Any], key: str, run_dir: str | os.PathLike) -> Any:
    """``config[key]``, or a RunFolderError naming the config file."""
    if key not in config:
        raise RunFolderError(f"run config '{Path(run_dir) / CONFIG_FILE}' has no {key!r} entry")
    return config[key]


def load_state(
    module: torch.nn.Module, run_dir: str | os.PathLike, name: str = WEIGHTS_FILE
) -> None:
    """Load ``run_dir/name`` (safetensors) into ``module``; mismatches raise RunFolderError."""
    path = Path(run_dir) / name
    state = read_tensors(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise RunFolderError(
            f"weights file '{path}' does not fit the model in '{Path(run_dir) / CONFIG_FILE}' "
            f"({first})"
        ) from err
