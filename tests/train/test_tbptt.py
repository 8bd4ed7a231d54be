"""gatelab.train.tbptt: the loop of the char LM and the translator, on a plain model.

Resume continues to the very weights of an uninterrupted run; divergence stops before the
step that would poison the weights, with the one error family; the checkpoint's progress
round-trips and refuses keys it does not know."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gatelab.errors import RunFolderError, TrainingDiverged, TrainingError
from gatelab.train.checkpoint import CHECKPOINT_FILE, read_checkpoint
from gatelab.train.runs import WEIGHTS_FILE, read_tensors
from gatelab.train.tbptt import FitState, fit_loop, load_checkpoint

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.3


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 1))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def _batches(epoch: int):
    order = torch.randperm(32, generator=torch.Generator().manual_seed(epoch))
    return [(X[i], Y[i]) for i in order.split(8)]


def _loop(model, optimizer, run_dir, epochs, fit=None, step=None, **kw):
    def mse_step(batch, carry):
        x, y = batch
        return nn.functional.mse_loss(model(x), y), carry, len(x)

    def validate():
        model.eval()
        with torch.no_grad():
            return float(nn.functional.mse_loss(model(X), Y))

    return fit_loop(
        model, optimizer, run_dir, epochs=epochs, batches=_batches, step=step or mse_step,
        validate=validate, fit=fit, **kw,
    )  # fmt: skip


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    model, opt = _setup()
    whole = _loop(model, opt, tmp_path / "whole", epochs=3)

    first, first_opt = _setup()
    _loop(first, first_opt, tmp_path / "part", epochs=1)
    again, again_opt = _setup(seed=5)  # other weights: the checkpoint must replace them
    torch.manual_seed(99)  # and the dropout RNG
    state = load_checkpoint(tmp_path / "part", again, again_opt)
    assert state.epoch == 1 and state.best_state is not None
    resumed = _loop(again, again_opt, tmp_path / "part", epochs=3, fit=state)

    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    drop = ("elapsed_s", "tokens_per_s")
    strip = [{k: v for k, v in r.items() if k not in drop} for r in whole.history]
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == strip
    assert (resumed.best_epoch, resumed.best_valid) == (whole.best_epoch, whole.best_valid)
    best_w = read_tensors(tmp_path / "whole" / WEIGHTS_FILE)
    best_p = read_tensors(tmp_path / "part" / WEIGHTS_FILE)
    assert all(torch.equal(best_w[k], best_p[k]) for k in best_w)
    assert whole.finished and resumed.finished


def _poisoned(model, at: int, poison):
    """The MSE step, with ``poison(loss)`` applied to the loss of the ``at``-th call."""
    calls = [0]

    def step(batch, carry):
        calls[0] += 1
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        return (poison(loss) if calls[0] == at else loss), carry, len(x)

    return step


def test_a_non_finite_loss_stops_before_the_step_and_keeps_the_last_checkpoint(tmp_path):
    model, opt = _setup()
    step = _poisoned(model, 6, lambda loss: loss * math.nan)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: the loss is nan.*epoch 1") as e:
        _loop(model, opt, tmp_path, epochs=3, step=step)
    # the one family: what caught TrainingError or FloatingPointError before still does
    assert isinstance(e.value, TrainingError) and isinstance(e.value, FloatingPointError)
    state, _ = read_checkpoint(tmp_path)
    assert state["fit"]["epoch"] == 1


def test_a_non_finite_gradient_stops_before_the_optimizer_step(tmp_path):
    model, opt = _setup()

    def infinite_gradient(loss):  # a finite loss whose gradient is not
        model[0].weight.register_hook(lambda g: torch.full_like(g, math.inf))
        return loss

    step = _poisoned(model, 3, infinite_gradient)
    before = {}

    def on_step(epoch, k, loss):
        before.update({n: p.detach().clone() for n, p in model.named_parameters()})

    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3: the gradient norm is inf"):
        _loop(model, opt, tmp_path, epochs=1, step=step, clip=None, on_step=on_step)
    for name, p in model.named_parameters():  # as after step 2: step 3 was not taken
        assert torch.equal(p, before[name]), name


def test_a_spent_time_budget_trains_nothing_and_finishes(tmp_path):
    model, opt = _setup()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fit = _loop(model, opt, tmp_path, epochs=2, time_budget_s=0.0)
    assert fit.finished and fit.epoch == 0 and fit.history == []
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    state, _ = read_checkpoint(tmp_path)
    assert state["fit"]["finished"] is True


def test_progress_round_trips_and_refuses_unknown_keys(tmp_path):
    fit = FitState(epoch=2, best_valid=0.5, best_epoch=1, elapsed_s=3.0, history=[{"a": 1}])
    assert FitState.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit
    assert FitState.from_dict({"epoch": 0}).best_valid == math.inf  # null: nothing yet
    with pytest.raises(ValueError, match=r"unknown TBPTT progress keys \['surprise'\]"):
        FitState.from_dict({"epoch": 1, "surprise": 2})

    model, opt = _setup()
    _loop(model, opt, tmp_path, epochs=1)
    path = tmp_path / CHECKPOINT_FILE
    state = json.loads(path.read_text())
    state["fit"]["surprise"] = 2
    path.write_text(json.dumps(state))
    with pytest.raises(RunFolderError, match=r"checkpoint\.json' .*corrupt.*surprise"):
        load_checkpoint(tmp_path, model, opt)
