"""Predicting new data: the ``predict_file`` every file-backed family reads.

A predict input is a table in the format of your own data (:mod:`cmpt_lightning.datasets.csv`):
a CSV, TSV, JSONL or JSON list of objects with the columns ``image`` (a path relative to the
data module's ``root``, inside it unless ``allow_outside_root``; empty: no image), ``text``
(empty: no text) and, optionally, ``id``; the file itself may be anywhere. Labels are not
needed and not read; the classes are the family's (the model's). Hateful Memes also reads its
own ``.jsonl`` format (``test_unseen.jsonl``): see its data module.

- **Ids.** A row's ``id``; in a table without an ``id`` column, its 1-based line number in the
  file: ``"2"`` for the first row under a CSV header, ``"1"`` for the first line of a JSONL
  file, the position in the list for a JSON file (a CSV row whose quoted text spans several
  lines is named by its last line). An output row can so be traced back to its line.
- **Rows without inputs.** A row with neither an image nor a text (and nothing else wrong) is
  not predicted; its id is listed in the data module's ``without_inputs``, which
  ``predictions.csv`` writes with a note, and logged. Every line with anything on it but
  whitespace is a row: an id alone (``p3,,``), a line of separators only (``,,``) or ``{}`` in
  a JSONL file. Lines of whitespace only are not rows.
- **Other problems** (a JSONL line that is not an object, an empty ``id`` cell in a table with an
  ``id`` column, an image that does not open or lies outside the root) are bad samples, as in
  training data (``on_bad_sample``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..datasets.checks import CheckReport, find_bad_samples
from ..datasets.csv import Columns, read_records, resolve_path
from ..datasets.errors import DataValueError
from ..datasets.records import Record, RecordDataset
from ..datasets.tables import read_table
from ..tasks import Task
from .files import FileDataModule

__all__ = ["PredictInput", "PredictTable", "check_predict", "read_predict", "rows_without_inputs"]

log = logging.getLogger(__name__)


class PredictTable(RecordDataset):
    """The rows of a predict input: either modality may be absent, and there are no labels.

    Its format is that of your own tables, so its messages name the ``csv`` family
    (``cmpt data check csv --root ROOT --predict_file FILE`` checks it too).
    """

    family = "csv"
    requires_image = False  # a row without an image is real missingness
    requires_text = False  # and so is a row without a text


@dataclass(frozen=True)
class PredictInput:
    """Where the rows to predict are, and how to read them.

    Attributes:
        file: the table, relative to the data module's root (or absolute).
        columns: the column names (``image``, ``text``, ``id``; label and split are not read).
        splits: keep only the rows of these splits (a table with a split column); None: all.
        image_root: the folder the image paths are relative to (None: the data module's root).
    """

    file: str | Path
    columns: Columns = field(default_factory=Columns)
    splits: Sequence[str] | None = None
    image_root: Path | None = None

    def records(self, root: Path) -> list[Record]:
        """The rows as unlabelled records, named by line where they have no id (see above)."""
        path = resolve_path(root, self.file).absolute()
        names, _ = read_table(path)
        image_root = root if self.image_root is None else self.image_root
        columns, splits = self.columns, self.splits
        records = read_records(
            image_root, path, classes=(), columns=columns, splits=splits, labelled=False
        )
        if columns.id in names:
            return records
        # the reader names such rows by position; their source is "<file>:<line>"
        return [replace(r, id=r.source.rpartition(":")[2]) for r in records]


def rows_without_inputs(records: Sequence[Record]) -> list[int]:
    """Positions of the rows with neither an image nor a text, and nothing else wrong."""
    return [
        i
        for i, r in enumerate(records)
        if r.image is None and not (r.text or "").strip() and not r.problems
    ]


def read_predict(dm: FileDataModule, source: PredictInput) -> PredictTable:
    """The dataset ``dm`` predicts from ``source``, without the rows that have no inputs.

    Those rows' ids are listed in ``dm.without_inputs`` (and logged); the rest is screened at
    setup as any split is.

    Raises:
        ValueError: if no row has an input.
    """
    records = source.records(dm.root)
    empty = rows_without_inputs(records)
    dm.without_inputs = [records[i].id for i in empty]
    if empty:
        log.warning(
            "predict: %d row(s) of %s have neither an image nor a text and are not predicted "
            "(listed in predictions.csv): %s",
            len(empty),
            source.file,
            dm.without_inputs[:20],
        )
    dropped = set(empty)
    kept = [r for i, r in enumerate(records) if i not in dropped]
    if not kept:
        msg = f"nothing to predict: no row of {str(source.file)!r} has an image or a text"
        raise DataValueError(msg)
    multilabel = dm.task is Task.MULTILABEL
    transform, tokenizer, size = dm.image_transform(), dm.tokenizer(), dm.image_size()
    return PredictTable(kept, dm.num_classes, multilabel, transform, tokenizer, size)


def check_predict(dm: FileDataModule, report: CheckReport, source: PredictInput) -> None:
    """Add ``source`` to a ``cmpt data check`` report as the split ``predict``.

    Rows without inputs are a warning (they are listed, not predicted); other problems are
    errors, found as at setup (the module's ``image_check``, images inside ``root``).
    """
    records = source.records(dm.root)
    empty = set(rows_without_inputs(records))
    if empty:
        ids = [records[i].id for i in sorted(empty)][:20]
        report.warnings.append(f"predict: rows {ids} have no image and no text: not predicted")
    bad = find_bad_samples(
        records,
        requires_image=False,
        requires_text=False,
        image_check=dm.image_check,
        threads=dm.check_threads,
        root=dm.root,
        allow_outside_root=dm.allow_outside_root,
    )
    report.add("predict", str(source.file), records, [b for b in bad if b.index not in empty])
