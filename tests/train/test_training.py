"""The fit loop, metrics and run-folder I/O: seeds, resume, NaN stops, atomic writes."""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle

import pytest
import torch

from gatelab.cli.progress import RichProgress
from gatelab.errors import RunFolderError, TrainingDiverged, TrainingError
from gatelab.models.heads import ModelConfig, build_model
from gatelab.train import fit as training
from gatelab.train.fit import (
    Callback,
    TensorData,
    TrainConfig,
    batch_indices,
    fit,
)
from gatelab.train.optim import lr_factor
from gatelab.train.runs import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_tensors,
    read_config,
    read_tensors,
    write_config,
)
from tests.helpers import state_equal, token_data

# ----------------------------------------------------------------- batching


def test_batches_cover_every_index_once_and_bucket_by_length():
    lengths = torch.tensor([1, 9, 3, 7, 5, 2, 8, 4, 6, 10] * 10)
    batches = batch_indices(lengths, 8, shuffle=True, seed=3, epoch=1)
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(100))
    spread = [int(lengths[b].max() - lengths[b].min()) for b in batches]
    assert max(spread) <= 2  # sorted within runs of 50 * batch_size
    again = batch_indices(lengths, 8, shuffle=True, seed=3, epoch=1)
    other = batch_indices(lengths, 8, shuffle=True, seed=3, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


# ----------------------------------------------------------------- the loop


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        kind="classifier", vocab_size=12, embedding_dim=8, hidden_size=8, dropout=0.3,
        word_dropout=0.1,
    )  # fmt: skip
    return build_model(cfg)


def _split():
    data = token_data(96)
    return data.subset(range(64)), data.subset(range(64, 96))


CONFIG = TrainConfig(epochs=4, batch_size=16, lr=1e-2, patience=None)


def test_training_learns_the_task():
    train, valid = _split()
    model = _model()
    history = fit(
        model, train, valid, TrainConfig(epochs=15, batch_size=16, lr=2e-2, patience=None)
    )
    assert history.epochs[-1]["val_accuracy"] >= 0.9
    assert history.best_score == max(e["val_accuracy"] for e in history.epochs)


def test_same_seed_twice_gives_bit_identical_weights():
    train, valid = _split()
    a, b, c = _model(), _model(), _model()
    fit(a, train, valid, CONFIG)
    fit(b, train, valid, CONFIG)
    fit(c, train, valid, TrainConfig(**{**CONFIG.to_dict(), "seed": 1}))
    assert state_equal(a, b)
    assert not state_equal(a, c)


def test_fit_leaves_the_global_rng_alone():
    train, _ = _split()
    model = _model()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit(model, train, None, TrainConfig(epochs=1, batch_size=32))
    assert torch.equal(torch.get_rng_state(), before)


class _Interrupt(Callback):
    def __init__(self, epoch: int, step: int | None = None) -> None:
        self.epoch, self.step = epoch, step

    def on_batch_end(self, epoch, step, logs):
        if epoch == self.epoch and step == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch and self.step is None:
            raise KeyboardInterrupt


@pytest.mark.parametrize("interrupt", [(1, None), (2, 1)], ids=["after-epoch", "mid-epoch"])
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, interrupt):
    train, valid = _split()
    config = TrainConfig(epochs=4, batch_size=16, lr=1e-2, patience=3)
    whole = _model()
    history = fit(whole, train, valid, config, checkpoint_dir=tmp_path / "whole")

    broken = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(
            broken,
            train,
            valid,
            config,
            checkpoint_dir=tmp_path / "run",
            callbacks=[_Interrupt(*interrupt)],
        )
    saved = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert saved["epoch"] == interrupt[0] + (1 if interrupt[1] is None else 0)

    resumed = _model(seed=99)  # different init: every weight must come from the checkpoint
    again = fit(resumed, train, valid, config, checkpoint_dir=tmp_path / "run", resume=True)
    assert state_equal(resumed, whole)
    assert again.to_dict() == history.to_dict()


def test_resume_refuses_other_settings(tmp_path):
    train, _ = _split()
    fit(_model(), train, None, CONFIG, checkpoint_dir=tmp_path)
    other = TrainConfig(**{**CONFIG.to_dict(), "lr": 0.5})
    with pytest.raises(RunFolderError, match="other training settings"):
        fit(_model(), train, None, other, checkpoint_dir=tmp_path, resume=True)


def test_only_the_latest_checkpoint_is_kept(tmp_path):
    train, _ = _split()
    fit(_model(), train, None, CONFIG, checkpoint_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-0004.safetensors", "checkpoint.json"]


def test_early_stopping_keeps_the_best_weights(monkeypatch):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    monkeypatch.setattr(
        training, "_validate", lambda *a: {"loss": 1.0, "accuracy": next(scores), "macro_f1": 0}
    )
    snapshots = []

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    train, valid = _split()
    model = _model()
    config = TrainConfig(epochs=5, batch_size=16, lr=1e-2, patience=2)
    history = fit(model, train, valid, config, callbacks=[Snap()])
    assert history.stopped_early and len(history.epochs) == 4
    assert history.best_epoch == 1 and history.best_score == 0.7
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    class Poison(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                with torch.no_grad():
                    model.head.bias.fill_(float("nan"))

    train, _ = _split()
    model = _model()
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 3, step 1") as err:
        fit(model, train, None, CONFIG, checkpoint_dir=tmp_path, callbacks=[Poison()])
    assert "checkpoint.json" in str(err.value)
    # one family: a TrainingError (RuntimeError) and a FloatingPointError, as before
    assert isinstance(err.value, TrainingError) and isinstance(err.value, FloatingPointError)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["epoch"] == 2
    state = read_tensors(tmp_path / saved["tensors"])
    assert torch.isfinite(state["model.head.bias"]).all()  # poisoned after the save


def test_infinite_inputs_give_a_training_error():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="regressor", output_size=1, input_size=1, hidden_size=4))
    x = torch.randn(8, 5, 1)
    x[3, 2, 0] = float("inf")
    data = TensorData(x, torch.full((8,), 5), torch.randn(8, 1))
    with pytest.raises(TrainingError, match="became"):
        fit(model, data, None, TrainConfig(epochs=1, batch_size=8))


def test_rich_progress_reports_epochs():
    from rich.console import Console

    buffer = io.StringIO()
    train, valid = _split()
    fit(
        _model(),
        train,
        valid,
        TrainConfig(epochs=2, batch_size=32),
        callbacks=[RichProgress(Console(file=buffer, width=120))],
    )
    text = buffer.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "val_accuracy" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"schedule": "step"}, "schedule='step'"),
        ({"monitor": "auc"}, "monitor='auc'"),
        ({"patience": 0}, "patience=0"),
    ],
)
def test_bad_train_config_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_schedule_warms_up_then_decays_to_min_lr():
    factor = lr_factor(TrainConfig(warmup=0.1, min_lr=0.1), total_steps=100)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(99) == pytest.approx(0.1, abs=1e-3)
    values = [factor(s) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


# ----------------------------------------------------------------- run folders


def test_atomic_write_leaves_no_partial_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_write_cleans_up_when_writing_the_data_fails(tmp_path, monkeypatch):
    import gatelab.train.files as files

    real_write_all = files.write_all

    def write_all(fd, data):
        real_write_all(fd, data[:3])
        raise OSError("I/O error mid-write")

    monkeypatch.setattr(files, "write_all", write_all)
    with pytest.raises(OSError, match="mid-write"):
        atomic_write_tensors(tmp_path / "model.safetensors", {"w": torch.ones(3)})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_replaces_content(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"one")
    atomic_write_bytes(tmp_path / "a.bin", b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"two"


def test_reading_never_uses_pickle(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must not be used to read a run folder")

    atomic_write_tensors(tmp_path / "w.safetensors", {"w": torch.arange(4.0)})
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert torch.equal(read_tensors(tmp_path / "w.safetensors")["w"], torch.arange(4.0))


def test_corrupt_or_missing_files_raise_errors_naming_them(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x80\x04garbage that is no safetensors")
    with pytest.raises(RunFolderError, match=r"w\.safetensors' is corrupt"):
        read_tensors(tmp_path / "w.safetensors")
    with pytest.raises(RunFolderError, match=r"nothing\.safetensors' is missing"):
        read_tensors(tmp_path / "nothing.safetensors")
    with pytest.raises(RunFolderError, match=r"config\.json' is missing"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunFolderError, match=r"config\.json' is corrupt"):
        read_config(tmp_path)
    with pytest.raises(RunFolderError, match="does not exist"):
        read_config(tmp_path / "absent")


def test_other_major_version_is_refused(tmp_path):
    write_config(tmp_path, "text-classifier")
    config = json.loads((tmp_path / "config.json").read_text())
    assert read_config(tmp_path, "text-classifier")["task"] == "text-classifier"
    config["gatelab_version"] = "7.0.0"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFolderError, match=r"gatelab 7\.0\.0.*different major version"):
        read_config(tmp_path)
    with pytest.raises(RunFolderError, match="expected a 'forecaster' run"):
        write_config(tmp_path, "text-classifier")
        read_config(tmp_path, "forecaster")
