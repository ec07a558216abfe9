"""The kind of error that is the user's to fix, which ``cmpt`` reports as one short message.

A value out of range, an unknown choice, a path that does not exist, a dataset that is not where
it was looked for, a bad sample, weights that cannot be fetched: the package raises these as
subclasses of :class:`UserInputError` (together with the built-in type they are, e.g.
``class DatasetNotFoundError(UserInputError, FileNotFoundError)``), so that code catching
``ValueError`` or ``FileNotFoundError`` keeps working. The command line prints such an error as
one message naming the key or the file and line, the bad value and what is allowed, and exits
with status 2, without a traceback (``CMPT_DEBUG=1`` shows it). Every other exception is a bug or
a fault of the machine and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserInputError"]


class UserInputError(Exception):
    """Base of the errors caused by input the user can fix; the message says how."""
