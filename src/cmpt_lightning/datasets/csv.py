"""Your own data: a CSV, TSV, JSONL or JSON table of image paths, texts and labels.

One row per sample. Columns (names configurable, see :class:`Columns`):

- ``image``: image path relative to the root; empty: the sample has no image. It must stay
  inside the root (no ``..`` out of it, no absolute path elsewhere, no link out of it) unless
  the data module's ``allow_outside_root`` is set: see :mod:`~cmpt_lightning.datasets.paths`;
- ``text``: the text; empty: the sample has no text;
- ``label``: a class name, an integer class index, or for multi-label tasks a list (a JSON list
  ``["a", "b"]`` in a CSV cell or a real list in JSONL, or names joined by ``|``); an empty,
  whitespace-only or NaN label (``nan`` in a CSV) is a bad sample, never a class. Names and
  indices do not mix in one table, and a boolean, float, JSON object or (single-label) list is
  no label: the table is refused, naming its line (see
  :func:`~cmpt_lightning.datasets.labels.check_label_kinds`);
- ``id`` (optional): a stable sample id; without the column, the row's position in the file
  (``"0"`` for the first data row) is the id;
- ``split`` (optional): ``train``, ``val`` or ``test`` (also ``valid``, ``validation``,
  ``dev``, ``training``, ``testing``).

A row without an image or a text is real missingness and is kept as such (in JSONL, ``null``
and ``NaN`` are empty too); a row with neither, an image path that does not open or leads
outside the root, a missing or unknown label, or a line that is not a JSON object is a bad
sample, named by its file and line. The table must be UTF-8 (a byte order mark is fine; see
:mod:`~cmpt_lightning.datasets.tables`), and its cells may be of any length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..tasks import Task
from .errors import DatasetNotFoundError, DataValueError
from .labels import check_label_kinds, class_key, is_blank, parse_label
from .records import Record, RecordDataset
from .tables import Row, read_table

__all__ = [
    "LAYOUT",
    "SPLIT_NAMES",
    "Columns",
    "MultimodalCSVDataset",
    "check_labels",
    "read_records",
    "resolve_path",
    "table_labels",
    "table_splits",
]

NAME = "your data"

LAYOUT = """\
<root>/<file>.csv (or .tsv, .jsonl, .json) with the columns
  id (optional), image (path relative to <root>; empty: no image), text (empty: no text),
  label (class name, integer, or a list for multilabel: ["a", "b"] or a|b), split (optional)
  either one data_file with a split column, or train_file / val_file / test_file;
  predict_file needs no label column
<root>/<the paths of the image column>"""

#: Accepted spellings of each split in a split column.
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip

_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class Columns:
    """The names of the table's columns (keys, in JSONL).

    Attributes:
        image: image path column.
        text: text column.
        label: label column.
        id: sample id column (optional in the file).
        split: split column (optional in the file).
    """

    image: str = "image"
    text: str = "text"
    label: str = "label"
    id: str = "id"
    split: str = "split"


def resolve_path(root: str | Path, file: str | Path) -> Path:
    """``file`` relative to ``root`` (unless absolute); raises if it does not exist."""
    path = Path(file).expanduser()
    path = path if path.is_absolute() else Path(root) / path
    if not Path(root).exists():
        raise DatasetNotFoundError(NAME, root, root, LAYOUT)
    if not path.is_file():
        raise DatasetNotFoundError(NAME, root, path, LAYOUT)
    if path.suffix.lower() not in _SUFFIXES:
        msg = f"{str(path)!r}: unknown table format {path.suffix!r}; use one of {list(_SUFFIXES)}"
        raise DataValueError(msg)
    return path


def check_labels(
    path: Path, rows: Sequence[Row], column: str, task: Task | str, separator: str = "|"
) -> None:
    """Refuse the table's labels unless they are all class names or all class indices.

    Every row of the file is checked, whichever splits are read (see
    :func:`~cmpt_lightning.datasets.labels.check_label_kinds`).

    Raises:
        LabelTypeError: naming the file, the line (the row, in a JSON list) and the value.
    """
    cells = [(row.line, row.cells.get(column)) for row in rows if row.cells is not None]
    unit = "row" if path.suffix.lower() == ".json" else "line"
    check_label_kinds(str(path), cells, task, separator, unit)


def read_records(
    root: str | Path,
    file: str | Path,
    *,
    classes: Sequence[str],
    task: Task | str = Task.MULTICLASS,
    columns: Columns | None = None,
    splits: Sequence[str] | None = None,
    labelled: bool = True,
    label_separator: str = "|",
) -> list[Record]:
    """Parse a table into records.

    Args:
        root: the folder image paths are relative to.
        file: the table, relative to ``root`` or absolute.
        classes: the class names in label order.
        task: ``multiclass``, ``multilabel`` or ``binary``.
        columns: the column names.
        splits: keep only the rows whose split column is one of these (``train``, ``val``,
            ``test``); None keeps every row.
        labelled: read the label column (False: targets are -1, the column may be absent).
        label_separator: separator of several labels in one CSV cell (multilabel).

    Raises:
        DatasetNotFoundError: if the root or the file is missing.
        ValueError: if a needed column is missing, or a split value is unknown.
        LabelTypeError: if a label is no class name or index, or names and indices mix.
    """
    task, columns = Task(task), columns or Columns()
    path = resolve_path(root, file)
    names, rows = read_table(path)
    if columns.image not in names and columns.text not in names:
        msg = (
            f"{str(path)!r} has neither the image column {columns.image!r} nor the text column "
            f"{columns.text!r}; its columns are {names}"
        )
        raise DataValueError(msg)
    if labelled and columns.label not in names:
        msg = (
            f"{str(path)!r} has no label column {columns.label!r} (columns: {names}); set "
            "label_column, or give unlabelled data as predict_file"
        )
        raise DataValueError(msg)
    if labelled:
        check_labels(path, rows, columns.label, task, label_separator)
    if splits is not None:
        rows = _rows_of_splits(path, names, rows, columns, splits)
    index = {name: i for i, name in enumerate(classes)}
    has_id = columns.id in names
    records = []
    for position, (number, row, unreadable) in enumerate(rows):
        source = f"{path}:{number}"
        if row is None:
            problem = (unreadable,)
            records.append(Record(str(position), None, None, None, source, problem, parsed=False))
            continue
        problems: list[str] = []
        key = str(position)
        if has_id:
            if is_blank(row.get(columns.id)):
                problems.append(f"empty {columns.id!r}")
            else:
                key = class_key(row[columns.id])
        cell = row.get(columns.image)
        image = None if is_blank(cell) else Path(root) / str(cell).strip()
        text = None if is_blank(row.get(columns.text)) else str(row[columns.text])
        label = None
        if labelled:
            label, label_problems = parse_label(
                row.get(columns.label), index, task, label_separator
            )
            problems += label_problems
        records.append(Record(key, image, text, label, source, tuple(problems)))
    return records


def _rows_of_splits(
    path: Path, names: list[str], rows: list[Row], columns: Columns, splits: Sequence[str]
) -> list[Row]:
    """The rows of ``splits``, and every line that is not a row (it has no split to tell)."""
    if columns.split not in names:
        msg = (
            f"{str(path)!r} has no split column {columns.split!r} (columns: {names}); set "
            "split_column, or give train_file / val_file / test_file"
        )
        raise DataValueError(msg)
    kept: list[Row] = []
    unknown: dict[str, list[int]] = {}
    for row in rows:
        empty = row.cells is not None and not any(str(v or "").strip() for v in row.cells.values())
        if row.cells is None or empty:
            kept.append(row)  # not a row, or an empty one: kept, to be reported by its line
            continue
        value = str(row.cells.get(columns.split) or "").strip().lower()
        split = SPLIT_NAMES.get(value)
        if split is None:
            unknown.setdefault(value, []).append(row.line)
        elif split in splits:
            kept.append(row)
    if unknown:
        where = "; ".join(f"{v!r} on line(s) {lines[:10]}" for v, lines in sorted(unknown.items()))
        msg = (
            f"{str(path)!r}: unknown values in the split column {columns.split!r}: {where}; "
            "use train, val or test"
        )
        raise DataValueError(msg)
    return kept


def table_splits(
    root: str | Path, file: str | Path, columns: Columns | None = None
) -> set[str] | None:
    """The splits present in a table's split column (None if it has no split column)."""
    columns = columns or Columns()
    names, rows = read_table(resolve_path(root, file))
    if columns.split not in names:
        return None
    values = {str(r.cells.get(columns.split) or "").strip().lower() for r in rows if r.cells}
    return {SPLIT_NAMES[v] for v in values if v in SPLIT_NAMES}


def table_labels(
    root: str | Path,
    file: str | Path,
    columns: Columns | None = None,
    splits: Sequence[str] | None = None,
    task: Task | str = Task.MULTICLASS,
    label_separator: str = "|",
) -> list[Any]:
    """The label cells of a table's rows (of ``splits`` only, if given).

    Raises:
        LabelTypeError: if a label of the table is no class name or index for ``task``, or
            names and indices mix (see :func:`check_labels`).
    """
    columns = columns or Columns()
    path = resolve_path(root, file)
    names, rows = read_table(path)
    if columns.label not in names:
        msg = f"{str(path)!r} has no label column {columns.label!r} ({names}); set label_column"
        raise DataValueError(msg)
    check_labels(path, rows, columns.label, task, label_separator)
    if splits is not None:
        rows = _rows_of_splits(path, names, rows, columns, splits)
    return [row.cells.get(columns.label) for row in rows if row.cells is not None]


class MultimodalCSVDataset(RecordDataset):
    """Rows of a CSV / TSV / JSONL / JSON table as samples (see the module docstring).

    Args:
        root: the folder image paths are relative to.
        file: the table, relative to ``root`` or absolute.
        image_transform: PIL image -> float tensor [3, H, W].
        tokenizer: list of strings -> int tensor [B, L].
        image_size: (H, W) of the transform's output.
        classes: the class names in label order.
        task: ``multiclass``, ``multilabel`` or ``binary``.
        **table: the other options of :func:`read_records` (``columns``, ``splits``,
            ``labelled``, ``label_separator``).
    """

    family = "csv"
    requires_image = False  # a row without an image is real missingness
    requires_text = False  # and so is a row without a text

    def __init__(
        self,
        root: str | Path,
        file: str | Path,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
        *,
        classes: Sequence[str],
        task: Task | str = Task.MULTICLASS,
        **table: Any,
    ) -> None:
        self.root = Path(root)
        self.classes = list(classes)
        self.task = Task(task)
        records = read_records(root, file, classes=self.classes, task=self.task, **table)
        multilabel = self.task is Task.MULTILABEL
        num_classes = len(self.classes)
        super().__init__(records, num_classes, multilabel, image_transform, tokenizer, image_size)
