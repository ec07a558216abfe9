"""Hateful Memes: meme images with their overlaid text, hateful or not (Kiela et al., 2020).

Layout of the final release::

    <root>/img/<id>.png
    <root>/train.jsonl, dev_seen.jsonl, dev_unseen.jsonl, test_seen.jsonl, test_unseen.jsonl

Each line is ``{"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}`` (``id`` an int
or a string). The first-phase release, and mirrors of it, have ``data/`` with ``img/``,
``train.jsonl``, ``dev.jsonl`` (= dev_seen) and ``test.jsonl`` (= test_seen, without labels);
``root`` may be the folder holding ``data/`` or the ``data`` folder itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..choices import Choice
from ..errors import UserInputError
from .errors import DatasetNotFoundError
from .labels import is_blank, missing_label
from .records import Record, RecordDataset
from .tables import read_jsonl

__all__ = [
    "CLASSES",
    "LAYOUT",
    "OFFICIAL_SIZES",
    "HatefulMemesDataset",
    "MemeSplit",
    "UnlabelledSplitError",
    "find_hateful_memes",
    "read_hateful_memes",
    "split_file",
]

NAME = "Hateful Memes"

CLASSES = ["not hateful", "hateful"]

LAYOUT = """\
<root>/img/<id>.png
<root>/train.jsonl, dev_seen.jsonl, dev_unseen.jsonl, test_seen.jsonl, test_unseen.jsonl
  lines: {"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}
  or the data/ mirror: <root>/data/{img/, train.jsonl, dev.jsonl, test.jsonl}"""

#: Samples per split of the final release.
OFFICIAL_SIZES = {
    "train": 8500,
    "dev_seen": 500,
    "dev_unseen": 540,
    "test_seen": 1000,
    "test_unseen": 2000,
}

#: The file of each split, in order of preference (the first-phase names come second).
SPLIT_FILES = {
    "train": ("train.jsonl",),
    "dev_seen": ("dev_seen.jsonl", "dev.jsonl"),
    "dev_unseen": ("dev_unseen.jsonl",),
    "test_seen": ("test_seen.jsonl", "test.jsonl"),
    "test_unseen": ("test_unseen.jsonl",),
}

UNLABELLED_HINT = (
    "Its labels were withheld for the challenge. Labelled test_seen.jsonl and test_unseen.jsonl "
    "come with the final (phase 2) release of the Hateful Memes dataset from Meta AI (the "
    "download of hatefulmemeschallenge.com / DrivenData's competition data); or evaluate on "
    "a labelled split with test_split: dev_seen."
)


class MemeSplit(Choice):
    """A split of Hateful Memes."""

    TRAIN = "train"
    DEV_SEEN = "dev_seen"
    DEV_UNSEEN = "dev_unseen"
    TEST_SEEN = "test_seen"
    TEST_UNSEEN = "test_unseen"


class UnlabelledSplitError(UserInputError, ValueError):
    """A split used for training or evaluation has no labels."""


def find_hateful_memes(root: str | Path) -> Path:
    """The folder holding the ``.jsonl`` files and ``img/``: ``root`` or ``root/data``.

    Raises:
        DatasetNotFoundError: if neither has ``train.jsonl``.
    """
    root = Path(root)
    for base in (root, root / "data"):
        if (base / "train.jsonl").is_file():
            return base
    missing = root if not root.exists() else root / "train.jsonl"
    raise DatasetNotFoundError(NAME, root, missing, LAYOUT)


def split_file(base: Path, split: MemeSplit | str) -> Path:
    """The ``.jsonl`` file of ``split`` under ``base``.

    Raises:
        DatasetNotFoundError: if the split has no file there.
    """
    names = SPLIT_FILES[MemeSplit(split).value]
    for name in names:
        if (base / name).is_file():
            return base / name
    raise DatasetNotFoundError(NAME, base, base / names[0], LAYOUT)


def _record(base: Path, line: dict[str, Any], source: str, labelled: bool) -> Record:
    problems: list[str] = []
    img = None if is_blank(line.get("img")) else str(line["img"])
    image = base / img if img else None  # inside the root, or a bad sample at setup
    if not is_blank(line.get("id")):
        key = str(line["id"])
    else:
        key = Path(img).stem if img else source
        problems.append("no id")
    text = None if is_blank(line.get("text")) else str(line["text"])
    label = line.get("label")
    target: int | None = None
    if labelled:
        missing = missing_label(label)
        if missing is not None:
            problems.append(f"{missing} (expected 0 or 1)")
        elif isinstance(label, bool) or label not in (0, 1):
            problems.append(f"unknown label {label!r} (expected 0 or 1)")
        else:
            target = int(label)
    return Record(key, image, text, target, source, tuple(problems))


def read_hateful_memes(
    root: str | Path, split: MemeSplit | str, *, labelled: bool = True
) -> list[Record]:
    """Parse one split of Hateful Memes into records (ids are the ``id`` field as a string).

    Args:
        root: the dataset root (or the ``data`` folder of the first-phase layout).
        split: ``train``, ``dev_seen``, ``dev_unseen``, ``test_seen`` or ``test_unseen``.
        labelled: the labels are needed; False (prediction) ignores them.

    Raises:
        DatasetNotFoundError: if the root or the split's file is missing.
        UnlabelledSplitError: if ``labelled`` and the file has no labels at all.
    """
    base = find_hateful_memes(root)
    path = split_file(base, split)
    lines = read_jsonl(path)
    if labelled and lines and not any(row.cells and "label" in row.cells for row in lines):
        msg = f"{str(path)!r} ({MemeSplit(split).value}) has no labels. {UNLABELLED_HINT}"
        raise UnlabelledSplitError(msg)
    records = []
    for number, obj, unreadable in lines:
        source = f"{path}:{number}"
        if obj is None:
            records.append(Record(source, None, None, None, source, (unreadable,), parsed=False))
        else:
            records.append(_record(base, obj, source, labelled))
    return records


class HatefulMemesDataset(RecordDataset):
    """One split of Hateful Memes, binary labels (1: hateful). See the module docstring.

    Args:
        root: the dataset root.
        split: ``train``, ``dev_seen``, ``dev_unseen``, ``test_seen`` or ``test_unseen``.
        image_transform: PIL image -> float tensor [3, H, W].
        tokenizer: list of strings -> int tensor [B, L].
        image_size: (H, W) of the transform's output.
        labelled: False reads a split without labels (targets are -1), for prediction.
    """

    family = "hateful_memes"

    def __init__(
        self,
        root: str | Path,
        split: MemeSplit | str,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
        *,
        labelled: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = MemeSplit(split)
        records = read_hateful_memes(root, self.split, labelled=labelled)
        super().__init__(records, len(CLASSES), False, image_transform, tokenizer, image_size)
