"""The run-folder protocol (gatelab.train.runs): lock, start/resume checks, write order, files.

Kill tests (child processes SIGKILLed mid-training) live in test_kill.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import gatelab.train.lock as run_lock_module
import gatelab.train.runs as runs
from gatelab.estimators import SeriesClassifier
from gatelab.tasks.sequence import CharLMTrainConfig, train_char_lm
from gatelab.train.runs import (
    LOCK_FILE,
    RunFolderError,
    RunLockedError,
    atomic_write_json,
    atomic_write_tensors,
    clear_stale_lock,
    fingerprint_file,
    read_checkpoint,
    run_lock,
    write_checkpoint,
)
from tests.helpers import shape_series

TEXT = "the quick brown fox jumps over the lazy dog. " * 12
TINY_LM = {"embedding_dim": 8, "hidden_size": 12, "num_layers": 1, "dropout": 0.2}
TINY_TRAIN = CharLMTrainConfig(epochs=2, minutes=None, batch_size=4, seq_len=16, lr=1e-2)


def _text(tmp_path: Path, text: str = TEXT) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return runs.read_tensors(run / runs.WEIGHTS_FILE)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    _, ta = read_checkpoint(a)
    _, tb = read_checkpoint(b)
    for k in ta:
        if k.startswith("model."):
            assert torch.equal(ta[k], tb[k]), k


# ----------------------------------------------------------------- the lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(folder: Path, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_the_lock_records_pid_and_host_and_goes_away_at_the_end(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        record = json.loads((run / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with run_lock(run), run_lock(run / "member-0"):  # re-entrant, also below
            pass
        assert (run / LOCK_FILE).exists()
    assert not (run / LOCK_FILE).exists()


def test_a_stale_lock_is_reported_with_how_to_clear_it_never_taken(tmp_path):
    run = tmp_path / "run"
    lock = _write_lock(run, pid=_dead_pid(), host=socket.gethostname(), since="then")
    with pytest.raises(RunLockedError, match=r"stale lock.*no longer runs.*delete '.*\.lock'"):
        with run_lock(run):
            pass
    assert lock.exists()  # reported, not stolen
    assert clear_stale_lock(run) is True
    assert clear_stale_lock(run) is False
    with run_lock(run):
        pass


def test_a_lock_of_a_live_process_refuses_and_cannot_be_cleared(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        start = run_lock_module._proc_start(sleeper.pid)
        _write_lock(run, pid=sleeper.pid, host=socket.gethostname(), process_start=start)
        with pytest.raises(RunLockedError, match=rf"in use by process {sleeper.pid} on"):
            with run_lock(run):
                pass
        with pytest.raises(RunLockedError, match="in use"):
            clear_stale_lock(run)
        # the same pid with another start time is a reused pid: the lock is stale
        _write_lock(run, pid=sleeper.pid, host=socket.gethostname(), process_start="1")
        if start is not None:
            assert clear_stale_lock(run) is True
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_folder_inside_one_another_process_holds_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from gatelab.train.runs import run_lock\n"
            f"with run_lock({str(run)!r}):\n"
            "    print('held', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(runs.__file__).parents[2])},
    )
    try:
        assert holder.stdout.readline() == "held\n"
        for inner in (run / "member-0", run / "a" / "b" / "c"):
            with pytest.raises(RunLockedError, match=rf"inside a locked one.*{holder.pid}"):
                with run_lock(inner):
                    pass
            assert not (inner / LOCK_FILE).exists()  # ours was released
        with run_lock(run / "a" / "b" / "c" / "d"):  # beyond three levels: not covered
            pass
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    with run_lock(run / "member-0"):  # free once the holder ends
        pass


def test_unreadable_and_foreign_locks_name_the_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("")
    with pytest.raises(RunLockedError, match=r"unreadable.*delete it"):
        clear_stale_lock(run)
    _write_lock(run, pid=1, host="elsewhere.example")
    with pytest.raises(RunLockedError, match=r"host 'elsewhere\.example'.*cannot tell"):
        with run_lock(run):
            pass


def test_another_thread_is_refused(tmp_path):
    errors = []

    def other():
        try:
            with run_lock(tmp_path / "run"):
                pass
        except RunLockedError as err:
            errors.append(str(err))

    with run_lock(tmp_path / "run"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and f"in use by process {os.getpid()}" in errors[0]


# ----------------------------------------------------------------- files


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        write_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {})
    finally:
        os.umask(old)
    for name in ("a.json", "checkpoint.json", "checkpoint-0001.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        return real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_tensors(tmp_path / "w.safetensors", {"w": torch.ones(2)})
    assert events == ["fsync-file", "rename", "fsync-dir"]


def test_write_checkpoint_removes_only_the_file_its_json_named(tmp_path):
    write_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {"epoch": 1})
    foreign = tmp_path / "checkpoint-0009.safetensors"  # e.g. another process's
    foreign.write_bytes(b"not mine")
    write_checkpoint(tmp_path, 2, {"w": torch.full((2,), 2.0)}, {"epoch": 2})
    assert foreign.read_bytes() == b"not mine"
    assert not (tmp_path / "checkpoint-0001.safetensors").exists()
    # a second checkpoint of one epoch never replaces the file the JSON names
    write_checkpoint(tmp_path, 2, {"w": torch.full((2,), 3.0)}, {"epoch": 2, "again": True})
    state, tensors = read_checkpoint(tmp_path)
    assert state["tensors"] == "checkpoint-0002-1.safetensors" and tensors["w"][0] == 3.0
    assert not (tmp_path / "checkpoint-0002.safetensors").exists()


def test_leftover_temp_files_and_orphan_tensors_go_on_the_next_start(tmp_path):
    run = tmp_path / "run"
    write_checkpoint(run, 1, {"w": torch.ones(2)}, {"epoch": 1})
    leftovers = [
        run / ".model.safetensors.k2j3h4.tmp",
        run / ".checkpoint.json.abcd.tmp",
        run / "checkpoint-0002.safetensors",  # written, then killed before its JSON
        run / "member-0" / ".metrics.json.x1.tmp",
    ]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    keep = [run / "notes.tmp", run / "other-run" / ".config.json.x.tmp"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not ours")
    with run_lock(run):
        pass
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in keep)
    assert read_checkpoint(run)[1]["w"].tolist() == [1.0, 1.0]


def test_report_outputs_are_written_atomically(tmp_path, monkeypatch):
    from gatelab.insight.report import write_report

    path = tmp_path / "r.html"
    path.write_text("old report", encoding="utf-8")

    def broken_replace(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report({"title": "t", "layers": []}, path)
    assert path.read_text(encoding="utf-8") == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_fingerprints_and_differences():
    a = {"size": 3, "sha256": "ab" * 32, "path": "/x"}
    b = {"size": 3, "sha256": "ab" * 32, "path": "/moved"}
    assert runs.differences({"inputs": a}, {"inputs": b}) == []
    c = {"size": 4, "sha256": "cd" * 32, "path": "/x"}
    found = runs.differences(
        {"inputs": {"data": a}, "train": {"lr": 1}}, {"inputs": {"data": c}, "train": {"lr": 2}}
    )
    assert len(found) == 2
    assert found[0].startswith("inputs.data: the data changed ('/x'): saved 3 bytes")
    assert found[1] == "train.lr: saved 1, now 2"
    assert (
        runs.differences({"train": {"epochs": 1}}, {"train": {"epochs": 2}}, free=["train.epochs"])
        == []
    )


def test_differences_within_a_relative_tolerance():
    """Values computed from the data (a resumed run's scaler, a fitted linear part) may
    differ in the last bits on another CPU: with ``rel_tol`` floats compare within it,
    lists element by element; ints, strings and larger differences still count; without
    it every float must be equal."""
    saved = {"scale": 0.16476469796946414, "coef": [0.35061204453269573, -0.2238], "mean": 0.0}
    close = {"scale": 0.16476469796946352, "coef": [0.3506120445326907, -0.2238], "mean": 1e-17}
    assert runs.differences(saved, close, rel_tol=1e-9) == []
    assert len(runs.differences(saved, close)) == 3  # exact: scale, coef, mean
    far = {"scale": 0.165, "coef": [0.35061204453269573, -0.2239], "mean": 0.0}
    assert runs.differences(saved, far, rel_tol=1e-9) == [
        "scale: saved 0.16476469796946414, now 0.165",
        "coef[1]: saved -0.2238, now -0.2239",
    ]
    assert runs.differences({"n": 3, "t": "a"}, {"n": 4, "t": "b"}, rel_tol=0.5) == [
        "n: saved 3, now 4",
        "t: saved 'a', now 'b'",
    ]
    assert runs.differences({"coef": [1.0]}, {"coef": [1.0, 2.0]}, rel_tol=1e-9) == [
        "coef: saved [1.0], now [1.0, 2.0]"
    ]


def test_fingerprint_tensors_hashes_the_bytes_without_copying_them():
    import hashlib
    import tracemalloc

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 20, generator=g)  # 4 MiB
    ids = torch.arange(6, dtype=torch.int64).reshape(2, 3).t()  # not contiguous
    empty = torch.zeros(0, 3)
    want = hashlib.sha256()
    for t in (x, ids.contiguous(), empty):
        want.update(f"{t.dtype}{tuple(t.shape)};".encode())
        want.update(t.numpy().tobytes())
    tracemalloc.start()
    try:
        got = runs.fingerprint_tensors(x, None, ids, empty)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == {"size": 4 * (1 << 20) + 8 * 6, "sha256": want.hexdigest()}
    assert peak < (1 << 20), f"{peak} bytes allocated: the data were copied"


# ----------------------------------------------------------------- char LM and translator runs


def test_char_lm_resume_refuses_changed_model_options_listing_each(tmp_path):
    data, run = _text(tmp_path), tmp_path / "run"
    train_char_lm(data, run, TINY_LM, TINY_TRAIN)
    other = {**TINY_LM, "hidden_size": 16, "dropout": 0.0}
    with pytest.raises(RunFolderError) as err:
        train_char_lm(data, run, other, TINY_TRAIN, resume=True)
    message = str(err.value)
    assert "2 difference(s)" in message
    assert "model.hidden_size: saved 12, now 16" in message
    assert "model.dropout: saved 0.2, now 0.0" in message
    # a longer budget is what resuming is for
    more = CharLMTrainConfig(**{**TINY_TRAIN.__dict__, "epochs": 3})
    metrics = train_char_lm(data, run, TINY_LM, more, resume=True)
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3]


def test_char_lm_resume_refuses_a_changed_data_file(tmp_path):
    data, run = _text(tmp_path), tmp_path / "run"
    train_char_lm(data, run, TINY_LM, TINY_TRAIN)
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"]["data"] == fingerprint_file(data)
    data.write_text(TEXT.replace("dog", "cat"), encoding="utf-8")  # same size, other text
    with pytest.raises(RunFolderError, match=r"inputs\.data: the data changed .*sha256"):
        train_char_lm(data, run, TINY_LM, TINY_TRAIN, resume=True)


def test_translator_resume_refuses_changed_options_and_data(tmp_path):
    from gatelab.tasks.sequence import TranslatorTrainConfig, train_translator

    pairs = [("I see a dog.", "Je vois un chien."), ("We like cats.", "Nous aimons les chats.")]
    data = tmp_path / "pairs.txt"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in pairs * 6), encoding="utf-8")
    model = {"embedding_dim": 8, "hidden_size": 8, "dropout": 0.0}
    train = TranslatorTrainConfig(epochs=1, batch_size=4, valid=2, test=2, min_freq=1)
    run = tmp_path / "run"
    train_translator(data, run, model, train)
    other = TranslatorTrainConfig(epochs=2, batch_size=4, valid=2, test=2, min_freq=1, seed=1)
    with pytest.raises(RunFolderError) as err:
        train_translator(data, run, {**model, "attention": "dot"}, other, resume=True)
    assert "model.attention: saved 'general', now 'dot'" in str(err.value)
    assert "train.seed: saved 0, now 1" in str(err.value)
    assert "train.epochs" not in str(err.value)  # the budget may grow
    data.write_text(data.read_text(encoding="utf-8") * 2, encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"inputs\.data: the data changed"):
        train_translator(data, run, model, train, resume=True)


def test_a_kill_between_config_and_first_checkpoint_resumes(tmp_path, monkeypatch):
    import gatelab.tasks.sequence as seqtasks

    data = _text(tmp_path)
    train_char_lm(data, tmp_path / "straight", TINY_LM, TINY_TRAIN)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the config is on disk, no checkpoint yet

    monkeypatch.setattr(seqtasks, "fit_loop", killed)
    with pytest.raises(KeyboardInterrupt):
        train_char_lm(data, tmp_path / "run", TINY_LM, TINY_TRAIN)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert (run / "config.json").exists() and not (run / "checkpoint.json").exists()
    assert not (run / LOCK_FILE).exists()
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_char_lm(data, run, TINY_LM, TINY_TRAIN)
    train_char_lm(data, run, TINY_LM, TINY_TRAIN, resume=True)
    _assert_same_weights(run, tmp_path / "straight")


def test_fit_loop_writes_the_best_weights_after_the_checkpoint_that_holds_them(
    tmp_path, monkeypatch
):
    import gatelab.train.files as files

    order = []
    real = files.atomic_write_bytes

    def spy(path, data):
        order.append(Path(path).name)
        return real(path, data)

    monkeypatch.setattr(files, "atomic_write_bytes", spy)
    train_char_lm(_text(tmp_path), tmp_path / "run", TINY_LM, TINY_TRAIN)
    weights = [i for i, n in enumerate(order) if n == "model.safetensors"]
    assert weights
    for i in weights:
        assert order[i - 2 : i] == [
            f"checkpoint-{order[i - 2][11:15]}.safetensors",
            "checkpoint.json",
        ]
    # the checkpoint holds the best weights, so a kill before model.safetensors loses nothing
    (tmp_path / "run" / "model.safetensors").unlink()
    train_char_lm(_text(tmp_path), tmp_path / "run", TINY_LM, TINY_TRAIN, resume=True)
    _, tensors = read_checkpoint(tmp_path / "run")
    best = _weights(tmp_path / "run")
    assert all(torch.equal(best[k], tensors[f"best.{k}"]) for k in best)


# ----------------------------------------------------------------- estimators


def test_an_estimator_does_not_overwrite_a_finished_run_unless_asked(tmp_path):
    X, y = shape_series(24, T=8)
    params = {"hidden_size": 4, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    first = SeriesClassifier(**params).fit(X, y, run_dir=tmp_path / "run")
    before = _weights(tmp_path / "run")
    with pytest.raises(RunFolderError, match=r"already holds a run.*resume=True.*overwrite=True"):
        SeriesClassifier(**params, seed=1).fit(X, y, run_dir=tmp_path / "run")
    assert all(torch.equal(before[k], v) for k, v in _weights(tmp_path / "run").items())
    again = SeriesClassifier(**params, seed=1).fit(X, y, run_dir=tmp_path / "run", overwrite=True)
    after = _weights(tmp_path / "run")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["params"]["seed"] == 1
    assert first is not again
    with pytest.raises(ValueError, match="contradict"):
        SeriesClassifier(**params).fit(X, y, run_dir=tmp_path / "r2", resume=True, overwrite=True)


def test_overwrite_refuses_a_run_of_another_task_kind(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        runs.write_config(run, "char-lm", model={"hidden_size": 12})
    atomic_write_tensors(run / runs.WEIGHTS_FILE, {"w": torch.ones(2)})
    X, y = shape_series(24, T=8)
    params = {"hidden_size": 4, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    kinds = r"'char-lm' run.*'series-classifier' run"
    with pytest.raises(RunFolderError, match=rf"'{run}' holds a {kinds}"):
        SeriesClassifier(**params).fit(X, y, run_dir=run, overwrite=True)
    with run_lock(run), pytest.raises(RunFolderError, match=r"'char-lm' run.*'synthetic' run"):
        runs.start_run(run, "synthetic", {}, resume=False, overwrite=True)
    assert runs.read_config(run)["task"] == "char-lm"
    assert torch.equal(_weights(run)["w"], torch.ones(2))


def test_an_estimator_resume_refuses_other_data(tmp_path):
    X, y = shape_series(24, T=8)
    params = {"hidden_size": 4, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    SeriesClassifier(**params).fit(X, y, run_dir=tmp_path / "run")
    X2 = X.copy()
    X2[0, 0, 0] += 1.0
    with pytest.raises(RunFolderError, match=r"inputs\.train: the data changed"):
        SeriesClassifier(**params).fit(X2, y, run_dir=tmp_path / "run", resume=True)


# ----------------------------------------------------------------- CUDA RNG


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: the CUDA RNG "
    "state cannot be saved or restored here (runs on a GPU machine)",
)
def test_checkpoints_save_and_restore_the_cuda_rng_state(tmp_path):
    torch.cuda.manual_seed_all(3)
    torch.rand(1, device="cuda")
    write_checkpoint(tmp_path, 1, runs.get_rng_tensors(), {})
    expected = torch.rand(8, device="cuda")
    torch.rand(100, device="cuda")
    _, tensors = read_checkpoint(tmp_path)
    assert "rng.cuda.0" in tensors
    runs.set_rng_tensors(tensors)
    assert torch.equal(torch.rand(8, device="cuda"), expected)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: a CUDA resume with "
    "dropout cannot be checked here (runs on a GPU machine)",
)
def test_a_cuda_run_with_dropout_resumes_to_the_same_weights(tmp_path):
    from gatelab.models.heads import ModelConfig, build_model
    from gatelab.train.fit import Callback, TrainConfig, fit
    from tests.helpers import token_data

    train = token_data(64)
    config = TrainConfig(epochs=3, batch_size=16, patience=None)
    model_config = ModelConfig(
        kind="classifier", vocab_size=12, embedding_dim=8, hidden_size=8, output_size=2, dropout=0.5
    )

    def model():
        torch.manual_seed(0)
        return build_model(model_config).cuda()

    straight = model()
    fit(straight, train, None, config, checkpoint_dir=tmp_path / "a")

    class Stop(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 0:
                raise KeyboardInterrupt

    torch.cuda.manual_seed_all(12345)  # any other state: it must come from the checkpoint
    with pytest.raises(KeyboardInterrupt):
        fit(model(), train, None, config, checkpoint_dir=tmp_path / "b", callbacks=[Stop()])
    torch.cuda.manual_seed_all(999)
    resumed = model()
    fit(resumed, train, None, config, checkpoint_dir=tmp_path / "b", resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------- the command line


def _cli(*args):
    from typer.testing import CliRunner

    import gatelab.cli.seq2seq  # noqa: F401  (registers the char-lm and translator commands)
    from gatelab.cli import _register, app

    _register()
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_char_lm_resume_refuses_changed_options_and_data(tmp_path):
    data, run = _text(tmp_path), tmp_path / "run"
    tiny = ["--layers", "1", "--embedding-dim", "8", "--batch-size", "4", "--seq-len", "16"]
    args = ["train", "char-lm", "--data", data, "--out", run, *tiny, "--epochs", 1, "--quiet"]
    assert _cli(*args, "--hidden-size", 12).exit_code == 0
    result = _cli(*args, "--hidden-size", 16, "--lr", 0.05, "--resume")
    _one_line_error(
        result,
        "cannot resume",
        "2 difference(s)",
        "model.hidden_size: saved 12, now 16",
        "train.lr: saved 0.002, now 0.05",
    )
    data.write_text(TEXT + "more", encoding="utf-8")
    result = _cli(*args, "--hidden-size", 12, "--resume")
    _one_line_error(result, "inputs.data: the data changed", f"saved {len(TEXT)} bytes")


def test_cli_series_resume_refuses_another_training_file(tmp_path):
    from tests.helpers import write_ts

    X, y = shape_series(24, T=8)
    train = write_ts(tmp_path / "train.ts", X, y)
    run = tmp_path / "run"
    fast = ["--epochs", 1, "--hidden-size", 4, "--models", 1, "-q"]
    args = ["train", "series-classifier", "--train", train, "--out", run, *fast]
    assert _cli(*args).exit_code == 0, "first run"
    source = json.loads((run / "source.json").read_text())
    assert source["inputs"]["train"] == fingerprint_file(train)
    write_ts(train, X[::-1].copy(), y[::-1].copy())
    _one_line_error(_cli(*args, "--resume"), "cannot resume", "inputs.train: the data changed")
