"""The file-backed dataset families, by name: what ``cmpt data check <family>`` knows.

A new family is a reader in ``datasets/<family>.py``, a :class:`~.files.FileDataModule` subclass
in ``datamodules/<family>.py`` that names its :attr:`~.files.FileDataModule.family`, and one
line here.
"""

from __future__ import annotations

from .csv import MultimodalCSVDataModule
from .files import FileDataModule
from .food101 import Food101DataModule
from .hateful_memes import HatefulMemesDataModule
from .mmimdb import MMIMDbDataModule

__all__ = ["FAMILIES"]

#: Each family's data module by its name, in the order they are listed to users.
FAMILIES: dict[str, type[FileDataModule]] = {
    cls.family: cls
    for cls in (
        Food101DataModule,
        MMIMDbDataModule,
        HatefulMemesDataModule,
        MultimodalCSVDataModule,
    )
}
