"""UPMC Food-101 (101 dishes, single label, accuracy): splits, and a seeded validation carve."""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from ..datasets.checks import CheckReport
from ..datasets.errors import DataValueError
from ..datasets.food101 import (
    OFFICIAL_CLASSES,
    OFFICIAL_SIZES,
    SPLITS,
    Food101Dataset,
    TextSource,
    food101_classes,
    read_food101,
    read_split_file,
    untitled_images,
)
from ..tasks import Task
from .files import FileDataModule, check_val_fraction
from .predict import PredictInput, PredictTable, check_predict, read_predict

__all__ = ["Food101DataModule", "untitled_note"]

log = logging.getLogger(__name__)
_warn_once = rank_zero_only(log.warning)  # setup runs on every process: say it on rank zero


def untitled_note(split: str, count: int) -> str:
    """What setup logs and ``cmpt data check`` reports about a split's images without a title."""
    return (
        f"{count} image(s) of the {split} split have no title (no row in "
        f"texts/{split}_titles.csv): kept as image-only samples (real missingness)"
    )


class Food101DataModule(FileDataModule):
    """UPMC Food-101: official train and test splits, and validation carved from train.

    The validation carve is seeded and stratified by class; a user ``split_file`` replaces
    all three splits. ``predict`` reads ``predict_file``, else the test split. Images without
    a row in their split's ``texts/<split>_titles.csv`` are image-only samples (real
    missingness); setup logs how many each split has.

    Args:
        root: the dataset folder, holding ``images/`` and ``texts/`` (or ``texts_txt/``).
        val_fraction: share of each class of the official train split held out for validation
            (at least one sample per class of two or more).
        split_seed: seed of the validation carve; the carve is a pure function of (seed, ids).
        split_file: a JSON file ``{"train": [...], "val": [...], "test": [...]}`` of image
            file names that replaces the official splits and the carve.
        class_index: a JSON file ``{"class name": index}``; default: classes in alphabetical
            order of the ``images/train`` folders.
        text_source: ``auto`` (``texts/*_titles.csv`` if present, else ``texts_txt/``), ``csv``
            or ``txt``.
        predict_file: new samples to predict: a table (CSV, TSV, JSONL or JSON) with ``image``
            (path relative to ``root``), ``text`` and optionally ``id`` columns, labels not
            needed (see :mod:`~cmpt_lightning.datamodules.predict`). The titles CSVs do not
            fit: their class column, the answer, also places the image.
        **kwargs: the settings of :class:`FileDataModule` (``image_check``, ``on_bad_sample``,
            ...) and :class:`CMPTDataModule` (``batch_size``, ``train_missing``, ...).
    """

    task = Task.MULTICLASS
    family = "food101"
    dataset_class = Food101Dataset
    raw_splits = SPLITS
    official_sizes = OFFICIAL_SIZES

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        split_file: str | None = None,
        class_index: str | None = None,
        text_source: TextSource | str = "auto",
        predict_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.val_fraction = check_val_fraction(val_fraction)
        self.split_seed = split_seed
        self.split_file = split_file
        self.class_index = class_index
        self.text_source = TextSource.parse(text_source, "text_source")
        self.predict_file = predict_file
        self._classes: list[str] | None = None
        self._pool: Food101Dataset | None = None

    @property
    def classes(self) -> list[str]:
        """Class names in label order (read from the data on first use; 101 in the full set)."""
        if self._classes is None:
            self._classes = food101_classes(self.root, self.class_index)
        return self._classes

    def _read(self, split: str) -> Food101Dataset:
        dataset = Food101Dataset(
            self.root,
            split,
            self.image_transform(train=False),
            self.tokenizer(),
            self.image_size(),
            classes=self.classes,
            text_source=self.text_source,
        )
        for part, count in dataset.untitled.items():
            if count:
                _warn_once("%s", untitled_note(part, count))
        return dataset

    def _from_split_file(self, split: str, split_file: str) -> Food101Dataset:
        table = read_split_file(split_file)
        if split not in table:
            msg = f"split_file {split_file!r} has no {split!r} list (it has {sorted(table)})"
            raise DataValueError(msg)
        if self._pool is None:
            self._pool = self._read("all")
        where: dict[str, list[int]] = {}
        for position, key in enumerate(self._pool.ids):
            where.setdefault(key, []).append(position)
        unknown = [key for key in table[split] if key not in where]
        if unknown:
            msg = (
                f"split_file {split_file!r}: {len(unknown)} {split} name(s) are not in the "
                f"data (first: {unknown[:5]})"
            )
            raise DataValueError(msg)
        ambiguous = [key for key in table[split] if len(where[key]) > 1]
        if ambiguous:
            msg = (
                f"split_file {split_file!r}: {len(ambiguous)} {split} name(s) are in both "
                f"train and test (first: {ambiguous[:5]})"
            )
            raise DataValueError(msg)
        return self._pool.select([where[key][0] for key in table[split]])

    def _carve(self, split: str) -> Food101Dataset:
        if self._pool is None:
            self._pool = self._read("train")
        labels = [-1 if r.label is None else r.label for r in self._pool.records]
        return self.carve(
            self._pool,
            labels,
            split,
            fraction=self.val_fraction,
            seed=self.split_seed,
            fix="set val_fraction > 0 or give a split_file",
        )

    def read_split(self, split: str) -> Food101Dataset | PredictTable:
        """The dataset of ``split``: official, carved, from ``split_file``, or ``predict_file``."""
        if split == "predict" and self.predict_file is not None:
            return read_predict(self, PredictInput(self.predict_file))
        source = "test" if split == "predict" else split
        if self.split_file is not None:
            dataset = self._from_split_file(source, self.split_file)
        elif source == "test":
            dataset = self._read("test")
        else:
            dataset = self._carve(source)
        return dataset.select(range(len(dataset)), self.image_transform(train=split == "train"))

    def inspect(self) -> CheckReport:
        """Train and test against the official sizes, class count, untitled images; predict_file.

        Image files without a row in the split's titles CSV are a warning: they are kept as
        image-only samples (counted in the split's samples), as at setup.
        """
        report = CheckReport()
        if len(self.classes) != OFFICIAL_CLASSES:
            full = OFFICIAL_CLASSES
            report.warnings.append(f"{len(self.classes)} classes, the full dataset has {full}")
        for split in self.raw_splits:
            records = read_food101(self.root, split, self.classes, self.text_source)
            official = self.official_sizes[split]
            report.add(split, f"images/{split}", records, self.find_bad(records), official)
            untitled = untitled_images(records)
            if untitled:
                report.warnings.append(untitled_note(split, untitled))
        if self.predict_file is not None:
            check_predict(self, report, PredictInput(self.predict_file))
        return report
