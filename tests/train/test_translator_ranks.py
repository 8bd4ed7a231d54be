"""A translator across ranks: ``--resume`` with a different number of ranks than the
interrupted run (docs/scaling.md: the result then equals an uninterrupted run with the new
number, which without dropout is one process's up to the all-reduce's rounding), and rank
0's pair files when a rank is gone. The ranks run as in test_distributed: torchrun's
environment, a free port of 127.0.0.1, a timeout."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gatelab.cli import app
from gatelab.cli import seq2seq as cli_seq2seq
from gatelab.tasks.sequence import TranslatorTrainConfig, train_translator
from gatelab.train import distributed as D
from tests.train.test_distributed import (
    KILLER,
    SRC,
    as_torchrun,
    assert_close_weights,
    pairs_file,
    run_all,
    runner,
)

# 54 pairs less 4 valid and 4 test: 46 training pairs, batches of 5 (10 steps an epoch),
# the last of one row, so rank 1 joins that step with a stand-in weighed 0
ARGS = ["--hidden-size", "8", "--embedding-dim", "4", "--min-freq", "1", "--valid", "4"]
ARGS += ["--test", "4", "--batch-size", "5", "--dropout", "0", "--epochs", "3", "--quiet"]


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    """The model's last (not best) weights, from the checkpoint that holds them."""
    name = json.loads((run / "checkpoint.json").read_text())["tensors"]
    tensors = load_file(run / name)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> tuple[Path, Path]:
    """The pairs file and the run folder of one process trained uninterrupted."""
    tmp = tmp_path_factory.mktemp("oracle")
    data = pairs_file(tmp / "pairs.txt", n=54)
    args = ["train", "translator", "--data", str(data), *ARGS, "--out", str(tmp / "one")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return data, tmp / "one"


def test_two_ranks_killed_then_resumed_in_one_process_end_as_one_process(
    tmp_path, oracle, monkeypatch
):
    """Both ranks SIGKILLed after step 13 (epoch 2 of 3, a lost machine): epoch 1's
    checkpoint stays, no pair file; resumed in one process, the run ends as the
    uninterrupted one-process run."""
    data, one = oracle
    pairs_tmp = tmp_path / "tmp"  # where every process writes its encoded pairs
    pairs_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(pairs_tmp))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    args = ["train", "translator", "--data", str(data), *ARGS, "--out", str(tmp_path / "run")]
    procs = as_torchrun([sys.executable, "-m", "gatelab", *args])
    for _, env in procs:
        env.update(PYTHONPATH=os.pathsep.join([str(hook), str(SRC)]), TMPDIR=str(pairs_tmp))
        env.update(GATELAB_TEST_KILL_RANKS="0,1", GATELAB_TEST_KILL_STEP="13")
    for code, out in run_all(procs, tmp_path):
        assert code == -signal.SIGKILL, out
    run = tmp_path / "run"
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    assert (checkpoint["fit"]["epoch"], checkpoint["world_size"]) == (1, 2)
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert not list(pairs_tmp.glob("gatelab-*"))  # the pair files' names went before training
    (run / ".lock").unlink()  # rank 0 died holding it (test_distributed: the message says so)

    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert_ends_as(run, one)
    assert "world_size" not in json.loads((run / "checkpoint.json").read_text())  # 1 process
    assert not list(pairs_tmp.glob("gatelab-*"))


def test_one_process_stopped_then_resumed_on_two_ranks_ends_as_one_process(
    tmp_path, oracle, monkeypatch
):
    """One process stopped (Ctrl-C) after its first epoch, resumed on 2 ranks (torchrun's
    environment): the uninterrupted one-process run, which 2 ranks follow up to the
    all-reduce's rounding; the last batch's one row leaves rank 1 a stand-in."""
    data, one = oracle
    args = ["train", "translator", "--data", str(data), *ARGS, "--out", str(tmp_path / "run")]

    def stop(record):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_seq2seq, "_epoch_printer", lambda *a: stop)
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    monkeypatch.undo()
    run = tmp_path / "run"
    assert json.loads((run / "checkpoint.json").read_text())["fit"]["epoch"] == 1

    pairs_tmp = tmp_path / "tmp"
    pairs_tmp.mkdir()
    procs = as_torchrun([sys.executable, "-m", "gatelab", *args, "--resume"])
    for _, env in procs:
        env.update(TMPDIR=str(pairs_tmp))
    for code, out in run_all(procs, tmp_path):
        assert code == 0, out
    assert_ends_as(run, one)
    assert json.loads((run / "checkpoint.json").read_text())["world_size"] == 2  # the last epoch's
    assert not list(pairs_tmp.glob("gatelab-*"))


def assert_ends_as(run: Path, one: Path) -> None:
    """``run`` finished all 3 epochs with the weights (best and last) and the losses of
    ``one``, up to the all-reduce's rounding, and holds no lock or temporary file."""
    fit = json.loads((run / "checkpoint.json").read_text())["fit"]
    assert (fit["epoch"], fit["best_epoch"]) == (3, 3)
    assert_close_weights(run, one)  # the best weights (those of epoch 3)
    want, got = last_weights(one), last_weights(run)
    assert want.keys() == got.keys() and want
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    expected = json.loads((one / "checkpoint.json").read_text())["fit"]["history"]
    for got_epoch, want_epoch in zip(fit["history"], expected, strict=True):
        assert got_epoch["steps"] == want_epoch["steps"] == 10
        for key in ("train_loss", "valid_loss"):
            assert got_epoch[key] == pytest.approx(want_epoch[key], rel=1e-5), key
    assert not (run / ".lock").exists() and not list(run.glob("*.tmp"))


def test_rank_zeros_pair_files_go_when_sending_them_fails(tmp_path, monkeypatch):
    """A rank gone while rank 0 encoded the pairs: sending their files' names fails on rank
    0 (gloo's error), which still removes the files (every training id) from the
    temporary folder."""
    data = pairs_file(tmp_path / "pairs.txt", n=54)
    pairs_tmp = tmp_path / "tmp"
    pairs_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(pairs_tmp))
    made = []

    def gone(make):  # rank 0's D.from_writer: make() ran, the broadcast failed
        made.append(make())
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(D, "from_writer", gone)
    train = TranslatorTrainConfig(valid=4, test=4, min_freq=1, epochs=1)
    with pytest.raises(RuntimeError, match="Connection reset by peer"):
        train_translator(data, tmp_path / "run", {"hidden_size": 8}, train)
    names = [Path(name) for files in made[0].files.values() for name in files]
    assert len(names) == 4 and {p.parent for p in names} == {pairs_tmp}
    assert not list(pairs_tmp.glob("gatelab-*"))
