"""Hateful Memes (binary, AUROC and accuracy): train, a dev split, and an explicit test split."""

from __future__ import annotations

import logging
from typing import Any

from ..datasets.checks import CheckReport
from ..datasets.errors import DatasetNotFoundError
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
from ..tasks import Task
from .files import FileDataModule

__all__ = ["HatefulMemesDataModule"]

log = logging.getLogger(__name__)

#: The note of a split without labels in ``cmpt data check``.
UNLABELLED_NOTE = "no labels (the challenge's hidden test set): usable for predict only"


class HatefulMemesDataModule(FileDataModule):
    """Hateful Memes: train, a validation split and an explicit test split.

    ``train.jsonl`` is for training, ``val_split`` for validation (checkpoint selection) and
    ``test_split`` for test; ``predict`` reads the test split without needing labels.

    Args:
        root: the dataset folder, holding ``img/`` and the ``.jsonl`` files (or ``data/`` with
            them, the first-phase layout).
        val_split: the validation split: ``dev_seen`` (``dev.jsonl`` in the first-phase
            layout) or ``dev_unseen``.
        test_split: the test split: ``test_seen``, ``test_unseen`` (both labelled in the
            final release only) or ``dev_seen``.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.val_split = MemeSplit.parse(val_split, "val_split")
        self.test_split = MemeSplit.parse(test_split, "test_split")
        for name, value in (("val_split", self.val_split), ("test_split", self.test_split)):
            if value is MemeSplit.TRAIN:
                msg = f"{name} cannot be the training split; got {value.value!r}"
                raise ValueError(msg)
        if self.val_split is self.test_split:
            log.warning(
                "val_split and test_split are both %s: checkpoints are selected on the test split",
                self.val_split.value,
            )

    @property
    def classes(self) -> list[str]:
        """Two classes: ``["not hateful", "hateful"]`` (label 1: hateful)."""
        return list(CLASSES)

    def read_split(self, split: str) -> HatefulMemesDataset:
        """The dataset of ``split`` (``predict``: the test split, its labels not needed)."""
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
        """Every split file present; a split without labels and a missing file are warnings."""
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
        return report
