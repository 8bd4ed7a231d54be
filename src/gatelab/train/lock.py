"""The run folder's lock: one process at a time works in a folder.

The lock file appears whole (its record of pid and host is written under a private name,
then hard-linked to ``.lock``, which fails if the name exists; ``O_EXCL`` creation where
links are not supported). A lock whose process no longer runs is reported with how to
clear it (:func:`clear_stale_lock`), never taken over silently. Taking the lock removes what
a killed writer left (:func:`clean_folder`).

In a distributed job (:mod:`gatelab.train.distributed`) only rank 0 takes the lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gatelab.errors import RunFolderError, RunLockedError
from gatelab.train import files
from gatelab.train.checkpoint import CHECKPOINT_FILE, TENSORS_NAME, named_tensors
from gatelab.train.distributed import is_writer
from gatelab.train.files import TMP_NAME

__all__ = ["LOCK_FILE", "MEMBER_PREFIX", "clean_folder", "clear_stale_lock", "members", "run_lock"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
MEMBER_PREFIX = "member-"  # the subfolders of an ensemble's members: member-0, member-1, ...


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
    tmp = files.temp_file(path.parent, f"{LOCK_FILE}.", data)
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
                files.write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
    files.fsync_dir(path.parent)


def _release(path: Path) -> None:
    _, record = _lock_state(path)
    if record is not None and record.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
        files.fsync_dir(path.parent)
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


def members(folder: Path) -> list[Path]:
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
    for d in [folder, *members(folder)]:
        named = named_tensors(d)
        unreadable = named is None and (d / CHECKPOINT_FILE).exists()
        for p in d.iterdir():
            # another process's lock record in flight may go too: its link then fails
            # and it reports the folder as locked, which it is
            leftover_tmp = TMP_NAME.match(p.name)
            orphan = TENSORS_NAME.match(p.name) and not unreadable and p.name != named
            if (leftover_tmp or orphan) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
        if removed:
            files.fsync_dir(d)
    if removed:
        logger.info("removed %d file(s) a killed run left: %s", len(removed), removed)
    return removed
