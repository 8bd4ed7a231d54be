"""The fused extension's build lock: a build killed mid-way must not hang later uses.

torch marks a build in progress with an empty file ``lock`` in the build folder and makes
every other process wait until it is gone; a process killed while compiling (Ctrl-C, a
timeout) leaves it behind, and every later first use then waits forever, silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

__all__ = ["build_lock"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def build_lock(folder: Path | None):
    """Hold the build folder for this process, and clear a lock a killed build left.

    gatelab takes an ``fcntl`` lock on ``gatelab.lock`` first: the kernel drops it when its
    holder dies, so the holder is the only live builder, and a torch ``lock`` found while
    holding it is stale and removed (with a warning), once no process works in the folder
    any more (the compiler a killed build started may outlive it: :func:`_wait_for_orphans`).
    Without ``fcntl`` (Windows), without the folder, or where the file system refuses the
    lock, torch's own lock is all there is.
    """
    held = _acquire(folder) if folder is not None else None
    if held is None:
        yield
        return
    with held:  # closing the file releases the lock
        stale = folder / "lock"
        if stale.exists():
            _wait_for_orphans(folder)
            logger.warning("removing %s, left by a build that was killed", stale)
            stale.unlink(missing_ok=True)
        yield


def _acquire(folder: Path):
    """``folder/gatelab.lock`` open and locked (waiting for another holder), or None."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    held = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        held = open(folder / "gatelab.lock", "a")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to build the fused kernels in %s", folder)
            fcntl.flock(held, fcntl.LOCK_EX)
        return held
    except OSError as err:  # a read-only folder, a file system without locks, ...
        logger.info("building without gatelab's lock (%s)", err)
        if held is not None:
            held.close()
        return None


def _running_in(folder: Path) -> list[int]:
    """Pids of the other processes whose working folder is ``folder`` (torch runs ninja,
    and so the compiler, there). Linux only (``/proc``); elsewhere none are seen."""
    target, pids = str(folder.resolve()), []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                with contextlib.suppress(OSError):  # gone, a zombie, or not ours to read
                    if os.readlink(f"/proc/{entry}/cwd") == target:
                        pids.append(int(entry))
    return pids


def _wait_for_orphans(folder: Path, poll_s: float = 0.5) -> None:
    """Wait while a compiler that a killed build left runs in ``folder``: starting a second
    build beside it would race it for the same files."""
    pids = _running_in(folder)
    if pids:
        logger.info("waiting for processes %s, still building in %s", pids, folder)
    while pids:
        time.sleep(poll_s)
        pids = _running_in(folder)
