"""Atomic writes and checked reads of the files in a run folder: one writer for every file
gatelab saves (run folders, ONNX and Keras exports, reports).

Every file is written atomically (:func:`atomic_write_bytes`): a temporary ``.NAME.*.tmp``
in the same folder, fsync, ``os.replace``, fsync of the folder; the file honours the
umask. A killed writer's temporary files are removed when the next process takes the lock
(:func:`gatelab.train.lock.clean_folder`). Nothing is ever read with pickle: tensors come
from safetensors, everything else from JSON; a missing or corrupt file raises
:class:`~gatelab.errors.RunFolderError` naming it.

In a distributed job (:mod:`gatelab.train.distributed`) only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import Tensor

from gatelab.errors import RunFolderError
from gatelab.train.distributed import is_writer

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_tensors",
    "atomic_write_text",
    "json_safe",
    "read_json",
    "read_tensors",
]

TMP_NAME = re.compile(r"^\..+\..+\.tmp$")  # .NAME.XXXX.tmp, what atomic_write_bytes makes

# ----------------------------------------------------------------- atomic writes


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be
    creating files meanwhile); else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (POSIX; a no-op where folders cannot
    be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; nothing more to do there
        pass
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def temp_file(folder: Path, prefix: str, data: bytes) -> Path:
    """A new file ``{prefix}XXXX.tmp`` in ``folder`` holding ``data``, on disk (fsync),
    mode ``0o666 & ~umask``; removed again if anything fails."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        try:
            if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
                os.fchmod(fd, 0o666 & ~_umask())
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file ``.NAME.*.tmp`` in the same
    folder, fsync, rename over ``path``, fsync of the folder.

    The file gets mode ``0o666 & ~umask`` like any new file (``mkstemp`` alone would make
    it ``0o600``). On any failure the temp file is removed and ``path`` keeps its old
    content (or stays absent); after a kill, :func:`clean_folder` removes it. On a
    distributed job's ranks other than 0 it writes nothing
    (:func:`gatelab.train.distributed.is_writer`).
    """
    path = Path(path)
    if not is_writer():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path.parent, f".{path.name}.", data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN/inf refused: they are not JSON) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


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


def json_safe(value: Any) -> Any:
    """``value`` as JSON holds it, recursively: tuples become lists, and a NaN or infinite
    float becomes None (JSON has no such numbers; :func:`atomic_write_json` refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, list)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value
