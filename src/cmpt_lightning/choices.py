"""String enums for settings, with errors that list the accepted values."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, TypeVar

__all__ = ["Choice"]

_C = TypeVar("_C", bound="Choice")


class Choice(str, Enum):
    """A setting with a fixed set of string values (``Choice("x")`` or the member itself).

    An unknown value raises ``ValueError: unknown <setting> 'x'; choose one of: a, b, c``;
    :meth:`parse` names the setting as the user wrote it instead (``text_mode must be one of
    ...``).
    """

    @classmethod
    def label(cls) -> str:
        """The setting's name in messages: the class name in words (missing type)."""
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", cls.__name__).lower()

    @classmethod
    def options(cls) -> str:
        """The accepted values, comma-separated, in declaration order."""
        return ", ".join(str(member.value) for member in cls)

    @classmethod
    def parse(cls: type[_C], value: _C | str, setting: str | None = None) -> _C:
        """The member ``value`` names (a member is returned as is).

        Args:
            value: a member or its string value.
            setting: the name of the setting being parsed (an argument or config key), for the
                message; None names it by :meth:`label`.

        Raises:
            ValueError: for an unknown value: ``<setting> must be one of a, b, c; got 'x'``.
        """
        if setting is None:
            return cls(value)
        try:
            return cls(value)
        except ValueError:
            msg = f"{setting} must be one of {cls.options()}; got {value!r}"
            raise ValueError(msg) from None

    @classmethod
    def _missing_(cls, value: Any) -> Any:
        msg = f"unknown {cls.label()} {value!r}; choose one of: {cls.options()}"
        raise ValueError(msg)
