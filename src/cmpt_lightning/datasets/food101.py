"""UPMC Food-101: 101 dishes, a photo and the text of the web page it came from, single label.

Layout (as downloaded, e.g. from Kaggle's ``upmc-food-101``)::

    <root>/images/{train,test}/<class>/<class>_<n>.jpg
    <root>/texts/{train,test}_titles.csv   rows: image file name, page text, class name

The CSVs come with a header row in some copies and without in others: a first row whose first
cell is not an image file name is a header. A row with an empty or NaN class is a bad sample,
and so is a row with an empty text, or a file name that leads outside the root (see
:mod:`~cmpt_lightning.datasets.paths`). An image file under ``images/<split>/<class>/`` that
has no row in the split's CSV (the distributed copies lack the page text of some images) is
kept as an image-only sample: real missingness, like a row of your own table without a text,
labelled by its class folder (:func:`untitled_images` counts them; the data module logs the
count at setup and ``cmpt data check`` reports it).
The original release keeps each text in ``<root>/texts_txt/<class>/<class>_<n>.txt`` instead;
the split then comes from ``images/``, and an image without its ``.txt`` file is a bad sample
(that release has one per image). There is no official validation split (the data module
carves one from train).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from ..choices import Choice
from .errors import DataFileNotFoundError, DatasetNotFoundError, DataValueError
from .labels import missing_label
from .records import Record, RecordDataset
from .tables import large_csv_fields

__all__ = [
    "LAYOUT",
    "OFFICIAL_CLASSES",
    "OFFICIAL_SIZES",
    "SPLITS",
    "Food101Dataset",
    "TextSource",
    "food101_classes",
    "read_food101",
    "read_split_file",
    "untitled_images",
]

NAME = "UPMC Food-101"

LAYOUT = """\
<root>/images/train/<class>/<class>_<n>.jpg
<root>/images/test/<class>/<class>_<n>.jpg
<root>/texts/train_titles.csv   (image file name, page text, class name; header row optional)
<root>/texts/test_titles.csv
  or, in the original release, <root>/texts_txt/<class>/<class>_<n>.txt instead of texts/"""

#: Sample counts of the copy distributed with ``texts/*_titles.csv`` (copies differ slightly).
OFFICIAL_SIZES = {"train": 67972, "test": 22716}
#: Number of classes of the full dataset.
OFFICIAL_CLASSES = 101

SPLITS = ("train", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class TextSource(Choice):
    """Where the texts are read from."""

    AUTO = "auto"  # texts/<split>_titles.csv if it exists, else texts_txt/
    CSV = "csv"  # texts/<split>_titles.csv
    TXT = "txt"  # texts_txt/<class>/<stem>.txt (the original release)


def _require(root: Path, path: Path, hint: str = "") -> None:
    if not path.exists():
        raise DatasetNotFoundError(NAME, root, path, LAYOUT, hint)


def food101_classes(root: str | Path, class_index: str | Path | None = None) -> list[str]:
    """The class names in label order.

    By default the folders of ``images/train`` in alphabetical order; with ``class_index``,
    the order of the JSON mapping ``{"class name": index}`` in that file.
    """
    root = Path(root)
    if class_index is not None:
        path = Path(class_index)
        if not path.is_file():
            msg = f"class_index file {str(path)!r} does not exist; give a JSON {{class: index}}"
            raise DataFileNotFoundError(msg)
        mapping = json.loads(path.read_text())
        if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
            msg = f"class_index {str(path)!r} must map class names to integers, got {mapping!r:.80}"
            raise DataValueError(msg)
        if sorted(mapping.values()) != list(range(len(mapping))):
            msg = (
                f"class_index {str(path)!r} must number the classes 0..{len(mapping) - 1} once "
                f"each, got indices {sorted(mapping.values())[:10]}..."
            )
            raise DataValueError(msg)
        return sorted(mapping, key=mapping.__getitem__)
    folder = root / "images" / "train"
    _require(root, folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        hint = "images/train has no class folders."
        raise DatasetNotFoundError(NAME, root, folder / "<class>", LAYOUT, hint)
    return classes


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """Read a user split ``{"train": [...], "val": [...], "test": [...]}`` of image file names.

    Returns the sample ids (file name stems) of each split; a name in two splits is an error.
    """
    path = Path(path)
    if not path.is_file():
        msg = (
            f"split_file {str(path)!r} does not exist; give a JSON file "
            "{'train': [...], 'val': [...], 'test': [...]} of image file names"
        )
        raise DataFileNotFoundError(msg)
    table = json.loads(path.read_text())
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        msg = f"split_file {str(path)!r} must map split names to lists of image file names"
        raise DataValueError(msg)
    splits = {str(k): [Path(str(name)).stem for name in v] for k, v in table.items()}
    owner: dict[str, str] = {}
    for split, ids in splits.items():
        for key in ids:
            if owner.setdefault(key, split) != split:
                msg = f"split_file {str(path)!r} puts {key!r} in both {owner[key]!r} and {split!r}"
                raise DataValueError(msg)
    return splits


def _is_header(row: Sequence[str]) -> bool:
    """A first row is a header unless its first cell names an image file."""
    return not (row and row[0].strip().lower().endswith(_IMAGE_SUFFIXES))


def _resolve_source(root: Path, split: str, text_source: TextSource) -> TextSource:
    if text_source is not TextSource.AUTO:
        return text_source
    if (root / "texts" / f"{split}_titles.csv").is_file() or not (root / "texts_txt").is_dir():
        return TextSource.CSV
    return TextSource.TXT


def _text_problems(text: str) -> list[str]:
    """``["empty text"]`` for a text of whitespace only (a row or a file without its text)."""
    return [] if text.strip() else ["empty text"]


def _unlisted(images: Path, index: dict[str, int], listed: set[str]) -> list[Record]:
    """Image-only records of the image files under ``images/<class>/`` whose stem is not listed.

    Their source is the image file itself (see :func:`untitled_images`); hidden files (``.*``,
    e.g. macOS ``._`` copies) and files that are not images are not samples.
    """
    records: list[Record] = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        label = index.get(folder.name)
        problems = () if label is not None else (f"unknown class {folder.name!r}",)
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() not in _IMAGE_SUFFIXES or image.name.startswith("."):
                continue
            if image.stem not in listed and image.is_file():
                records.append(Record(image.stem, image, None, label, str(image), problems))
    return records


def untitled_images(records: Sequence[Record]) -> int:
    """How many of ``records`` are image files without a row in their titles CSV (image-only)."""
    return sum(r.text is None and r.parsed and r.source == str(r.image) for r in records)


def _read_csv(root: Path, split: str, index: dict[str, int]) -> list[Record]:
    path = root / "texts" / f"{split}_titles.csv"
    _require(root, path, "Or, with the original release, keep texts_txt/ and set text_source: txt.")
    images = root / "images" / split
    records: list[Record] = []
    with large_csv_fields():  # page texts can exceed the csv module's 128 KB default
        with path.open(newline="", encoding="utf-8", errors="replace") as file:
            for number, row in enumerate(csv.reader(file), start=1):
                if number == 1 and _is_header(row):
                    continue
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                source = f"{path}:{number}"
                if len(row) != 3:
                    problem = f"expected 3 columns (image file name, text, class), got {len(row)}"
                    key = f"{path.name}:{number}"
                    records.append(Record(key, None, None, None, source, (problem,), parsed=False))
                    continue
                name, text, cls = row[0].strip(), row[1], row[2].strip()
                missing = missing_label(row[2], "class")  # empty, or NaN: never a class
                label = None if missing else index.get(cls)
                problems = [] if label is not None else [missing or f"unknown class {cls!r}"]
                if not name:
                    problems.append("empty image file name")
                    name = f"<row {number}>"
                problems += _text_problems(text)
                image = images / cls / name
                records.append(Record(Path(name).stem, image, text, label, source, tuple(problems)))
    return records + _unlisted(images, index, {r.id for r in records})


def _read_txt(root: Path, split: str, index: dict[str, int]) -> list[Record]:
    texts = root / "texts_txt"
    _require(root, texts)
    records: list[Record] = []
    for folder in sorted(p for p in (root / "images" / split).iterdir() if p.is_dir()):
        label = index.get(folder.name)
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
            text_file = texts / folder.name / f"{image.stem}.txt"
            problems = [] if label is not None else [f"unknown class {folder.name!r}"]
            text = None
            if text_file.is_file():
                text = text_file.read_text(encoding="utf-8", errors="replace")
                problems += _text_problems(text)
            else:
                problems.append("text file does not exist")
            records.append(Record(image.stem, image, text, label, str(text_file), tuple(problems)))
    return records


def read_food101(
    root: str | Path,
    split: str,
    classes: Sequence[str],
    text_source: TextSource | str = TextSource.AUTO,
) -> list[Record]:
    """Parse the ``train`` or ``test`` split of UPMC Food-101 into records.

    Sample ids are the image file names' stems (``apple_pie_12``). Rows with an unknown class,
    an empty text or the wrong number of columns become records with problems, not exceptions.
    With the titles CSV, the image files of the split that have no row in it follow the rows as
    image-only records (text None), labelled by their class folder.

    Args:
        root: the dataset root.
        split: ``train`` or ``test``.
        classes: the class names in label order (see :func:`food101_classes`).
        text_source: ``auto``, ``csv`` or ``txt``.

    Raises:
        DatasetNotFoundError: if the images of ``split`` or its texts are missing.
    """
    if split not in SPLITS:
        msg = f"UPMC Food-101 has the splits {SPLITS}, got {split!r}"
        raise DataValueError(msg)
    root = Path(root)
    _require(root, root)
    _require(root, root / "images" / split)
    index = {name: i for i, name in enumerate(classes)}
    source = _resolve_source(root, split, TextSource(text_source))
    if source is TextSource.CSV:
        return _read_csv(root, split, index)
    return _read_txt(root, split, index)


class Food101Dataset(RecordDataset):
    """One split of UPMC Food-101 (see the module docstring for the layout).

    A sample without a text (an image without a row in the titles CSV) is real missingness;
    :attr:`untitled` counts them per split.

    Args:
        root: the dataset root.
        split: ``train``, ``test``, or ``all`` (train then test, for a user split file).
        image_transform: PIL image -> float tensor [3, H, W].
        tokenizer: list of strings -> int tensor [B, L].
        image_size: (H, W) of the transform's output.
        classes: class names in label order (default: the folders of ``images/train``).
        text_source: ``auto``, ``csv`` or ``txt``.
    """

    family = "food101"
    requires_text = False  # an image without a row in the titles CSV is image-only

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
        *,
        classes: Sequence[str] | None = None,
        text_source: TextSource | str = TextSource.AUTO,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = list(classes) if classes is not None else food101_classes(root)
        parts = SPLITS if split == "all" else (split,)
        read = {part: read_food101(root, part, self.classes, text_source) for part in parts}
        #: Image files without a row in the titles CSV per split, kept as image-only samples.
        self.untitled = {part: untitled_images(records) for part, records in read.items()}
        records = [r for part in parts for r in read[part]]
        super().__init__(records, len(self.classes), False, image_transform, tokenizer, image_size)
