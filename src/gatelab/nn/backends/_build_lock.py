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

    torch marks a build in progress with an empty file ``lock`` in the build folder and
    makes every other process wait until it is gone; a process killed while compiling
    (Ctrl-C, a timeout) leaves it behind, and every later first use then waits forever,
    silently. gatelab takes an ``fcntl`` lock on ``gatelab.lock`` first: the kernel drops
    it when its holder dies, so the holder is the only live builder, and a torch ``lock``
    found while holding it is stale and removed (with a warning). Without ``fcntl``
    (Windows), or without the folder, torch's own lock is all there is. The compiler a
    killed build started may outlive it: the lock goes only once no process works in the
    folder (:func:`_wait_for_orphans`).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        fcntl = None
    if fcntl is None or folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "gatelab.lock", "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to build the fused kernels in %s", folder)
            fcntl.flock(held, fcntl.LOCK_EX)
        try:
            stale = folder / "lock"
            if stale.exists():
                _wait_for_orphans(folder)
                logger.warning("removing %s, left by a build that was killed", stale)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


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
