"""Hateful Memes (binary, AUROC and accuracy): train, a dev split, and an explicit test split."""

from __future__ import annotations

import logging
from typing import Any

from ..datasets.checks import CheckReport
from ..datasets.csv import Columns, resolve_path
from ..datasets.errors import DatasetNotFoundError, DataValueError
from ..datasets.hateful_memes import (
    CLASSES,
    OFFICIAL_SIZES,
    HatefulMemesDataset,
    MemeSplit,
    UnlabelledSplitError,
    find_hateful_memes,
    read_hateful_memes,
    split_file,
)
from ..datasets.tables import read_table
from ..tasks import Task
from .files import FileDataModule
from .predict import PredictInput, PredictTable, check_predict, read_predict

__all__ = ["HatefulMemesDataModule"]

log = logging.getLogger(__name__)

#: The note of a split without labels in ``cmpt data check``.
UNLABELLED_NOTE = "no labels (the challenge's hidden test set): usable for predict only"


class HatefulMemesDataModule(FileDataModule):
    """Hateful Memes: train, a validation split and an explicit test split.

    ``train.jsonl`` is for training, ``val_split`` for validation (checkpoint selection) and
    ``test_split`` for test; ``predict`` reads ``predict_file``, else the test split, without
    needing labels.

    Args:
        root: the dataset folder, holding ``img/`` and the ``.jsonl`` files (or ``data/`` with
            them, the first-phase layout).
        val_split: the validation split: ``dev_seen`` (``dev.jsonl`` in the first-phase
            layout) or ``dev_unseen``.
        test_split: the test split: ``test_seen``, ``test_unseen`` (both labelled in the
            final release only) or ``dev_seen``.
        predict_file: memes to predict, relative to ``root`` (or absolute): a ``.jsonl`` in
            the dataset's own format (``test_unseen.jsonl``, or new lines ``{"id": ..., "img":
            "img/<id>.png", "text": ...}``, ``img`` relative to the folder holding
            ``train.jsonl``; a ``label`` is ignored), or a table with ``image`` (relative to
            ``root``), ``text`` and optionally ``id`` columns (see
            :mod:`~cmpt_lightning.datamodules.predict`).
        **kwargs: the settings of :class:`FileDataModule` (``image_check``, ``on_bad_sample``,
            ...) and :class:`CMPTDataModule` (``batch_size``, ``train_missing``, ...).
    """

    task = Task.BINARY
    family = "hateful_memes"
    dataset_class = HatefulMemesDataset
    raw_splits = tuple(split.value for split in MemeSplit)
    official_sizes = OFFICIAL_SIZES

    def __init__(
        self,
        root: str,
        val_split: MemeSplit | str = "dev_seen",
        test_split: MemeSplit | str = "test_seen",
        predict_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.val_split = MemeSplit.parse(val_split, "val_split")
        self.test_split = MemeSplit.parse(test_split, "test_split")
        self.predict_file = predict_file
        for name, value in (("val_split", self.val_split), ("test_split", self.test_split)):
            if value is MemeSplit.TRAIN:
                msg = f"{name} cannot be the training split; got {value.value!r}"
                raise DataValueError(msg)
        if self.val_split is self.test_split:
            log.warning(
                "val_split and test_split are both %s: checkpoints are selected on the test split",
                self.val_split.value,
            )

    @property
    def classes(self) -> list[str]:
        """Two classes: ``["not hateful", "hateful"]`` (label 1: hateful)."""
        return list(CLASSES)

    def default_predict_source(self) -> str:
        """The test split, by name."""
        return f"the test split ({self.test_split.value})"

    def predict_input(self, file: str) -> PredictInput:
        """How to read ``file``: the dataset's format if it has ``img`` and no ``image`` column."""
        names, _ = read_table(resolve_path(self.root, file))
        if "img" in names and "image" not in names:
            base = find_hateful_memes(self.root)
            return PredictInput(file, Columns(image="img"), image_root=base)
        return PredictInput(file)

    def read_split(self, split: str) -> HatefulMemesDataset | PredictTable:
        """The dataset of ``split`` (``predict``: ``predict_file``, else the test split)."""
        if split == "predict" and self.predict_file is not None:
            return read_predict(self, self.predict_input(self.predict_file))
        source = {"train": MemeSplit.TRAIN, "val": self.val_split}.get(split, self.test_split)
        return HatefulMemesDataset(
            self.root,
            source,
            self.image_transform(train=split == "train"),
            self.tokenizer(),
            self.image_size(),
            labelled=split != "predict",
        )

    def inspect(self) -> CheckReport:
        """Every split file present (unlabelled or missing: a warning), and ``predict_file``."""
        report = CheckReport()
        base = find_hateful_memes(self.root)
        for split in self.raw_splits:
            try:
                path = split_file(base, split)
            except DatasetNotFoundError:
                report.warnings.append(f"{split}: no file ({split}.jsonl)")
                continue
            note = ""
            try:
                records = read_hateful_memes(self.root, split)
            except UnlabelledSplitError:
                records = read_hateful_memes(self.root, split, labelled=False)
                note = UNLABELLED_NOTE
            official = self.official_sizes[split]
            report.add(split, path.name, records, self.find_bad(records), official, note)
        if self.predict_file is not None:
            check_predict(self, report, self.predict_input(self.predict_file))
        return report
