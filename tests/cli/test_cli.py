"""The command line end to end on tiny files: train, evaluate, predict, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from gatelab.cli import _register, app
from gatelab.cli import tasks as cli_tasks
from gatelab.tasks import registry
from gatelab.train.fit import Callback
from tests.helpers import (
    sentiment_texts,
    shape_series,
    sine_series,
    write_series_csv,
    write_ts,
    write_tsv,
)

_register()
runner = CliRunner()

TEXT_FAST = ["--epochs", "10", "--hidden-size", "16", "--embedding-dim", "16", "--lr", "0.01"]
TEXT_FAST += ["--models", "1", "-q"]
SERIES_FAST = ["--epochs", "25", "--hidden-size", "12", "--models", "1", "--lr", "0.01", "-q"]
FORECAST_FAST = ["--epochs", "20", "--hidden-size", "8", "--models", "1", "--history", "12", "-q"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *fragments: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    X, y = sentiment_texts(240)
    train = write_tsv(tmp / "train.tsv", X, y)
    Xv, yv = sentiment_texts(60, seed=5)
    valid = write_tsv(tmp / "valid.tsv", Xv, yv)
    result = invoke(
        "train", "text-classifier", "--train", train, "--valid", valid, "--out", tmp / "run",
        *TEXT_FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp


def test_train_text_classifier_writes_a_run_folder(text_run):
    run = text_run / "run"
    names = {p.name for p in run.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "labels.json",
        "metrics.json",
    } <= names
    assert {"checkpoint.json", "source.json"} <= names
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "text-classifier" and "gatelab_version" in config
    assert config["params"]["hidden_size"] == 16


def test_evaluate_json_keys_are_metric_names(text_run):
    result = invoke("evaluate", text_run / "run", "--data", text_run / "valid.tsv", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"accuracy", "macro_f1"}
    assert metrics["accuracy"] >= 0.8
    # The numbers are sklearn's on the saved model's own predictions of the file.
    from sklearn.metrics import accuracy_score, f1_score

    from gatelab.estimators import TextClassifier

    texts, labels = sentiment_texts(60, seed=5)  # what valid.tsv holds
    pred = TextClassifier.load(text_run / "run").predict(texts)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"), abs=1e-9)
    table = invoke("evaluate", text_run / "run", "--data", text_run / "valid.tsv")
    assert table.exit_code == 0 and "accuracy" in table.stdout


def test_predict_texts_and_file(text_run):
    result = invoke("predict", text_run / "run", "a great film", "an awful plot", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"]
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    (text_run / "texts.txt").write_text("lovely movie\n\nboring and dull\n")
    result = invoke("predict", text_run / "run", "--data", text_run / "texts.txt")
    assert result.exit_code == 0 and "lovely movie" in result.stdout


def test_predict_on_unknown_words_says_so(text_run):
    result = invoke("predict", text_run / "run", "qwerty zxcvb", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["note"] == "no known words" and row["label"] in ("pos", "neg")
    assert "no word seen in training" in result.stderr


def test_existing_run_needs_resume(text_run):
    result = invoke(
        "train", "text-classifier", "--train", text_run / "train.tsv", "--out", text_run / "run"
    )
    assert_clean_error(result, "already holds a run", "--resume")


def test_cli_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    X, y = sentiment_texts(80)
    train = write_tsv(tmp_path / "train.tsv", X, y)
    args = ["train", "text-classifier", "--train", train, *TEXT_FAST[:-1], "--epochs", "3"]
    assert invoke(*args, "--out", tmp_path / "whole", "-q").exit_code == 0

    class Stop(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli_tasks, "_progress", lambda quiet, what: [Stop()])
    result = invoke(*args, "--out", tmp_path / "run")
    assert_clean_error(result, "interrupted", "--resume", code=130)
    monkeypatch.undo()
    result = invoke(*args, "--out", tmp_path / "run", "--resume", "-q")
    assert result.exit_code == 0, result.output
    whole = (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == whole


# ----------------------------------------------------------------- series and forecasts


def test_series_classifier_end_to_end(tmp_path):
    X, y = shape_series(80)
    write_ts(tmp_path / "train.ts", X[:60], y[:60])
    write_ts(tmp_path / "test.ts", X[60:], y[60:])
    result = invoke(
        "train", "series-classifier", "--train", tmp_path / "train.ts", "--out", tmp_path / "run",
        *SERIES_FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", tmp_path / "run", "--data", tmp_path / "test.ts", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] >= 0.9
    result = invoke("predict", tmp_path / "run", "--data", tmp_path / "test.ts", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 20 and {r["label"] for r in rows} <= {"early", "late"}
    # --column names a column of a CSV; a .ts file has none: refused, not ignored.
    for command in ("evaluate", "predict"):
        result = invoke(command, tmp_path / "run", "--data", tmp_path / "test.ts", "--column", "1")
        assert_clean_error(result, "--column does not apply to a series-classifier run")


def test_series_time_budget_reaches_the_estimator_and_bad_values_are_named(tmp_path):
    X, y = shape_series(24)
    path = write_ts(tmp_path / "train.ts", X, y)
    args = ["train", "series-classifier", "--train", path, *SERIES_FAST, "--epochs", "2"]
    args += ["--architecture", "lstm"]
    for value, seconds in (("30", 30.0), ("None", None)):
        run = tmp_path / f"run-{value}"
        result = invoke(*args, "--out", run, "--time-budget", value)
        assert result.exit_code == 0, result.output
        config = json.loads((run / "config.json").read_text())
        assert config["params"]["time_budget"] == seconds
        selection = json.loads((run / "selection.json").read_text())
        assert selection["budget"]["time_budget"] == seconds
    for bad in ("-5", "0", "soon", "inf"):
        result = invoke(*args, "--out", tmp_path / "bad", "--time-budget", bad)
        assert_clean_error(result, f"--time-budget '{bad}'", "expected a number of seconds > 0")


def test_series_nan_needs_fill(tmp_path):
    X, y = shape_series(20)
    path = write_ts(tmp_path / "train.ts", X, y)
    lines = path.read_text().splitlines()
    data_start = lines.index("@data") + 1
    values = lines[data_start + 3].split(",")
    values[4] = "?"
    lines[data_start + 3] = ",".join(values)
    path.write_text("\n".join(lines) + "\n")
    args = ["train", "series-classifier", "--train", path, *SERIES_FAST, "--epochs", "2"]
    result = invoke(*args, "--out", tmp_path / "run")
    assert_clean_error(result, f"line {data_start + 4}", "series 3", "step 4", "--fill")
    result = invoke(*args, "--out", tmp_path / "run2", "--fill", "interpolate")
    assert result.exit_code == 0, result.output


def test_malformed_ts_line_is_named(tmp_path):
    X, y = shape_series(10)
    path = write_ts(tmp_path / "bad.ts", X, y)
    text = path.read_text().replace("@data\n", "@data\n1.0,abc,2.0:early\n")
    path.write_text(text)
    result = invoke("train", "series-classifier", "--train", path, "--out", tmp_path / "run")
    line = text.splitlines().index("1.0,abc,2.0:early") + 1
    assert_clean_error(result, f"line {line}", "abc")


def test_forecaster_end_to_end(tmp_path):
    csv = write_series_csv(tmp_path / "series.csv", sine_series(150), name="level")
    result = invoke(
        "train", "forecaster", "--data", csv, "--column", "level", "--horizon", "2",
        "--holdout", "20", "--out", tmp_path / "run", *FORECAST_FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "holdout" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"rmse", "mae"}
    result = invoke("evaluate", tmp_path / "run", "--data", csv, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"rmse", "mae"}
    # Every (12, 2) window of the file, forecast by the saved model, scored by hand.
    from gatelab.estimators import Forecaster

    fitted = Forecaster.load(tmp_path / "run")
    values = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=1)
    windows = np.lib.stride_tricks.sliding_window_view(values, 14)
    err = fitted.predict(windows[:, :12]).reshape(-1, 2) - windows[:, 12:]
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-5)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)
    naive = np.sqrt(np.mean((windows[:, 11:12] - windows[:, 12:]) ** 2))  # persistence
    assert metrics["rmse"] < 0.8 * naive, (metrics["rmse"], naive)  # 3.9 against 5.6
    result = invoke("predict", tmp_path / "run", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    np.testing.assert_allclose([r["forecast"] for r in rows], fitted.predict(), rtol=1e-6)
    result = invoke("predict", tmp_path / "run", "--fill", "ffill")  # no --data to fill
    assert_clean_error(result, "--column and --fill read --data FILE.csv")
    result = invoke("predict", tmp_path / "run", "--data", csv)
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------- errors


def test_missing_and_empty_files(tmp_path):
    result = invoke(
        "train", "text-classifier", "--train", tmp_path / "nope.tsv", "--out", tmp_path / "r"
    )
    assert_clean_error(result, "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    result = invoke(
        "train", "text-classifier", "--train", tmp_path / "empty.tsv", "--out", tmp_path / "r"
    )
    assert_clean_error(result, "empty.tsv", "empty")


def test_no_text_label_columns_and_one_class(tmp_path):
    (tmp_path / "cols.tsv").write_text("foo\tbar\tbaz\n1\t2\t3\n4\t5\t6\n")
    result = invoke(
        "train", "text-classifier", "--train", tmp_path / "cols.tsv", "--out", tmp_path / "r"
    )
    assert_clean_error(result, "text/label columns")
    write_tsv(tmp_path / "one.tsv", ["good film", "bad film", "fine"], ["1", "1", "1"])
    result = invoke(
        "train", "text-classifier", "--train", tmp_path / "one.tsv", "--out", tmp_path / "r"
    )
    assert_clean_error(result, "single class")


def test_nan_in_forecast_series_and_fill(tmp_path):
    values = [f"{v:.3f}" for v in sine_series(60)]
    values[17] = ""
    lines = ["year,value"] + [f"{1900 + i},{v}" for i, v in enumerate(values)]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    args = ["train", "forecaster", "--data", tmp_path / "s.csv", *FORECAST_FAST, "--epochs", "2"]
    result = invoke(*args, "--out", tmp_path / "r")
    assert_clean_error(result, "line 19", "missing value", "fill")
    assert invoke(*args, "--out", tmp_path / "r2", "--fill", "ffill").exit_code == 0


def test_bad_run_folders(tmp_path, text_run):
    data = text_run / "valid.tsv"
    assert_clean_error(invoke("evaluate", tmp_path / "absent", "--data", data), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_clean_error(invoke("predict", tmp_path / "empty", "hi"), "config.json", "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (text_run / "run").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    assert_clean_error(invoke("evaluate", broken, "--data", data), "model.safetensors", "corrupt")
    config = json.loads((broken / "config.json").read_text())
    config["task"] = "speech-recognizer"
    (broken / "config.json").write_text(json.dumps(config))
    assert_clean_error(invoke("predict", broken, "hi"), "'speech-recognizer'", "known kinds")


def test_text_runs_refuse_options_they_would_ignore(text_run):
    # A text classifier reads no missing values (--fill) and predict reads texts, not a
    # column: both were accepted and had no effect.
    run, data = text_run / "run", text_run / "valid.tsv"
    result = invoke("evaluate", run, "--data", data, "--fill", "ffill")
    assert_clean_error(result, "--fill does not apply to a text-classifier run", "--column")
    result = invoke("predict", run, "good film", "--column", "sentence")
    assert_clean_error(result, "--column does not apply to a text-classifier run")


def test_bad_option_values_are_one_line_errors(tmp_path, text_run):
    args = ["train", "text-classifier", "--train", text_run / "train.tsv", "--out", tmp_path / "r"]
    assert_clean_error(invoke(*args, "--variant", "banana"), "variant='banana'")
    assert_clean_error(invoke(*args, "--pooling", "sum", "--epochs", "1"), "pooling='sum'")
    assert_clean_error(invoke(*args, "--nb-features", "maybe"), "--nb-features 'maybe'")
    assert_clean_error(invoke(*args, "--linear", "maybe"), "--linear 'maybe'")
    result = invoke(*args, "--nb-features", "off", "--nb-folds", "3")
    assert_clean_error(result, "--nb-folds 3 has no effect with --nb-features off")


def test_a_new_task_kind_plugs_into_evaluate_and_predict(tmp_path, monkeypatch):
    from gatelab.train.runs import write_config

    write_config(tmp_path, "char-lm")
    kind = registry.TaskKind(
        "char-lm",
        load=lambda run: "model",
        evaluate=lambda model, data, options: {"perplexity": 3.5},
        predict=lambda model, texts, data, options: [{"text": t, "next": "!"} for t in texts],
    )
    monkeypatch.setitem(registry.TASK_KINDS, "char-lm", kind)
    (tmp_path / "d.txt").write_text("x\n")
    result = invoke("evaluate", tmp_path, "--data", tmp_path / "d.txt", "--json")
    assert json.loads(result.stdout) == {"perplexity": 3.5}
    result = invoke("predict", tmp_path, "hello", "--json")
    assert json.loads(result.stdout) == {"text": "hello", "next": "!"}


COMMANDS = [
    ["train", "text-classifier"],
    ["train", "series-classifier"],
    ["train", "forecaster"],
    ["evaluate"],
    ["predict"],
]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_explains_every_option(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    group = typer.main.get_command(app)
    command = group
    for name in path:
        command = command.commands[name]
    for param in command.params:
        assert getattr(param, "help", None), f"{' '.join(path)}: {param.name} has no help"
    for required in ("--epochs", "--batch-size", "--hidden-size", "--layers", "--variant"):
        if path[0] == "train":
            assert required in result.output
