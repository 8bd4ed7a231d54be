"""Run folders written BEFORE the redesign (issue 13) load and answer the same after it.

``tests/fixtures/run_folders/<kind>/`` are tiny run folders trained by the code of commit fbfa0c2
(``make_runs.sh``), one per task kind, and ``<kind>.expected.json`` what that code printed
and returned on them (``record.py``): command lines with their standard output, public-API
predictions, and the metrics of a ``--resume``. Here the current code runs the same command
lines through the ``gatelab`` script entry point (``gatelab.cli:main``) and the public
estimator classes, and must give the same answers (numbers to 1e-6, text exactly).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import gatelab
from gatelab.cli import main

RUNS = Path(__file__).resolve().parent / "fixtures" / "run_folders"
KINDS = ("text-classifier", "series-classifier", "forecaster", "char-lm", "translator")
KINDS += ("experiment",)
TIMES = {"elapsed_s", "tokens_per_s", "train_seconds"}  # wall-clock: differs run to run


def expected(kind: str) -> dict:
    return json.loads((RUNS / f"{kind}.expected.json").read_text(encoding="utf-8"))


def run_cli(args, run: Path, tmp: Path, capsys, monkeypatch) -> str:
    """Standard output of ``gatelab ARGS`` (placeholders filled); fails on a non-zero exit."""
    argv = [a.format(run=run, data=RUNS / "data", tmp=tmp) for a in args]
    monkeypatch.setattr(sys, "argv", ["gatelab", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    assert exit_.value.code in (0, None), f"gatelab {' '.join(argv)}: {out.err}"
    return out.out


def assert_same(got, want, where: str = "") -> None:
    """Equal structures; floats to 1e-6 (relative or absolute); wall-clock keys skipped."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: {got} != {want}"
        for key in want:
            if key not in TIMES:
                assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} != {want!r}"
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def assert_same_stdout(got: str, want: str, where: str) -> None:
    """JSON lines compared as numbers; other lines (text, tables) exactly, bar the path."""
    got_lines = [ln for ln in got.splitlines() if not ln.startswith("report: ")]
    want_lines = [ln for ln in want.splitlines() if not ln.startswith("report: ")]
    assert len(got_lines) == len(want_lines), f"{where}:\n{got}\n!=\n{want}"
    for g, w in zip(got_lines, want_lines):
        if w.startswith("{"):
            assert_same(json.loads(g), json.loads(w), where)
        else:
            assert g == w, f"{where}: {g!r} != {w!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_command_line_answers_as_before(kind, tmp_path, capsys, monkeypatch):
    for case in expected(kind)["cli"]:
        got = run_cli(case["args"], RUNS / kind, tmp_path, capsys, monkeypatch)
        assert_same_stdout(got, case["stdout"], f"{kind}: gatelab {' '.join(case['args'])}")


@pytest.mark.parametrize(
    "kind, cls",
    [
        ("text-classifier", gatelab.TextClassifier),
        ("series-classifier", gatelab.SeriesClassifier),
        ("forecaster", gatelab.Forecaster),
    ],
)
def test_the_estimators_load_and_predict_as_before(kind, cls):
    want = expected(kind)["api"]
    model = cls.load(RUNS / kind)
    if kind == "forecaster":
        assert_same(model.predict().tolist(), want["predict"], kind)
        return
    X = want["X"] if kind == "text-classifier" else np.asarray(want["X"])
    assert model.predict(X).tolist() == want["predict"]
    np.testing.assert_allclose(model.predict_proba(X), want["predict_proba"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "experiment"])
def test_resume_of_an_old_run_folder(kind, tmp_path, capsys, monkeypatch):
    """Estimators: resuming the finished run gives the same model; sequence runs: one epoch
    more gives the metrics the old code gave."""
    want = expected(kind)["resume"]
    run = tmp_path / kind
    shutil.copytree(RUNS / kind, run)
    run_cli(want["args"], run, tmp_path, capsys, monkeypatch)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert_same(metrics, want["metrics"], f"{kind} metrics.json")
    for case in want["cli"]:
        got = run_cli(case["args"], run, tmp_path, capsys, monkeypatch)
        assert_same_stdout(got, case["stdout"], f"{kind} resumed: {' '.join(case['args'])}")
