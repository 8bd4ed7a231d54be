"""Kill tests: training in a child process, SIGKILLed at random moments, resumed to the very
weights of an uninterrupted run; two processes on one run folder.

Each training loop (training.fit through an estimator, seqtrain.fit_loop through the
character LM and the translator) runs a tiny model in child processes. The children fork
from a forkserver that imported gatelab once, so a child starts in milliseconds, not the
seconds an import of torch takes. A child dies by SIGKILL:

- from the parent, after a random delay;
- by its own hand inside the k-th file write (random k), at a random point of it: half
  the bytes written, all written but not renamed, or renamed but the folder not synced;
- by its own hand after the n-th optimizer step (random n).

After each kill the parent clears the stale lock the way its message says, and the next
child resumes. The last child runs to the end; its weights (best and last) must equal an
uninterrupted run's exactly, and no temp file or lock may be left.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import gatelab.train.files as files
import gatelab.train.runs as runs
from gatelab.estimators import SeriesClassifier
from gatelab.tasks.sequence import (
    CharLMTrainConfig,
    TranslatorTrainConfig,
    train_char_lm,
    train_translator,
)
from gatelab.train.runs import LOCK_FILE, RunFolderError, read_checkpoint, read_tensors
from tests.helpers import shape_series

CTX = multiprocessing.get_context("forkserver")
# The server imports torch and gatelab once; torch._dynamo, which the first optimizer
# imports, takes seconds on its own. (The server does not see the repository root on
# Python 3.11, so each child imports this module: pytest and the helpers, preloaded.)
PRELOAD = ["torch._dynamo", "gatelab.estimators", "gatelab.tasks.sequence", "pytest"]
CTX.set_forkserver_preload(PRELOAD)

REFUSED = 3  # a child's exit code when the run folder refuses it (the message in a file)
WHERE = ("half", "before-rename", "after-rename")  # points inside a write to die at

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. " * 6
PAIRS = [
    ("I see a dog.", "Je vois un chien."),
    ("I see a cat.", "Je vois un chat."),
    ("You see a dog.", "Tu vois un chien."),
    ("You see a cat.", "Tu vois un chat."),
    ("We like dogs.", "Nous aimons les chiens."),
    ("We like cats.", "Nous aimons les chats."),
    ("He is here.", "Il est ici."),
    ("She is here.", "Elle est ici."),
] * 3


# ----------------------------------------------------------------- what a child runs


def _estimator(data: Path, run: Path, resume: bool) -> None:
    X, y = shape_series(32, T=8, seed=1)
    params = {"hidden_size": 6, "epochs": 8, "batch_size": 8, "dropout": 0.3, "n_models": 2}
    SeriesClassifier(**params, patience=None).fit(X, y, run_dir=run, resume=resume)


def _char_lm(data: Path, run: Path, resume: bool) -> None:
    model = {"embedding_dim": 8, "hidden_size": 12, "num_layers": 1, "dropout": 0.3}
    train = CharLMTrainConfig(epochs=12, minutes=None, batch_size=4, seq_len=16, lr=1e-2)
    train_char_lm(data / "text.txt", run, model, train, resume=resume)


def _translator(data: Path, run: Path, resume: bool) -> None:
    model = {"embedding_dim": 8, "hidden_size": 8, "dropout": 0.3}
    train = TranslatorTrainConfig(
        epochs=16, batch_size=4, valid=4, test=4, min_freq=1, teacher_forcing=0.5
    )
    train_translator(data / "pairs.txt", run, model, train, resume=resume)


TRAINERS = {"estimator": _estimator, "char-lm": _char_lm, "translator": _translator}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(plan: dict) -> None:
    """Install this child's way to die (see the module's docstring)."""
    if "step" in plan:
        steps = [0]

        def after_step(optimizer, args, kwargs):
            steps[0] += 1
            if steps[0] == plan["step"]:
                _die()

        register_optimizer_step_post_hook(after_step)
    if "write" in plan:
        real_temp, real_replace = files.temp_file, os.replace
        writes, armed = [0], [False]

        def temp_file(folder, prefix, data):
            writes[0] += 1
            if writes[0] == plan["write"]:
                if plan["at"] == "half":
                    fd, _ = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
                    os.write(fd, data[: len(data) // 2])
                    os.fsync(fd)
                    _die()
                if plan["at"] == "before-rename":
                    real_temp(folder, prefix, data)
                    _die()
                armed[0] = True
            return real_temp(folder, prefix, data)

        def replace(src, dst):
            real_replace(src, dst)
            if armed[0]:
                _die()

        files.temp_file = temp_file
        os.replace = replace
    if "slow" in plan:  # hold the folder a while: the first write waits
        real_temp = files.temp_file

        def slow_temp_file(folder, prefix, data):
            if not prefix.startswith(f"{LOCK_FILE}."):
                time.sleep(plan["slow"])
                files.temp_file = real_temp
            return real_temp(folder, prefix, data)

        files.temp_file = slow_temp_file


def _child(kind: str, data: str, run: str, resume: bool, plan: dict) -> None:
    torch.set_num_threads(1)
    _arm(plan)
    try:
        TRAINERS[kind](Path(data), Path(run), resume)
    except RunFolderError as err:
        Path(run).parent.joinpath(f"refused-{os.getpid()}.txt").write_text(str(err))
        os._exit(REFUSED)


def _start(kind: str, data: Path, run: Path, resume: bool, plan: dict):
    p = CTX.Process(target=_child, args=(kind, str(data), str(run), resume, plan))
    p.start()
    return p


def _run(kind: str, data: Path, run: Path, resume: bool, plan: dict) -> int:
    p = _start(kind, data, run, resume, plan)
    if "after_s" in plan:
        p.join(plan["after_s"])
        p.kill()
    p.join(120)
    assert p.exitcode is not None, f"the {kind} child hangs"
    return p.exitcode


# ----------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    lines = [f"{s}\t{t}" for s, t in PAIRS]
    (d / "pairs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    server = CTX.Process(target=os.getpid)  # start the forkserver (seconds), outside any timing
    server.start()
    server.join(120)
    return d


def _assert_same_run(run: Path, reference: Path) -> None:
    a, b = read_tensors(run / runs.WEIGHTS_FILE), read_tensors(reference / runs.WEIGHTS_FILE)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"best weights differ: {k}"
    folders = [p.parent.relative_to(reference) for p in reference.rglob(runs.CHECKPOINT_FILE)]
    assert folders  # the run itself, or each member of an ensemble
    for name in folders:
        (_, last), (_, ref_last) = read_checkpoint(run / name), read_checkpoint(reference / name)
        model = [k for k in ref_last if k.startswith("model.")]
        assert model and last.keys() == ref_last.keys()
        for k in model:
            assert torch.equal(last[k], ref_last[k]), f"last weights differ: {name}/{k}"


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_killed_runs_resume_to_the_weights_of_an_uninterrupted_run(kind, data, tmp_path):
    reference = tmp_path / "reference"
    start = time.perf_counter()
    assert _run(kind, data, reference, False, {}) == 0
    duration = time.perf_counter() - start  # timed kills fall inside a run of this length
    rng = random.Random(f"{kind}-7")
    plans = []
    for _ in range(3):
        plans.append({"after_s": rng.uniform(0.05, 0.3) * duration})
        plans.append({"write": rng.randint(1, 6), "at": rng.choice(WHERE)})
        plans.append({"step": rng.randint(1, 8)})
    run = tmp_path / "run"
    killed = 0
    for k, plan in enumerate(plans):
        code = _run(kind, data, run, k > 0, plan)
        assert code in (0, -signal.SIGKILL), f"round {k} ({plan}) ended with {code}"
        if code == -signal.SIGKILL:
            killed += 1
            print(f"round {k}: killed ({plan})")
            if (run / LOCK_FILE).exists():
                with pytest.raises(RunFolderError, match="stale lock"):
                    with runs.run_lock(run):
                        pass
                assert runs.clear_stale_lock(run)
    # a round may end before its moment comes (a timed kill on a fast machine, or little
    # left to do); the budgets leave room for most kills to land
    assert killed >= 5, f"only {killed} of {len(plans)} rounds killed the child"
    assert _run(kind, data, run, True, {}) == 0
    _assert_same_run(run, reference)
    left = [p.name for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == LOCK_FILE]
    assert left == []


def test_two_processes_on_one_run_folder_exactly_one_is_refused(data, tmp_path):
    run = tmp_path / "run"
    children = [_start("estimator", data, run, False, {"slow": 1.0}) for _ in range(2)]
    for p in children:
        p.join(120)
    codes = sorted(p.exitcode for p in children)
    assert codes == [0, REFUSED], codes
    winner = next(p for p in children if p.exitcode == 0)
    (message,) = [f.read_text() for f in tmp_path.glob("refused-*.txt")]
    assert f"run folder '{run}' is in use by process {winner.pid} on" in message
    assert "wait for it to end, or choose another folder" in message
    assert not (run / LOCK_FILE).exists()
    assert read_tensors(run / runs.WEIGHTS_FILE)
