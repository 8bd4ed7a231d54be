"""The one registry of task kinds (gatelab.tasks.registry): every run-folder kind is in it
once, and the CLI, explain and the ONNX export read it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gatelab.cli import _register, app
from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier
from gatelab.tasks import synthetic as ex
from gatelab.tasks.registry import TASK_KINDS, read_task, task_kind
from gatelab.train.runs import RunFolderError, write_config

_register()


def test_every_kind_once_with_what_it_does():
    assert list(TASK_KINDS) == [
        "text-classifier", "series-classifier", "forecaster", "char-lm", "translator",
        "synthetic",
    ]  # fmt: skip
    for cls in (TextClassifier, SeriesClassifier, Forecaster):
        kind = TASK_KINDS[cls.task]
        assert kind.build is cls and kind.load == cls.load and kind.explain is not None
    assert [k.name for k in TASK_KINDS.values() if k.exports] == [
        "text-classifier", "series-classifier", "forecaster", "char-lm",
    ]  # fmt: skip
    assert [k.name for k in TASK_KINDS.values() if k.evaluate is None] == ["synthetic"]
    with pytest.raises(RunFolderError, match=r"holds a 'sorting' run.*known kinds: char-lm"):
        task_kind("sorting", "runs/x")


def test_a_synthetic_run_reads_once_and_loads_its_weights(tmp_path):
    torch.manual_seed(0)
    result = ex.run_experiment(task="adding", T=10, hidden_size=2, steps=1, batch_size=2,
                               valid_size=4, test_size=4)  # fmt: skip
    ex.save_run(result, tmp_path / "run")
    kind, config = read_task(tmp_path / "run")
    assert kind.name == "synthetic" and config["experiment"]["hidden_size"] == 2
    (tmp_path / "run" / "config.json").unlink()  # the config read above is enough
    loaded, model = kind.load(tmp_path / "run", config)
    assert loaded == result.config
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    inp = kind.explain(tmp_path / "run", config, text="0.5,1 0.25,0", data=None, seed=None)
    assert inp.x.tolist() == [[0.5, 1.0], [0.25, 0.0]] and inp.target is None


def test_evaluate_and_predict_refuse_a_kind_without_them(tmp_path):
    write_config(tmp_path, "synthetic")
    (tmp_path / "d.txt").write_text("x\n")
    for command in (["evaluate", tmp_path, "--data", tmp_path / "d.txt"], ["predict", tmp_path]):
        result = CliRunner().invoke(app, [str(a) for a in command])
        assert result.exit_code == 2 and "Traceback" not in result.output
        line = result.stderr.strip()
        assert line.startswith(f"error: run folder '{tmp_path}' holds a 'synthetic' run")
        assert f"cannot {command[0]}; it can {command[0]} char-lm, forecaster" in line


def test_onnx_export_refuses_a_kind_the_registry_does_not_export(tmp_path):
    pytest.importorskip("onnx")
    from gatelab.interop import export_run

    write_config(tmp_path, "translator")
    with pytest.raises(RunFolderError, match="does not export to ONNX; expected one of text-"):
        export_run(tmp_path, tmp_path / "m.onnx")
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "translator"
