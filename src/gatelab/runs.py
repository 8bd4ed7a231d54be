"""Run folders: everything a trained model needs, in safetensors and JSON, written atomically.

A run folder holds::

    config.json            gatelab version, folder format, task kind, model/train/task config
    model.safetensors      the (best) weights
    vocab.json, labels.json, scaler.json, ...   what turns raw input into tensors (per task)
    metrics.json           per-epoch history and the final validation metrics
    checkpoint.json        the last epoch's state (optimizer, scheduler, early stopping)
    checkpoint-NNNN.safetensors   its tensors (weights, optimizer moments, RNG states)

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
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "WEIGHTS_FILE",
    "RunFolderError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_tensors",
    "read_config",
    "read_json",
    "read_tensors",
    "write_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
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
