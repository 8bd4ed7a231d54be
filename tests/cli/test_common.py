"""The one CLI toolkit (gatelab.cli.common): the same error is the same clean message in
every command, and one thread policy."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

from gatelab.cli import _register, app
from gatelab.cli.common import CommandError, clean_errors, set_threads
from gatelab.errors import DataError, TrainingError
from tests.helpers import sentiment_texts, write_tsv

_register()


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_same_disk_error_is_the_same_clean_message_in_train_and_insight(tmp_path):
    # A folder under a file: creating it is a NotADirectoryError (an OSError) in both.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = blocker / "run"
    X, y = sentiment_texts(20)
    train = write_tsv(tmp_path / "train.tsv", X, y)
    text = invoke("train", "text-classifier", "--train", train, "--out", out, "-q")
    synthetic = invoke(
        "train", "synthetic", "--out", out, "--steps", "1", "--hidden-size", "2", "--T", "10",
        "--batch-size", "2", "--quiet",
    )  # fmt: skip
    a, b = error_line(text), error_line(synthetic)
    assert "Not a directory" in a or "File exists" in a, a
    assert a == b


@pytest.mark.parametrize(
    "error, code, message",
    [
        (OSError(28, "No space left on device"), 2, "error: [Errno 28] No space left on device"),
        (DataError("line 3: bad"), 2, "error: line 3: bad"),
        (CommandError("--x 1;\n expected 2"), 2, "error: --x 1; expected 2"),
        (ImportError("needs onnx: pip install onnx"), 2, "error: needs onnx: pip install onnx"),
        (TrainingError("the loss became nan"), 1, "error: the loss became nan"),
        (FloatingPointError("the loss became inf"), 1, "error: the loss became inf"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_clean_errors_maps_each_error_once(error, code, message):
    app_ = typer.Typer()

    @app_.command()
    @clean_errors
    def fails(name: str = "x") -> None:
        raise error

    result = CliRunner().invoke(app_, [])
    assert result.exit_code == code
    assert result.stderr.strip() == message


def test_interrupt_says_resume_only_where_the_command_resumes():
    app_ = typer.Typer()

    @app_.command()
    @clean_errors
    def fails(resume: bool = False) -> None:
        raise KeyboardInterrupt

    result = CliRunner().invoke(app_, [])
    assert result.stderr.strip() == "error: interrupted; continue the run with --resume"


def test_one_thread_unless_asked_in_every_command(tmp_path):
    torch.set_num_threads(2)
    assert set_threads(None) == 1 and torch.get_num_threads() == 1
    assert set_threads(2) == 2 and torch.get_num_threads() == 2
    with pytest.raises(CommandError, match="--threads=0; expected an int >= 1"):
        set_threads(0)
    (tmp_path / "t.txt").write_text("abc " * 50)
    for command in (["train", "char-lm", "--data", tmp_path / "t.txt"], ["ablate"]):
        result = invoke(*command, "--out", tmp_path / "o", "--threads", "0")
        assert error_line(result) == "error: --threads=0; expected an int >= 1"
