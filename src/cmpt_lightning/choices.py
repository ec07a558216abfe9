"""String enums for settings, with errors that list the accepted values."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

__all__ = ["Choice"]


class Choice(str, Enum):
    """A setting with a fixed set of string values (``Choice("x")`` or the member itself).

    An unknown value raises ``ValueError: unknown <setting> 'x'; choose one of: a, b, c``.
    """

    @classmethod
    def label(cls) -> str:
        """The setting's name in messages: the class name in words (missing type)."""
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", cls.__name__).lower()

    @classmethod
    def _missing_(cls, value: Any) -> Any:
        options = ", ".join(str(member.value) for member in cls)
        msg = f"unknown {cls.label()} {value!r}; choose one of: {options}"
        raise ValueError(msg)
