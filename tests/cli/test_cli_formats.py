"""``gatelab train`` reads UCR text series (old .txt, 2018 .tsv) and ``LABEL ||| text``
files: the same data in another format trains bit-identical weights."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from gatelab.cli import _register, app
from tests.helpers import sentiment_texts, shape_series, write_ts, write_tsv

_register()
runner = CliRunner()

SERIES = ["--epochs", "2", "--hidden-size", "8", "--models", "1", "-q"]
TEXT = ["--epochs", "2", "--hidden-size", "8", "--embedding-dim", "8", "--models", "1", "-q"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_ucr(path, X, y, sep: str):
    X = np.asarray(X)[..., 0]
    codes = {"early": "1", "late": "2"}
    lines = [sep.join([codes[lab], *(f"{v:.5f}" for v in row)]) for row, lab in zip(X, y)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ucr_files_train_like_the_same_ts_file(tmp_path):
    X, y = shape_series(24)
    codes = np.where(y == "early", "1", "2")
    write_ts(tmp_path / "train.ts", X, codes)
    write_ucr(tmp_path / "train_tsv.txt", X, y, "\t")  # the suffix says nothing
    write_ucr(tmp_path / "train_old.tsv", X, y, "   ")
    weights = []
    for name in ("train.ts", "train_tsv.txt", "train_old.tsv"):
        out = tmp_path / f"run-{name}"
        result = invoke(
            "train", "series-classifier", "--train", tmp_path / name, "--out", out, *SERIES
        )
        assert result.exit_code == 0, result.output
        weights.append((out / "model.safetensors").read_bytes())
    assert weights[0] == weights[1] == weights[2]
    result = invoke(
        "evaluate", tmp_path / "run-train.ts", "--data", tmp_path / "train_old.tsv", "--json"
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) >= {"accuracy", "macro_f1"}


def test_sst_separator_trains_like_the_same_tsv(tmp_path):
    X, y = sentiment_texts(80)
    write_tsv(tmp_path / "train.tsv", X, y)
    sst = tmp_path / "train.txt"
    sst.write_text("".join(f"{lab} ||| {t}\n" for t, lab in zip(X, y)), encoding="utf-8")
    custom = tmp_path / "train.sep"
    custom.write_text("".join(f"{lab} ## {t}\n" for t, lab in zip(X, y)), encoding="utf-8")
    runs = {"tsv": ["--train", tmp_path / "train.tsv"], "sst": ["--train", sst]}
    runs["sep"] = ["--train", custom, "--separator", "##"]
    weights = {}
    for name, args in runs.items():
        out = tmp_path / f"run-{name}"
        result = invoke("train", "text-classifier", *args, "--out", out, *TEXT)
        assert result.exit_code == 0, result.output
        weights[name] = (out / "model.safetensors").read_bytes()
        assert json.loads((out / "vocab.json").read_text()) == json.loads(
            (tmp_path / "run-tsv" / "vocab.json").read_text()
        )
    assert weights["tsv"] == weights["sst"] == weights["sep"]
    source = json.loads((tmp_path / "run-sep" / "source.json").read_text())
    assert source["separator"] == "##"
