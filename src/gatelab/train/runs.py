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
experiments) follows one protocol, all of it here:

- :func:`run_lock`: one process at a time. The lock file appears whole (its record of pid
  and host is written under a private name, then hard-linked to ``.lock``, which fails if
  the name exists; ``O_EXCL`` creation where links are not supported). A lock whose
  process no longer runs is reported with how to clear it, never taken over silently.
- :func:`start_run`: a fresh run refuses a folder that holds one (unless told to
  overwrite it); a resumed run refuses other options or other data (the fingerprints),
  listing each difference.
- A write order such that a kill at any instant leaves the previous or the next
  consistent state: the config before any checkpoint (a config without a checkpoint
  resumes from the start), a checkpoint pair in one order (:func:`write_checkpoint`), the
  derived files (best weights, metrics) after the checkpoint that records them.
- Every file is written atomically (:func:`atomic_write_bytes`): a temporary
  ``.NAME.*.tmp`` in the same folder, fsync, ``os.replace``, fsync of the folder; the
  file honours the umask. A killed writer's temporary files are removed when the next
  process takes the lock.

In a distributed job (:mod:`gatelab.train.distributed`) only rank 0 writes: on the other ranks
the writes, removals and the lock here do nothing, so that they never touch the folder.

Nothing is ever read with pickle: tensors come from safetensors, everything else from
JSON. A folder from another gatelab major version, or with a missing or corrupt file,
raises :class:`RunFolderError` naming the file. See docs/run-folders.md for what these
guarantees rest on.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from gatelab.errors import GatelabError
from gatelab.train.distributed import is_writer

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
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "read_checkpoint",
    "read_config",
    "read_json",
    "read_tensors",
    "remove_checkpoint",
    "run_lock",
    "set_rng_tensors",
    "start_run",
    "write_checkpoint",
    "write_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.json"
LOCK_FILE = ".lock"
MEMBER_PREFIX = "member-"  # the subfolders of an ensemble's members: member-0, member-1, ...
FORMAT_VERSION = 1

_TMP_NAME = re.compile(r"^\..+\..+\.tmp$")  # .NAME.XXXX.tmp, what atomic_write_bytes makes
_CHECKPOINT_TENSORS = re.compile(r"^checkpoint-\d+(-\d+)?\.safetensors$")


class RunFolderError(GatelabError, ValueError):
    """A run folder is missing, incomplete, corrupt, or from another gatelab version."""


class RunLockedError(RunFolderError):
    """Another process holds the run folder's lock, or a dead one left it behind."""


def _version() -> str:
    from gatelab._version import __version__

    return __version__


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


def _fsync_dir(folder: Path) -> None:
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _temp_file(folder: Path, prefix: str, data: bytes) -> Path:
    """A new file ``{prefix}XXXX.tmp`` in ``folder`` holding ``data``, on disk (fsync),
    mode ``0o666 & ~umask``; removed again if anything fails."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        try:
            if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
                os.fchmod(fd, 0o666 & ~_umask())
            _write_all(fd, data)
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
    tmp = _temp_file(path.parent, f".{path.name}.", data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
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


def _named_tensors(folder: Path) -> str | None:
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
    previous = _named_tensors(folder)
    name, k = f"checkpoint-{epoch:04d}.safetensors", 0
    while name == previous:
        k += 1
        name = f"checkpoint-{epoch:04d}-{k}.safetensors"
    atomic_write_tensors(folder / name, tensors, metadata={"epoch": str(epoch)})
    path = atomic_write_json(folder / CHECKPOINT_FILE, {**state, "tensors": name})
    if previous is not None:
        (folder / previous).unlink(missing_ok=True)
        _fsync_dir(folder)
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
        _fsync_dir(folder)


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


# ----------------------------------------------------------------- the lock

_held: dict[Path, tuple[int, int]] = {}  # folder -> (pid, thread) holding it in this process
_held_guard = threading.Lock()


def _holds(folder: Path) -> bool:
    me = (os.getpid(), threading.get_ident())
    return any(_held.get(p) == me for p in (folder, *folder.parents))


def _proc_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), which tells a reused pid
    from the original; None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return True
    now = _proc_start(pid)
    return start is None or now is None or now == start


def _lock_record() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "process_start": _proc_start(pid),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _lock_state(path: Path) -> tuple[str, dict[str, Any] | None]:
    """``("free" | "alive" | "stale" | "elsewhere" | "unreadable", record)``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "free", None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "unreadable", None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return "unreadable", None
    if record.get("host") != socket.gethostname():
        return "elsewhere", record
    alive = _alive(record["pid"], record.get("process_start"))
    return ("alive" if alive else "stale"), record


def _lock_message(path: Path, state: str, record: dict[str, Any] | None) -> str:
    folder = path.parent
    if state == "alive":
        return (
            f"run folder '{folder}' is in use by process {record['pid']} on {record['host']} "
            f"(lock '{path}', taken {record.get('since')}); wait for it to end, or choose "
            "another folder"
        )
    if state == "stale":
        return (
            f"run folder '{folder}' has a stale lock: process {record['pid']} on "
            f"{record['host']}, which took it {record.get('since')}, no longer runs (it was "
            f"killed or crashed). The folder is as that process left it; delete '{path}' "
            "(or call gatelab.train.runs.clear_stale_lock) and start again, with --resume "
            "(resume=True) to continue the run"
        )
    if state == "elsewhere":
        return (
            f"run folder '{folder}' is locked by process {record['pid']} on host "
            f"{record.get('host')!r}; this host ({socket.gethostname()!r}) cannot tell "
            f"whether it still runs. If it does not, delete '{path}' and start again"
        )
    return (
        f"run folder '{folder}' is locked by '{path}', which does not say who holds it (it is "
        "unreadable); if no gatelab process uses the folder, delete it and start again"
    )


def _acquire(path: Path) -> None:
    data = (json.dumps(_lock_record()) + "\n").encode("utf-8")
    tmp = _temp_file(path.parent, f"{LOCK_FILE}.", data)
    try:
        try:
            os.link(tmp, path)  # fails if the lock exists: the whole record or nothing
        except FileExistsError:
            raise RunLockedError(_lock_message(path, *_lock_state(path))) from None
        except OSError:  # no hard links here (some FUSE, FAT): exclusive creation instead
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise RunLockedError(_lock_message(path, *_lock_state(path))) from None
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _release(path: Path) -> None:
    _, record = _lock_state(path)
    if record is not None and record.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    else:  # someone removed our lock by hand, and maybe another process took it since
        logger.warning("the lock '%s' is no longer this process's; left as it is", path)


_ANCESTOR_LEVELS = 3  # how far up a lock covers: member-K folders sit one level down


def _ancestor_lock(key: Path) -> str | None:
    """The message for a live lock of another process on a folder up to
    ``_ANCESTOR_LEVELS`` above ``key`` (or on another host), else None."""
    for parent in key.parents[:_ANCESTOR_LEVELS]:
        path = parent / LOCK_FILE
        state, record = _lock_state(path)
        if state == "elsewhere" or (state == "alive" and record["pid"] != os.getpid()):
            return f"run folder '{key}' is inside a locked one: " + _lock_message(
                path, state, record
            )
    return None


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for this process: ``with run_lock(d): ...``.

    Takes ``folder/.lock`` (pid, host, process start and time), then removes what a killed
    writer left (:func:`clean_folder`); on leaving, releases the lock. Re-entrant: a
    thread that holds a folder, or a folder above it, passes straight through. A folder
    up to three levels below one another process holds (an ensemble's ``member-K``) is
    refused too.

    On a distributed job's ranks other than 0 it takes nothing and touches nothing:
    rank 0 holds the folder for the job.

    Raises:
        RunLockedError: another process holds the folder or a folder above it, or a dead
            process left its lock (the message says which, and how to clear a stale lock).
    """
    folder = Path(folder)
    if not is_writer():
        yield folder
        return
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"run folder '{folder}' exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if _holds(key):
        yield folder
        return
    path = key / LOCK_FILE
    _acquire(path)
    above = _ancestor_lock(key)  # after taking ours: a racing parent's lock is seen
    if above is not None:
        _release(path)
        raise RunLockedError(above)
    with _held_guard:
        _held[key] = (os.getpid(), threading.get_ident())
    try:
        clean_folder(folder)
        yield folder
    finally:
        with _held_guard:
            _held.pop(key, None)
        _release(path)


def clear_stale_lock(folder: str | os.PathLike) -> bool:
    """Remove ``folder``'s lock if the process that took it no longer runs on this host.

    Returns True if a stale lock was removed, False if there was none.

    Raises:
        RunLockedError: the lock's process still runs, runs on another host, or the lock
            cannot be read: then only a person can tell, and removes it by hand.
    """
    path = Path(folder) / LOCK_FILE
    state, record = _lock_state(path)
    if state == "free":
        return False
    if state != "stale":
        raise RunLockedError(_lock_message(path, state, record))
    path.unlink(missing_ok=True)
    logger.warning("removed the stale lock of process %s in '%s'", record["pid"], folder)
    return True


def _members(folder: Path) -> list[Path]:
    """The ensemble members' subfolders (``member-K``); never other folders, which may be
    other runs."""
    return sorted(
        d
        for d in folder.glob(f"{MEMBER_PREFIX}*")
        if d.is_dir() and d.name[len(MEMBER_PREFIX) :].isdigit()
    )


def clean_folder(folder: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer left in ``folder`` and its members' subfolders: temp
    files ``.NAME.*.tmp`` and checkpoint tensors that no ``checkpoint.json`` names.

    Only for a folder this process holds (:func:`run_lock` calls it). A checkpoint.json
    that cannot be read keeps every tensors file. Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not is_writer():
        return removed
    for d in [folder, *_members(folder)]:
        named = _named_tensors(d)
        unreadable = named is None and (d / CHECKPOINT_FILE).exists()
        for p in d.iterdir():
            # another process's lock record in flight may go too: its link then fails
            # and it reports the folder as locked, which it is
            leftover_tmp = _TMP_NAME.match(p.name)
            orphan = _CHECKPOINT_TENSORS.match(p.name) and not unreadable and p.name != named
            if (leftover_tmp or orphan) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
        if removed:
            _fsync_dir(d)
    if removed:
        logger.info("removed %d file(s) a killed run left: %s", len(removed), removed)
    return removed


# ----------------------------------------------------------------- fingerprints, resume


def fingerprint_file(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a file (read in 1 MiB chunks)."""
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(path), "size": size, "sha256": digest.hexdigest()}


def fingerprint_tensors(*tensors: Tensor | None) -> dict[str, Any]:
    """``{"size", "sha256"}`` over the dtypes, shapes and bytes of ``tensors`` (None skipped):
    the fingerprint of in-memory data."""
    digest = hashlib.sha256()
    size = 0
    for t in tensors:
        if t is None:
            continue
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():  # hashed through the buffer protocol: no copy of the data
            data = t.view(torch.uint8).numpy()
            digest.update(data)
            size += data.nbytes
    return {"size": size, "sha256": digest.hexdigest()}


def _is_fingerprint(value: Any) -> bool:
    return isinstance(value, dict) and "sha256" in value and "size" in value


def _differences(saved: Any, now: Any, prefix: str) -> list[tuple[str, str]]:
    if _is_fingerprint(saved) and _is_fingerprint(now):
        if (saved["size"], saved["sha256"]) == (now["size"], now["sha256"]):
            return []
        where = f" ('{now['path']}')" if now.get("path") else ""
        return [
            (
                prefix,
                f"{prefix}: the data changed{where}: saved {saved['size']} bytes, sha256 "
                f"{saved['sha256'][:12]}..., now {now['size']} bytes, sha256 "
                f"{now['sha256'][:12]}...",
            )
        ]
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[tuple[str, str]] = []
        for key in list(saved) + [k for k in now if k not in saved]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in now:
                out.append((name, f"{name}: saved {saved[key]!r}, now not given"))
            elif key not in saved:
                out.append((name, f"{name}: not saved, now {now[key]!r}"))
            else:
                out += _differences(saved[key], now[key], name)
        return out
    if json_safe(saved) != json_safe(now):
        return [(prefix, f"{prefix}: saved {saved!r}, now {now!r}")]
    return []


def differences(saved: Any, now: Any, free: Collection[str] = ()) -> list[str]:
    """Each difference between two JSON values, as ``"key.path: saved X, now Y"`` lines,
    leaving out the dotted keys in ``free``.

    Fingerprints (dicts with ``size`` and ``sha256``) compare by content, not by path.
    """
    return [text for key, text in _differences(saved, now, "") if key not in free]


def check_same(
    run_dir: str | os.PathLike, saved: Any, now: Any, free: Collection[str] = ()
) -> None:
    """Refuse to resume ``run_dir`` unless ``now`` equals ``saved`` (options and input
    fingerprints) but for the dotted keys in ``free``; the RunFolderError lists every
    difference."""
    found = differences(saved, now, free)
    if found:
        raise RunFolderError(
            f"cannot resume '{run_dir}': it was started with other options or data, and "
            f"resuming needs the same ones. {len(found)} difference(s): "
            + "; ".join(found)
            + ". Give the same options and data, or start a new run in another folder"
        )


def _clear_run(run_dir: Path) -> None:
    """Remove a previous run's files: config first (the folder then holds no run, so a
    kill half way leaves a folder a fresh start accepts), then weights, metrics,
    checkpoints, here and in the members' subfolders (``member-K``)."""
    (run_dir / CONFIG_FILE).unlink(missing_ok=True)
    _fsync_dir(run_dir)
    for d in [run_dir, *_members(run_dir)]:
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
