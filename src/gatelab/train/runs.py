"""Run folders: everything a trained model needs, in safetensors and JSON, written atomically.

A run folder holds::

    config.json            gatelab version, folder format, task kind, the options, and the
                           fingerprints of the input data ("inputs": size and SHA-256)
    model.safetensors      the (best) weights
    vocab.json, labels.json, scaler.json, ...   what turns raw input into tensors (per task)
    metrics.json           per-epoch history and the final validation metrics
    checkpoint.json        the last epoch's state (optimizer, scheduler, early stopping)
    checkpoint-NNNN.safetensors   its tensors (weights, optimizer moments, RNG states)
    .lock                  while a process works in the folder: its pid and host

Every task kind (estimators, the command line's tasks, :func:`gatelab.train.fit.fit`,
:func:`gatelab.train.tbptt.fit_loop`, the character LM, the translator, the synthetic-task
experiments) follows one protocol. This module is its entry point: it decides how a run
starts (:func:`start_run`) and reads and writes ``config.json``, and it re-exports the
parts of the protocol that live in their own modules:

- :mod:`gatelab.train.lock`: :func:`run_lock`, one process at a time; a lock whose process
  no longer runs is reported with how to clear it, never taken over silently.
- :mod:`gatelab.train.files`: every file is written atomically
  (:func:`atomic_write_bytes`) and read back checked (:func:`read_json`,
  :func:`read_tensors`); nothing is ever read with pickle.
- :mod:`gatelab.train.checkpoint`: the checkpoint pair both training loops write.
- :mod:`gatelab.train.fingerprints`: the data fingerprints and the comparison that refuses
  to resume on other options or data.

The write order is such that a kill at any instant leaves the previous or the next
consistent state: the config before any checkpoint (a config without a checkpoint resumes
from the start), a checkpoint pair in one order
(:func:`gatelab.train.checkpoint.write_checkpoint`), the derived files (best weights,
metrics) after the checkpoint that records them.

In a distributed job (:mod:`gatelab.train.distributed`) only rank 0 writes: on the other ranks
the writes, removals and the lock do nothing, so that they never touch the folder.

A folder from another gatelab major version, or with a missing or corrupt file, raises
:class:`~gatelab.errors.RunFolderError` naming the file. See docs/run-folders.md for what
these guarantees rest on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from gatelab.errors import RunFolderError, RunLockedError
from gatelab.train.checkpoint import (
    CHECKPOINT_FILE,
    get_rng_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_checkpoint,
    remove_checkpoint,
    set_rng_tensors,
    write_checkpoint,
)
from gatelab.train.distributed import is_writer
from gatelab.train.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_tensors,
    atomic_write_text,
    fsync_dir,
    json_safe,
    read_json,
    read_tensors,
)
from gatelab.train.fingerprints import (
    check_same,
    differences,
    fingerprint_file,
    fingerprint_tensors,
)
from gatelab.train.lock import (
    LOCK_FILE,
    MEMBER_PREFIX,
    clean_folder,
    clear_stale_lock,
    members,
    run_lock,
)

# the protocol's whole API, from here and from the modules it is made of
__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "LOCK_FILE",
    "MEMBER_PREFIX",
    "METRICS_FILE",
    "WEIGHTS_FILE",
    "RunFolderError",
    "RunLockedError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_tensors",
    "atomic_write_text",
    "check_same",
    "clean_folder",
    "clear_stale_lock",
    "differences",
    "fingerprint_file",
    "fingerprint_tensors",
    "get_rng_tensors",
    "json_safe",
    "load_state",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "read_checkpoint",
    "read_config",
    "read_json",
    "read_tensors",
    "remove_checkpoint",
    "run_lock",
    "section",
    "set_rng_tensors",
    "start_run",
    "write_checkpoint",
    "write_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1


def _version() -> str:
    from gatelab._version import __version__

    return __version__


def _clear_run(run_dir: Path) -> None:
    """Remove a previous run's files: config first (the folder then holds no run, so a
    kill half way leaves a folder a fresh start accepts), then weights, metrics,
    checkpoints, here and in the members' subfolders (``member-K``)."""
    (run_dir / CONFIG_FILE).unlink(missing_ok=True)
    fsync_dir(run_dir)
    for d in [run_dir, *members(run_dir)]:
        for name in (WEIGHTS_FILE, METRICS_FILE):
            (d / name).unlink(missing_ok=True)
        remove_checkpoint(d)


def start_run(
    run_dir: str | os.PathLike,
    task: str,
    now: Mapping[str, Any],
    *,
    resume: bool,
    overwrite: bool = False,
    free: Collection[str] = (),
) -> dict[str, Any] | None:
    """Decide, in a folder this process holds (:func:`run_lock`), how a run starts.

    Args:
        run_dir: the run folder.
        task: the task kind.
        now: the config sections that must be equal to resume (options and ``inputs``
            fingerprints), as this call would write them.
        resume: continue the run the folder holds.
        overwrite: replace the run the folder holds (not with ``resume``).
        free: dotted keys of ``now`` that may differ on resume (e.g. ``"train.epochs"``,
            a budget that a resumed run may extend).

    Returns:
        The saved config when resuming a folder that has one (checked against ``now``);
        None for a fresh start, with any previous run's files removed. A ``resume`` on a
        folder without a config (none yet, or killed before writing it) starts fresh.

    Raises:
        RunFolderError: a run is there and neither ``resume`` nor ``overwrite`` was
            given; ``overwrite`` on a run of another task kind; or ``resume`` with other
            options or data (each difference listed).
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other; pass one")
    if not is_writer():  # rank 0 decides and checks; the other ranks never touch the folder
        return None
    exists = (run_dir / CONFIG_FILE).exists()
    if exists and resume:
        saved = read_config(run_dir, task)
        now = dict(now)
        if "inputs" in now and "inputs" not in saved:
            logger.warning("'%s' records no data fingerprints (older gatelab)", run_dir)
            now.pop("inputs")
        check_same(run_dir, {k: saved.get(k) for k in now}, now, free)
        return saved
    if exists and not overwrite:
        raise RunFolderError(
            f"run folder '{run_dir}' already holds a run; pass --resume (resume=True) to "
            "continue it, overwrite=True to replace it, or choose another folder"
        )
    if exists:  # overwrite: only a run of this task kind
        try:
            held = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            held = None  # a corrupt config: no kind to protect
        kind = held.get("task") if isinstance(held, dict) else None
        if kind is not None and kind != task:
            raise RunFolderError(
                f"run folder '{run_dir}' holds a {kind!r} run; overwrite=True replaces only a "
                f"run of the same kind, and this is a {task!r} run. Delete the folder by hand "
                "or choose another one"
            )
    if resume:
        logger.info("no run to resume in '%s' (no %s); starting a new one", run_dir, CONFIG_FILE)
    _clear_run(run_dir)
    return None


# ----------------------------------------------------------------- config


def write_config(run_dir: str | os.PathLike, task: str, **sections: Any) -> Path:
    """Write ``config.json``: ``{"gatelab_version", "format", "task", **sections}``.

    In a distributed job it adds ``"world_size"`` and a ``"distributed"`` section (the
    backend and, where a ``train`` section gives ``batch_size``, the global batch and
    the largest per-rank part of it): a reader tells a 2-rank run from two processes that
    happened to share a folder. Single-process runs write no such keys (as before).
    """
    config = {"gatelab_version": _version(), "format": FORMAT_VERSION, "task": task}
    config.update(sections)
    from gatelab.train import distributed

    if distributed.world_size() > 1:
        config.update(distributed.describe(sections))
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
