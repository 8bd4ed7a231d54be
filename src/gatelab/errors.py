"""Exceptions raised by gatelab.

Every error that gatelab raises on purpose derives from :class:`GatelabError`, so a caller
can catch the library's errors without catching programming errors.
"""

from __future__ import annotations

__all__ = ["DataError", "EmptySequenceError", "GatelabError"]


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
