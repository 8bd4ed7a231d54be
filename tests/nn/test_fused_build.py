"""The fused extension's build lock: a build killed mid-way must not hang later uses.

torch marks a build in progress with an empty ``lock`` file and waits for it to vanish; a
process killed while compiling left one behind and every later first use waited forever
(seen when a test worker was killed on a timeout during a rebuild).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gatelab.nn.backends import _build_lock
from gatelab.nn.backends._build_lock import _running_in, build_lock

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="fcntl locks and /proc (Linux)"
)

SRC = str(Path(_build_lock.__file__).resolve().parents[3])

# A builder that takes the folder, marks a torch build in progress, starts a "compiler"
# working in the folder (as torch's ninja does) that outlives it, then hangs.
HOLDER = """
import subprocess, sys, time
from pathlib import Path
from gatelab.nn.backends._build_lock import build_lock
folder = Path(sys.argv[1])
with build_lock(folder):
    (folder / "lock").touch()
    compiler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"], cwd=folder)
    print("holding", compiler.pid, flush=True)
    time.sleep(600)
"""


def test_a_stale_torch_lock_is_removed(tmp_path):
    (tmp_path / "lock").touch()
    with build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
    from torch.utils.file_baton import FileBaton

    baton = FileBaton(str(tmp_path / "lock"))
    assert baton.try_acquire()  # torch's own lock can be taken again
    baton.release()


def test_a_killed_builder_leaves_nothing_that_blocks(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        word, compiler = child.stdout.readline().split()
        assert word == "holding"
        with open(tmp_path / "gatelab.lock", "a") as f:  # a live builder holds the folder
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
    assert (tmp_path / "lock").exists()  # what the killed build left
    assert int(compiler) in _running_in(tmp_path)  # its compiler still runs
    with build_lock(tmp_path):  # the kernel freed the dead one's lock
        assert not (tmp_path / "lock").exists()
        with pytest.raises(OSError):  # entered only once the orphan had ended
            os.readlink(f"/proc/{compiler}/cwd")


def test_without_a_folder_or_a_lock_torch_alone_guards_the_build(tmp_path):
    """No folder (torch's private helper moved), or one that cannot be made (here a path
    under a file): the build goes on under torch's own lock, with no error."""
    entered = []
    with build_lock(None):
        entered.append("none")
    (tmp_path / "file").write_text("")
    with build_lock(tmp_path / "file" / "build"):
        entered.append("unusable")
    assert entered == ["none", "unusable"]
