"""The toolkit every command module shares: one error policy, the console, the thread count.

Error policy (the same for every command): an error the library raises on purpose
(:class:`gatelab.errors.GatelabError`), a bad argument (``ValueError``, ``TypeError``), a
file that cannot be read or written (``OSError``), a missing optional dependency
(``ImportError``) or a :class:`CommandError` ends with one line ``error: ...`` on stderr
and exit code 2; training that fails (:class:`gatelab.train.fit.TrainingError`, a NaN:
``FloatingPointError``) exits 1; Ctrl-C exits 130. Never a traceback.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated

import typer

from gatelab.errors import GatelabError, TrainingError
from gatelab.train import distributed

__all__ = [
    "CommandError",
    "Threads",
    "check_positive",
    "clean_errors",
    "console",
    "set_threads",
    "warn",
]


class CommandError(Exception):
    """A problem with the command's input: reported in one line, exit code 2."""


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def fail(message: object, code: int) -> None:
    """Print ``error: message`` (on one line, prefixed with the rank in a job of several)
    on stderr and exit with ``code``."""
    where = f"rank {distributed.rank()}: " if distributed.world_size() > 1 else ""
    typer.echo(f"{where}error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def warn(message: object) -> None:
    """Print ``warning: message`` on one line on stderr."""
    typer.echo(f"warning: {_one_line(message)}", err=True)


def clean_errors(fn: Callable) -> Callable:
    """Turn the library's errors into one line on stderr and an exit code (no traceback),
    by the policy of this module; a command that takes ``--resume`` says on Ctrl-C how to
    continue."""
    resumable = "resume" in inspect.signature(fn).parameters
    interrupted = "interrupted" + ("; continue the run with --resume" if resumable else "")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (TrainingError, FloatingPointError) as err:
            fail(err, 1)
        except (CommandError, GatelabError, ValueError, TypeError, OSError, ImportError) as err:
            # ValueError/TypeError come from argument checks of configs and models;
            # ImportError names an optional dependency (onnx, scipy, matplotlib) to install.
            fail(err, 2)
        except KeyboardInterrupt:
            fail(interrupted, 130)

    return wrapper


def console(stderr: bool = False):
    """A rich console on stdout (or stderr) without highlighting or hard wrapping."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


THREADS_HELP = (
    "CPU threads for torch (default 1: on a shared machine one thread is often much "
    "faster than several; see docs/why-gates-in-0-1.md)."
)


Threads = Annotated[int | None, typer.Option("--threads", help=THREADS_HELP)]


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads: ``threads``, or one when None; returns the number set.

    One by default, for every command: gatelab's models are small (B=64, H=32..256), so a
    second thread gains little on an idle machine, and on a shared one oneDNN's threads
    spin-wait against other processes. Measured with a load of about 5 on 2 cores: the whole
    demo took 41 s on 1 thread and 500 s on 2; one LSTM step (B=64, H=64, T=105) took 16 ms
    on 1 thread and 443 ms on 2. ``--threads N`` asks for more.
    """
    import torch

    threads = 1 if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise CommandError(f"--threads={threads}; expected an int >= 1")
    torch.set_num_threads(threads)
    return threads


def check_positive(name: str, value: float | None) -> None:
    """Refuse an option ``value`` that is given and not > 0."""
    if value is not None and not value > 0:
        raise CommandError(f"{name}={value}; expected a positive number")
