"""Hateful Memes (binary, AUROC and accuracy): train, a dev split, and an explicit test split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..datasets.checks import BadSample, ImageCheck, OnBadSample, parse_choice, screen
from ..datasets.hateful_memes import CLASSES, HatefulMemesDataset, MemeSplit
from ..tasks import Task
from .base import CMPTDataModule

__all__ = ["HatefulMemesDataModule"]

log = logging.getLogger(__name__)


class HatefulMemesDataModule(CMPTDataModule):
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
        image_check: how images are checked at setup: ``none``, ``exists``, ``verify`` (header
            and structure, the default: seconds for 100k images) or ``decode`` (pixels, about a
            minute per 100k images on 2 cores).
        check_threads: threads of the image check (null: Python's default, cpus + 4, at most 32).
        on_bad_sample: ``error`` (fail at setup, listing the offending files) or ``skip``
            (leave them out, count them and log the count).
        **kwargs: the shared settings of :class:`CMPTDataModule` (``batch_size``,
            ``num_workers``, ``train_missing``, ``eval_missing``, ...).
    """

    task = Task.BINARY

    def __init__(
        self,
        root: str,
        val_split: MemeSplit | str = "dev_seen",
        test_split: MemeSplit | str = "test_seen",
        image_check: ImageCheck | str = "verify",
        check_threads: int | None = None,
        on_bad_sample: OnBadSample | str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.val_split = parse_choice(MemeSplit, val_split, "val_split")
        self.test_split = parse_choice(MemeSplit, test_split, "test_split")
        for name, value in (("val_split", self.val_split), ("test_split", self.test_split)):
            if value is MemeSplit.TRAIN:
                msg = f"{name} cannot be the training split; got {value.value!r}"
                raise ValueError(msg)
        if self.val_split is self.test_split:
            log.warning(
                "val_split and test_split are both %s: checkpoints are selected on the test split",
                self.val_split.value,
            )
        self.image_check = parse_choice(ImageCheck, image_check, "image_check")
        self.check_threads = check_threads
        self.on_bad_sample = parse_choice(OnBadSample, on_bad_sample, "on_bad_sample")
        self.bad_samples: dict[str, list[BadSample]] = {}

    @property
    def num_classes(self) -> int:
        """Two classes: not hateful (0) and hateful (1)."""
        return len(CLASSES)

    @property
    def class_names(self) -> list[str]:
        """``["not hateful", "hateful"]``."""
        return list(CLASSES)

    def build_split(self, split: str) -> HatefulMemesDataset:
        """The dataset of ``split``, checked (see ``on_bad_sample``)."""
        source = {"train": MemeSplit.TRAIN, "val": self.val_split}.get(split, self.test_split)
        dataset = HatefulMemesDataset(
            self.root,
            source,
            self.image_transform(train=split == "train"),
            self.tokenizer(),
            self.image_size(),
            labelled=split != "predict",
        )
        dataset, self.bad_samples[split] = screen(
            dataset,
            split=split,
            on_bad_sample=self.on_bad_sample,
            image_check=self.image_check,
            threads=self.check_threads,
        )
        return dataset
