"""The errors the dataset readers raise.

Data that is not where it was looked for, and samples that cannot be used. Both are the user's
to fix, so both are :class:`~cmpt_lightning.errors.UserInputError` (``cmpt`` prints them as one
message), and still the built-in type they are: code catching ``FileNotFoundError`` or
``ValueError`` keeps working.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..errors import UserInputError

__all__ = [
    "BadSampleError",
    "DataDecodeError",
    "DataFileNotFoundError",
    "DataTypeError",
    "DataValueError",
    "DatasetNotFoundError",
    "LabelTypeError",
    "RareClassError",
    "TableSyntaxError",
    "require_at_least_one",
]


class DatasetNotFoundError(UserInputError, FileNotFoundError):
    """A dataset, or a file it needs, is not under the given root.

    The message names the dataset, the root, the path that is missing and the layout expected
    there, so that the fix (download it, or point ``root`` elsewhere) is clear.

    Args:
        dataset: the dataset's name, e.g. ``UPMC Food-101``.
        root: the root the reader was given.
        missing: the file or folder that does not exist.
        layout: the expected layout under the root, one path per line.
        hint: an extra sentence on how to fix it.
    """

    def __init__(
        self,
        dataset: str,
        root: str | Path,
        missing: str | Path,
        layout: str,
        hint: str = "",
    ) -> None:
        self.dataset = dataset
        self.root = str(root)
        self.missing = str(missing)
        self.layout = layout
        self.hint = hint
        msg = (
            f"{dataset} not found under root {self.root!r}: {self.missing!r} does not exist.\n"
            f"Expected layout:\n{textwrap.indent(layout.strip(), '  ')}"
        )
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str, str]]:
        # rebuild from the constructor's arguments (the default reduces to the message alone)
        return (type(self), (self.dataset, self.root, self.missing, self.layout, self.hint))

    def __str__(self) -> str:
        return str(self.args[0])


class BadSampleError(UserInputError, ValueError):
    """Samples that cannot be used: an unreadable image, an empty text, an unknown label.

    Raised at setup (listing the offending files) unless ``on_bad_sample: skip``, and by a
    dataset that meets an unreadable image while loading (naming the file).
    """


class DataValueError(UserInputError, ValueError):
    """A data file or a data setting with a value the user can fix (a column, a split, a class).

    The message names the file (and line) or the setting, the value, and what is allowed.
    """


class DataTypeError(UserInputError, TypeError):
    """A data file or a data setting holding the wrong kind of value (a list for a name)."""


class DataFileNotFoundError(UserInputError, FileNotFoundError):
    """A file a data setting names (a split file, a class index) does not exist."""


class DataDecodeError(DataValueError):
    """A data file that is not UTF-8 text (a Latin-1 or Windows-1252 export, say).

    The message names the file, the byte offset, line and column of the first byte that does
    not decode, and how to save the file as UTF-8.
    """


class TableSyntaxError(DataValueError):
    """A JSON table that is not valid JSON (a trailing comma, a missing quote).

    The message names the file, the line and column of the error, and what the parser expected.
    """


class LabelTypeError(DataTypeError):
    """A label that is neither a class name nor a class index, or a table mixing the two.

    A boolean, a float, a JSON object or (outside a multilabel task) a list is no label; nor
    is a table whose labels are class names on some lines and integer indices on others. The
    message names the file, the line (or row) and the value, and what a label may be.
    """


class RareClassError(DataValueError):
    """Classes seen in fewer training rows than ``min_class_count``, with ``rare_classes: error``.

    The message names each class, its count, the file and the first line holding it.
    """


def require_at_least_one(**sizes: int) -> None:
    """Raise :class:`DataValueError` naming the first of ``sizes`` (name=value) that is below 1."""
    for name, value in sizes.items():
        if value < 1:
            msg = f"{name} must be >= 1, got {value!r}"
            raise DataValueError(msg)
