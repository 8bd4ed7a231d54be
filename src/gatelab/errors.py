"""Exceptions raised by gatelab.

Every error that gatelab raises on purpose derives from :class:`GatelabError`, so a caller
can catch the library's errors without catching programming errors.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "EmptySequenceError",
    "GatelabError",
    "RunFolderError",
    "RunLockedError",
    "TrainingDiverged",
    "TrainingError",
]


class GatelabError(Exception):
    """Base class of every error gatelab raises on purpose."""


class DataError(GatelabError, ValueError):
    """Input data (a file, a column, a value, an argument describing data) is unusable.

    The message quotes the offending value, file or line number and says what was
    expected. It is also a :class:`ValueError`, so generic handlers keep working.
    """


class EmptySequenceError(GatelabError, ValueError, RuntimeError):
    """A recurrent layer got a sequence of zero steps (``T = 0``).

    torch.nn raises ``RuntimeError`` for it; this is both a :class:`ValueError` (gatelab's
    kind for bad arguments) and a ``RuntimeError``, so code written for either keeps working.
    """


class RunFolderError(GatelabError, ValueError):
    """A run folder is missing, incomplete, corrupt, or from another gatelab version.

    The message names the file. It is also a :class:`ValueError`, as it always was.
    """


class RunLockedError(RunFolderError):
    """Another process holds the run folder's lock, or a dead one left it behind."""


class TrainingError(GatelabError, RuntimeError):
    """Training cannot go on; the message says why and what is kept on disk."""


class TrainingDiverged(TrainingError, FloatingPointError):
    """The training loss, a gradient norm or the validation loss became NaN or infinite.

    Raised by every training loop (:func:`gatelab.train.fit.fit`,
    :func:`gatelab.train.tbptt.fit_loop`, :func:`gatelab.tasks.synthetic.run_experiment`)
    before the step that would poison the weights. It is a :class:`TrainingError` (so a
    ``RuntimeError``) and a :class:`FloatingPointError`, the two ways divergence was
    reported before, so code written for either keeps catching it.
    """
