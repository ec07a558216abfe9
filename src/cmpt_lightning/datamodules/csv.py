"""Your own image-text data from a CSV, TSV, JSONL or JSON table.

The columns are described in :mod:`cmpt_lightning.datasets.csv`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from ..datasets.checks import CheckReport
from ..datasets.csv import (
    Columns,
    MultimodalCSVDataset,
    read_records,
    table_labels,
    table_splits,
)
from ..datasets.errors import DataValueError, RareClassError
from ..datasets.labels import RareClasses, class_counts, infer_classes, rare_class_report
from ..datasets.records import Record
from ..tasks import Task
from .files import FileDataModule, check_val_fraction, plain
from .predict import PredictInput, PredictTable, check_predict, read_predict

__all__ = ["MultimodalCSVDataModule"]

log = logging.getLogger(__name__)
_warn_once = rank_zero_only(log.warning)  # setup runs on every process: say it on rank zero

#: A split's rows: the table file and the split-column values to keep (None: every row).
Source = tuple[str, list[str] | None]


class MultimodalCSVDataModule(FileDataModule):
    """Image-text classification from your own table, with real missing modalities.

    Give one ``data_file`` with a split column, or ``train_file`` (and ``val_file`` /
    ``test_file``). Without validation rows, a seeded, class-stratified ``val_fraction`` of
    the training rows is held out. Rows without an image or a text keep that modality absent
    (real missingness, counted at setup); the simulated missingness of ``train_missing`` /
    ``eval_missing`` is added on top, and never removes a sample's only modality (such samples
    are counted as ``spared``). ``predict`` reads ``predict_file`` (no label column needed;
    see :mod:`~cmpt_lightning.datamodules.predict`), else the test split; its rows with
    neither an image nor a text are not predicted but listed in :attr:`without_inputs`, and
    rows without an id are named by their line number in the file. A class that fewer than
    ``min_class_count`` training rows hold (a label typo becomes a class of one row) is logged
    at setup, naming each such class, its count and its first line (``rare_classes``).

    Args:
        root: the folder the tables and the image paths are relative to.
        data_file: one table holding every split, told apart by ``split_column``; without that
            column every row is training data.
        train_file: the training table (instead of ``data_file``).
        val_file: the validation table (default: carved from the training rows).
        test_file: the test table.
        predict_file: a table to predict, labels not needed.
        task: ``multiclass``, ``multilabel`` or ``binary``.
        classes: class names in label order; default: the sorted names of the training labels
            (``0..max`` for integer labels). For binary names the second is the positive class.
        image_column: the column of image paths (relative to ``root``; empty: no image).
        text_column: the column of texts (empty: no text).
        label_column: the column of labels: a class name, an integer, or for multilabel a
            list (``["a", "b"]`` or ``a|b`` in a CSV cell, a list in JSONL).
        id_column: the column of sample ids; without it a row's position in its file is its id
            (in predictions: its 1-based line number in the file).
        split_column: the column of ``train`` / ``val`` / ``test`` in ``data_file``.
        label_separator: separator of several labels in one CSV cell (multilabel).
        val_fraction: share of each class of the training rows held out for validation when
            the data has no validation rows.
        split_seed: seed of that hold-out; a pure function of (seed, ids).
        min_class_count: a class held by fewer training rows than this is a rare class (see
            ``rare_classes``); 2 (the default) flags a class of one row, the usual sign of a
            typo in a label. A class of the given ``classes`` that no training row holds is
            rare too.
        rare_classes: what a rare class is at setup (and in ``cmpt data check``): ``warn``
            (log a warning naming each rare class, its count, the file and its first line),
            ``error`` (stop with that message) or ``ignore``.
        **kwargs: the settings of :class:`FileDataModule` (``image_check``, ``on_bad_sample``,
            ...) and :class:`CMPTDataModule` (``batch_size``, ``train_missing``, ...).
    """

    family = "csv"
    dataset_class = MultimodalCSVDataset
    raw_splits = ("train", "val", "test")

    def __init__(
        self,
        root: str,
        data_file: str | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        task: Task | str = "multiclass",
        classes: list[str] | None = None,
        image_column: str = "image",
        text_column: str = "text",
        label_column: str = "label",
        id_column: str = "id",
        split_column: str = "split",
        label_separator: str = "|",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        min_class_count: int = 2,
        rare_classes: RareClasses | str = "warn",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if isinstance(min_class_count, bool) or min_class_count < 0:
            msg = f"min_class_count must be an integer >= 0 (0: no check), got {min_class_count!r}"
            raise DataValueError(msg)
        if data_file is not None and train_file is not None:
            msg = f"give data_file or train_file, not both (got {data_file!r} and {train_file!r})"
            raise DataValueError(msg)
        if data_file is None and train_file is None and predict_file is None:
            msg = (
                "no data: give data_file (with a split column), or train_file (and val_file, "
                "test_file), or predict_file"
            )
            raise DataValueError(msg)
        self.files = {"data": data_file, "train": train_file, "val": val_file, "test": test_file}
        self.predict_file = predict_file
        self.task = Task.parse(task, "task")
        self._classes = list(classes) if classes is not None else None
        self.columns = Columns(image_column, text_column, label_column, id_column, split_column)
        self.label_separator = label_separator
        self.val_fraction = check_val_fraction(val_fraction)
        self.split_seed = split_seed
        self.min_class_count = min_class_count
        self.rare_classes = RareClasses.parse(rare_classes, "rare_classes")
        self._present: set[str] | None = None

    # --- classes ------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names in label order (inferred from the training labels on first use)."""
        if self._classes is None:
            source = self.source("train")
            if source is None:
                msg = (
                    "no training data to infer the classes from: pass classes (the class "
                    "names the model was trained with, in order)"
                )
                raise DataValueError(msg)
            self._classes = self._infer_classes(source)
        return self._classes

    def _infer_classes(self, source: Source) -> list[str]:
        labels = table_labels(
            self.root, source[0], self.columns, source[1], self.task, self.label_separator
        )
        return infer_classes(labels, self.task, self.label_separator)

    def rare_class_message(self, records: Sequence[Record], classes: Sequence[str]) -> str | None:
        """What is said about the rare classes of the training ``records`` (None: none is rare).

        Counts each class over the training rows as read (before the validation carve), with
        the ``file:line`` of its first row; see ``min_class_count``.
        """
        counts = class_counts(((r.source, r.label) for r in records), classes)
        return rare_class_report(counts, self.min_class_count)

    def _check_rare(self, records: Sequence[Record]) -> None:
        """Warn about the rare classes of the training rows, or fail (``rare_classes``)."""
        if self.rare_classes is RareClasses.IGNORE:
            return
        message = self.rare_class_message(records, self.classes)
        if message is None:
            return
        if self.rare_classes is RareClasses.ERROR:
            raise RareClassError(message)
        _warn_once("%s", message)

    def data_settings(self) -> dict[str, Any]:
        """The settings that decide the samples: the tables, columns, task, classes and carve."""
        return {
            **{f"{name}_file": file for name, file in self.files.items()},
            "task": self.task.value,
            "classes": self._classes,
            "columns": plain(self.columns),
            "label_separator": self.label_separator,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "on_bad_sample": self.on_bad_sample.value,
            "allow_outside_root": self.allow_outside_root,
        }

    # --- splits -------------------------------------------------------------------------------
    def source(self, split: str) -> Source | None:
        """Where the rows of ``split`` (train, val or test) come from; None if the data has none."""
        data_file = self.files["data"]
        if data_file is None:
            file = self.files[split]
            return None if file is None else (file, None)
        if self._present is None:
            self._present = table_splits(self.root, data_file, self.columns) or {"*"}
        if "*" in self._present:  # no split column: every row is training data
            return (data_file, None) if split == "train" else None
        return (data_file, [split]) if split in self._present else None

    def _read(self, source: Source, split: str) -> MultimodalCSVDataset:
        return MultimodalCSVDataset(
            self.root,
            source[0],
            self.image_transform(train=split == "train"),
            self.tokenizer(),
            self.image_size(),
            classes=self.classes,
            task=self.task,
            columns=self.columns,
            splits=source[1],
            label_separator=self.label_separator,
        )

    def _records(self, source: Source, classes: Sequence[str]) -> list[Record]:
        """The rows of ``source`` as records, without preprocessing (for :meth:`inspect`)."""
        return read_records(
            self.root,
            source[0],
            classes=classes,
            task=self.task,
            columns=self.columns,
            splits=source[1],
            label_separator=self.label_separator,
        )

    def _carve(self, split: str) -> MultimodalCSVDataset:
        train = self.source("train")
        if train is None:
            msg = "no training rows: give train_file, or data_file with train rows"
            raise DataValueError(msg)
        pool = self._read(train, split)
        if split == "train":
            self._check_rare(pool.records)
        multilabel = self.task is Task.MULTILABEL
        groups = [0 if multilabel or r.label is None else r.label for r in pool.records]
        fix = "give val_file, val rows in the split column, or val_fraction > 0"
        return self.carve(
            pool, groups, split, fraction=self.val_fraction, seed=self.split_seed, fix=fix
        )

    def read_split(self, split: str) -> MultimodalCSVDataset | PredictTable:
        """The dataset of ``split``: its rows, or carved from the training rows (see above)."""
        if split == "predict":
            return self._predict_dataset()
        if split in ("train", "val") and self.source("val") is None:
            return self._carve(split)
        source = self.source(split)
        if source is None:
            msg = (
                f"the data has no {split} split: give {split}_file, or {split} rows in "
                f"the split column {self.columns.split!r} of data_file"
            )
            raise DataValueError(msg)
        dataset = self._read(source, split)
        if split == "train":
            self._check_rare(dataset.records)
        return dataset

    def _predict_dataset(self) -> PredictTable:
        if self.predict_file is not None:
            source: Source | None = (self.predict_file, None)
        else:
            source = self.source("test")
        if source is None:
            msg = "nothing to predict: give predict_file (labels not needed), or a test split"
            raise DataValueError(msg)
        return read_predict(self, PredictInput(source[0], self.columns, source[1]))

    # --- cmpt data check ------------------------------------------------------------------------
    def inspect(self) -> CheckReport:
        """Every split the options name, and ``predict_file``, read as the module reads them.

        Without ``classes``, the classes inferred from the training labels (of the first split
        if there are none) are reported as info; rare classes of the training rows (see
        ``min_class_count``) are a warning unless ``rare_classes: ignore``; prediction rows with
        neither an image nor a text are a warning (they are not predicted), not an error.
        """
        report = CheckReport()
        sources = [(split, self.source(split)) for split in self.raw_splits]
        present = [(split, source) for split, source in sources if source is not None]
        classes = self._classes or []
        if self._classes is None and present:
            split, source = present[0]  # train if there are training rows
            classes = self._infer_classes(source)
            report.info.append(f"{len(classes)} classes, from the {split} labels: {classes[:20]}")
        for split, source in present:
            records = self._records(source, classes)
            report.add(split, source[0], records, self.find_bad(records))
            rare = self.rare_class_message(records, classes) if split == "train" else None
            if rare is not None and self.rare_classes is not RareClasses.IGNORE:
                report.warnings.append(f"{split}: {rare}")
        if self.predict_file is not None:
            check_predict(self, report, PredictInput(self.predict_file, self.columns))
        return report
