"""gatelab.train.checkpoint: the one checkpoint writer and reader of both training loops."""

from __future__ import annotations

import json

import pytest
import torch

from gatelab.errors import RunFolderError
from gatelab.train.checkpoint import (
    CHECKPOINT_FILE,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    write_checkpoint,
)
from gatelab.train.runs import read_tensors


def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _step(model, opt):
    """One more training step (dropout draws from the global RNG)."""
    opt.zero_grad()
    model(torch.ones(5, 3)).pow(2).sum().backward()
    opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_a_restored_checkpoint_continues_exactly_as_the_original(tmp_path):
    model, opt = _trained()
    best = {k: v + 1 for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path, 3, model, opt, best, {"epoch": 3, "mine": [1, 2]})
    expected = _step(model, opt)  # the RNG state is the saved one here

    torch.manual_seed(123)  # restoring must bring back the RNG state too
    fresh, fresh_opt = _trained(seed=7)
    state, tensors = read_checkpoint(tmp_path)
    got_best = restore_checkpoint(tmp_path, state, tensors, fresh, fresh_opt)
    assert state["epoch"] == 3 and state["mine"] == [1, 2]
    assert got_best.keys() == best.keys()
    assert all(torch.equal(got_best[k], best[k]) for k in best)
    for a, b in zip(_step(fresh, fresh_opt), expected):
        assert torch.equal(a, b)


def test_the_on_disk_layout_is_the_one_old_run_folders_hold(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path, 2, model, opt, None, {"fit": {"epoch": 2}})
    state = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    assert sorted(state) == ["fit", "optimizer", "tensors"]
    assert state["tensors"] == "checkpoint-0002.safetensors"
    assert sorted(state["optimizer"]) == ["param_groups", "scalars"]
    names = set(read_tensors(tmp_path / state["tensors"]))
    params = [k for k, _ in model.named_parameters()]
    assert names == (
        {f"model.{k}" for k in params}
        | {
            f"optimizer.{i}.{m}"
            for i in range(len(params))
            for m in ("step", "exp_avg", "exp_avg_sq")
        }
        | {"rng.torch"}
    )
    fresh, fresh_opt = _trained(seed=1)
    state, tensors = read_checkpoint(tmp_path)
    assert restore_checkpoint(tmp_path, state, tensors, fresh, fresh_opt) is None


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path, 1, model, opt, None, {})
    other = torch.nn.Linear(3, 3)
    state, tensors = read_checkpoint(tmp_path)
    with pytest.raises(RunFolderError, match=r"checkpoint\.json' does not fit this model"):
        restore_checkpoint(tmp_path, state, tensors, other, torch.optim.AdamW(other.parameters()))
    del state["optimizer"]
    with pytest.raises(RunFolderError, match=r"corrupt \(KeyError\('optimizer'\)\)"):
        restore_checkpoint(tmp_path, state, tensors, model, opt)


def test_a_checkpoint_naming_no_tensors_file_is_corrupt(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps({"epoch": 1}))
    with pytest.raises(RunFolderError, match="names no tensors file"):
        read_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps({"tensors": "../elsewhere.safetensors"}))
    with pytest.raises(RunFolderError, match="names no tensors file"):
        read_checkpoint(tmp_path)


def test_a_second_checkpoint_of_one_epoch_never_overwrites_the_named_one(tmp_path):
    write_checkpoint(tmp_path, 1, {"w": torch.zeros(1)}, {})
    write_checkpoint(tmp_path, 1, {"w": torch.ones(1)}, {})
    state, tensors = read_checkpoint(tmp_path)
    assert state["tensors"] == "checkpoint-0001-1.safetensors"
    assert torch.equal(tensors["w"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [state["tensors"], CHECKPOINT_FILE]


def test_a_crash_inside_a_checkpoint_write_leaves_the_previous_pair(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, 1, {"w": torch.full((2,), 1.0)}, {"epoch": 1})
    import gatelab.train.checkpoint as checkpoint

    def crash(path, obj):  # the tensors of epoch 2 are written, then the machine stops
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, 2, {"w": torch.full((2,), 2.0)}, {"epoch": 2})
    monkeypatch.undo()
    state, tensors = read_checkpoint(tmp_path)
    assert state["epoch"] == 1 and torch.equal(tensors["w"], torch.full((2,), 1.0))
    write_checkpoint(tmp_path, 2, {"w": torch.full((2,), 2.0)}, {"epoch": 2})
    state, tensors = read_checkpoint(tmp_path)
    assert state["epoch"] == 2 and torch.equal(tensors["w"], torch.full((2,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-0002.safetensors",
        "checkpoint.json",
    ]


def test_optimizer_state_round_trips_through_tensors_and_json():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    meta = json.loads(json.dumps(meta))  # what the checkpoint file holds
    again = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    again.load_state_dict(optimizer_from_tensors(tensors, meta))
    a, b = opt.state_dict(), again.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, entries in a["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, b["state"][pid][key]), (pid, key)
