"""The ``gatelab`` command line: one typer app over the whole library.

Each command module of this package registers its commands on :data:`app` (or
:data:`train_app`) when imported: ``tasks`` (train the estimators), ``use`` (evaluate,
predict), ``insight`` (demo, explain, ablate, train synthetic), ``seq2seq`` (char LM and
translator: train, generate, translate), ``export``. They share ``common`` (the one error
policy, console, threads) and ``options`` (help texts and option types); the task kinds
they handle are the one registry, :mod:`gatelab.tasks.registry`.
Only the command line prints; the library logs.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="gatelab",
    help="gatelab: LSTM networks whose gates you can see, from data to report.",
    no_args_is_help=True,
    add_completion=False,
)
train_app = typer.Typer(
    help="Train a model on a data file into a run folder.", no_args_is_help=True
)
app.add_typer(train_app, name="train")

COMMAND_MODULES = ("tasks", "use", "insight", "seq2seq", "export")
ARGV: list[str] | None = None  # the command line main() ran, for `train ... --nproc N`


def _register() -> None:
    """Import the command modules (lazily: ``import gatelab.cli`` stays light)."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def main() -> None:
    """Entry point of the ``gatelab`` script."""
    global ARGV
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ARGV = sys.argv[1:]
    _register()
    try:
        app()
    # A rank of a multi-process job ends here, without the interpreter's teardown, where
    # torch's process group aborted at times (gatelab.train.distributed.end_rank).
    except SystemExit as stop:
        if _joined():
            code = stop.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
            _end_rank(code or 0)
        raise
    except Exception:
        if _joined():
            sys.excepthook(*sys.exc_info())  # the traceback as Python (typer's hook) shows it
            _end_rank(1)
        raise


def _joined() -> bool:
    ranks = sys.modules.get("gatelab.train.distributed")  # not imported: no group joined
    return ranks is not None and ranks.joined()


def _end_rank(code: int) -> NoReturn:
    from gatelab.train import distributed  # imported already: a group was joined

    distributed.end_rank(code)
