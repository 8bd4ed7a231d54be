"""The formal-language tasks (parity, cycle navigation) and their length-generalisation
ablation, with GRU and RNN baselines beside the LSTM presets."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gatelab.cli import _register, app
from gatelab.data import synthetic
from gatelab.errors import DataError
from gatelab.tasks import synthetic as ex

_register()


def _tokens(X, lengths):
    """One-hot ``X (n, T, k)`` -> the token lists, each cut at its length."""
    return [list(X[b, : lengths[b]].argmax(-1)) for b in range(X.shape[0])]


def test_parity_labels_count_the_ones():
    X, lengths, y = synthetic.parity(200, 3, 17, seed=4)
    assert X.shape == (200, 17, 2) and X.dtype == np.float32
    assert lengths.min() >= 3 and lengths.max() <= 17 and len(set(lengths.tolist())) > 5
    for b, bits in enumerate(_tokens(X, lengths)):
        assert y[b] == sum(bits) % 2
        assert X[b, lengths[b] :].sum() == 0 and X[b, : lengths[b]].sum() == lengths[b]
    assert 0.35 < y.mean() < 0.65
    again = synthetic.parity(200, 3, 17, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((X, lengths, y), again))


def test_cycle_navigation_labels_follow_the_moves():
    X, lengths, y = synthetic.cycle_navigation(200, 1, 12, seed=5)
    assert X.shape == (200, 12, 3)
    for b, moves in enumerate(_tokens(X, lengths)):
        position = 0
        for m in moves:
            position = (position + synthetic.CYCLE_MOVES[m]) % 5
        assert y[b] == position
    assert set(y.tolist()) == set(range(5))


def test_bad_lengths_raise():
    with pytest.raises(DataError, match="max_len=3 < min_len=5"):
        synthetic.parity(4, 5, 3)
    with pytest.raises(DataError, match="min_len must be an integer >= 1, got 0"):
        synthetic.cycle_navigation(4, 0, 3)


@pytest.mark.parametrize("name, chance", [("parity", 0.5), ("cycle-navigation", 0.2)])
def test_tasks_train_short_and_test_long(name, chance):
    task = ex.resolve_task(name)
    train = task.sample(300, 40, 1)
    test = task.sample_test(300, 40, 2)
    assert train.lengths.min() >= 1 and train.lengths.max() <= 40
    assert test.lengths.min() >= 40 and test.lengths.max() <= 256
    assert test.x.shape[1] == 256 and test.lengths.max() > 200
    assert task.scaled(chance) == 0.0 and task.scaled(1.0) == 1.0
    assert task.scaled(0.5 * (1 + chance)) == pytest.approx(0.5)
    # a model that outputs the right class scores 1; the padding never reaches it
    logits = torch.nn.functional.one_hot(test.y, task.output_size).float()
    assert float(task.score(logits, test.y).mean()) == 1.0


def test_cli_ablate_parity_writes_the_generalisation_table(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "gatelab.LSTM", RuntimeWarning)
        result = CliRunner().invoke(
            app,
            ["ablate", "--task", "parity", "--variants", "slstm,gru", "--seeds", "1",
             "--steps", "2", "--hidden-size", "4", "--batch-size", "4", "--out",
             str(tmp_path), "--threads", "1", "--json"],
        )  # fmt: skip
    torch.set_num_threads(1)
    assert result.exit_code == 0, result.output
    md = (tmp_path / "ablation-parity.md").read_text()
    assert "| variant | accuracy, lengths 40-256 | scaled accuracy |" in md
    data = json.loads(result.output)
    slstm = next(r for r in data["table"] if r["variant"] == "slstm")
    assert f"| slstm | {slstm['mean']:.3f} | {slstm['scaled_accuracy']:.3f} |" in md
