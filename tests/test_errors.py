"""Bad input raises ValueError / TypeError naming the value and what was expected."""

from __future__ import annotations

import pytest
import torch

import gatelab
from gatelab import CellSpec


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"hidden_size": 0}, ValueError, r"hidden_size=0; expected an int >= 1"),
        ({"num_layers": 0}, ValueError, r"num_layers=0; expected an int >= 1"),
        ({"input_size": 2.5}, TypeError, r"input_size must be an int >= 1, got float: 2.5"),
        ({"dropout": 1.0}, ValueError, r"dropout=1.0; expected a probability in \[0, 1\)"),
        ({"dropout": -0.1}, ValueError, r"dropout=-0.1"),
        ({"proj_size": 4}, ValueError, r"proj_size=4; expected 0 .* hidden_size=4"),
        ({"proj_size": 9}, ValueError, r"proj_size=9"),
        ({"variant": "lstm2"}, ValueError, r"unknown LSTM variant 'lstm2'.*standard, peephole"),
        ({"variant": 3}, TypeError, r"variant must be a preset name or a CellSpec, got int"),
        ({"backend": "cuda"}, ValueError, r"backend='cuda'; expected one of auto, reference"),
        ({"variant": "nfg", "forget_bias": 1.0}, ValueError, r"forget_bias=1.0 needs forget"),
        ({"bias": False, "forget_bias": 1.0}, ValueError, r"forget_bias=1.0 needs bias=True"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, pattern):
    args = {"input_size": 3, "hidden_size": 4} | kwargs
    with pytest.raises(error, match=pattern):
        gatelab.LSTM(**args)


def test_bad_spec_fields():
    with pytest.raises(ValueError, match=r"gate_activation='relu'"):
        CellSpec(gate_activation="relu")
    with pytest.raises(ValueError, match=r"coupled=True"):
        CellSpec(coupled=True, input_gate=False)


def test_wrong_feature_size_names_both_sizes():
    lstm = gatelab.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"input has 5 features \(shape \(2, 1, 5\)\); expected "):
        lstm(torch.randn(2, 1, 5))
    with pytest.raises(ValueError, match=r"expected 3-D"):
        lstm(torch.randn(2, 1, 1, 3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_boolean_input_is_refused(dtype):
    with pytest.raises(TypeError, match=rf"input has dtype {dtype}; expected a floating-point"):
        gatelab.LSTM(3, 4)(torch.zeros(2, 1, 3, dtype=dtype))


def test_bad_hidden_state():
    lstm = gatelab.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    h0, c0 = torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h0, c0\) for LSTM; got a Tensor"):
        lstm(x, h0)
    with pytest.raises(TypeError, match=r"got a tuple of length 1"):
        lstm(x, (h0,))
    with pytest.raises(ValueError, match=r"c0 has shape \(1, 2, 4\); expected \(2, 2, 4\)"):
        lstm(x, (h0, torch.zeros(1, 2, 4)))
    with pytest.raises(TypeError, match=r"h0 has dtype torch.float64; expected torch.float32"):
        lstm(x, (h0.double(), c0))
    with pytest.raises(TypeError, match=r"hx must be a Tensor h0 for GRU"):
        gatelab.GRU(3, 4)(x, (h0, c0))


def test_explicit_backend_that_cannot_run_raises():
    with pytest.raises(ValueError, match=r"backend='native' runs only the standard LSTM"):
        gatelab.LSTM(3, 4, variant="peephole", backend="native")(torch.randn(2, 1, 3))
    with pytest.raises(ValueError, match=r"backend='fused' runs the LSTM only"):
        gatelab.GRU(3, 4, backend="fused")(torch.randn(2, 1, 3))


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="dropout=0.2 acts between layers"):
        gatelab.LSTM(3, 4, dropout=0.2)


def test_one_error_family_for_training_and_run_folders():
    from gatelab import errors

    for name in ("RunFolderError", "RunLockedError", "TrainingError", "TrainingDiverged"):
        assert issubclass(getattr(errors, name), errors.GatelabError), name
    # what callers caught before the family existed still catches each of them
    assert issubclass(errors.RunFolderError, ValueError)
    assert issubclass(errors.RunLockedError, errors.RunFolderError)
    assert issubclass(errors.TrainingError, RuntimeError)
    diverged = errors.TrainingDiverged("the loss is nan")
    assert isinstance(diverged, errors.TrainingError) and isinstance(diverged, FloatingPointError)
    # the modules that raise them use these very classes
    from gatelab.train import runs, tbptt

    assert runs.RunFolderError is errors.RunFolderError
    assert tbptt.TrainingDiverged is errors.TrainingDiverged
