"""gatelab._config: the one rule for reading a dataclass config back from a run folder's
JSON, used by every config (an unknown key is an error naming it, never dropped)."""

from __future__ import annotations

import dataclasses

import pytest

from gatelab._config import config_fields, from_config
from gatelab.models.heads import ModelConfig
from gatelab.tasks.sequence import CharLMTrainConfig, TranslatorTrainConfig, _from_dict
from gatelab.tasks.synthetic import ExperimentConfig
from gatelab.train.config import History, TrainConfig
from gatelab.train.tbptt import FitState


@dataclasses.dataclass
class _Two:
    a: int = 1
    b: str = "x"


def test_from_config_builds_and_names_unknown_keys_and_wrong_types():
    assert from_config(_Two, {"a": 3}, "toy config") == _Two(a=3)
    d = {"b": "y"}
    assert config_fields(_Two, d, "toy config") == d and config_fields(_Two, d, "t") is not d
    with pytest.raises(ValueError, match=r"unknown toy config keys \['c', 'z'\]; .*\['a', 'b'\]"):
        from_config(_Two, {"a": 1, "z": 0, "c": 0}, "toy config")
    with pytest.raises(TypeError, match="a toy config must be a dict, got list"):
        from_config(_Two, [1], "toy config")


@pytest.mark.parametrize(
    ("read", "config", "what"),
    [
        (ModelConfig.from_dict, ModelConfig(), "model config"),
        (TrainConfig.from_dict, TrainConfig(), "train config"),
        (History.from_dict, History(), "training history"),
        (ExperimentConfig.from_dict, ExperimentConfig(), "experiment config"),
        (lambda d: _from_dict(CharLMTrainConfig, d), CharLMTrainConfig(), "train config"),
        (lambda d: _from_dict(TranslatorTrainConfig, d), TranslatorTrainConfig(), "train config"),
        (FitState.from_dict, FitState(), "TBPTT progress"),
    ],
)
def test_every_config_round_trips_and_refuses_a_key_it_does_not_know(read, config, what):
    d = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    assert read(d) == config
    with pytest.raises(ValueError, match=rf"unknown {what} keys \['from_the_future'\]"):
        read({**d, "from_the_future": 1})
