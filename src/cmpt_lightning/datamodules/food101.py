"""UPMC Food-101 (101 dishes, single label, accuracy): splits, and a seeded validation carve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..datasets.checks import BadSample, ImageCheck, OnBadSample, parse_choice, screen
from ..datasets.food101 import Food101Dataset, TextSource, food101_classes, read_split_file
from ..datasets.records import stratified_split
from ..tasks import Task
from .base import CMPTDataModule

__all__ = ["Food101DataModule"]


class Food101DataModule(CMPTDataModule):
    """UPMC Food-101: official train and test splits, and validation carved from train.

    The validation carve is seeded and stratified by class; a user ``split_file`` replaces
    all three splits. ``predict`` uses the test split.

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
        image_check: how images are checked at setup: ``none``, ``exists``, ``verify`` (header
            and structure, the default: seconds for 100k images) or ``decode`` (pixels, about a
            minute per 100k images on 2 cores).
        check_threads: threads of the image check (null: Python's default, cpus + 4, at most 32).
        on_bad_sample: ``error`` (fail at setup, listing the offending files) or ``skip``
            (leave them out, count them and log the count).
        **kwargs: the shared settings of :class:`CMPTDataModule` (``batch_size``,
            ``num_workers``, ``train_missing``, ``eval_missing``, ...).
    """

    task = Task.MULTICLASS

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        split_file: str | None = None,
        class_index: str | None = None,
        text_source: TextSource | str = "auto",
        image_check: ImageCheck | str = "verify",
        check_threads: int | None = None,
        on_bad_sample: OnBadSample | str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= val_fraction < 1.0:
            msg = f"val_fraction must be in [0, 1), got {val_fraction!r}"
            raise ValueError(msg)
        self.root = Path(root).expanduser()
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.split_file = split_file
        self.class_index = class_index
        self.text_source = parse_choice(TextSource, text_source, "text_source")
        self.image_check = parse_choice(ImageCheck, image_check, "image_check")
        self.check_threads = check_threads
        self.on_bad_sample = parse_choice(OnBadSample, on_bad_sample, "on_bad_sample")
        self.bad_samples: dict[str, list[BadSample]] = {}
        self._classes: list[str] | None = None
        self._pool: Food101Dataset | None = None

    @property
    def classes(self) -> list[str]:
        """Class names in label order (read from the data on first use)."""
        if self._classes is None:
            self._classes = food101_classes(self.root, self.class_index)
        return self._classes

    @property
    def num_classes(self) -> int:
        """Number of classes (101 for the full dataset)."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return list(self.classes)

    def _read(self, split: str) -> Food101Dataset:
        return Food101Dataset(
            self.root,
            split,
            self.image_transform(train=False),
            self.tokenizer(),
            self.image_size(),
            classes=self.classes,
            text_source=self.text_source,
        )

    def _from_split_file(self, split: str, split_file: str) -> Food101Dataset:
        table = read_split_file(split_file)
        if split not in table:
            msg = f"split_file {split_file!r} has no {split!r} list (it has {sorted(table)})"
            raise ValueError(msg)
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
            raise ValueError(msg)
        ambiguous = [key for key in table[split] if len(where[key]) > 1]
        if ambiguous:
            msg = (
                f"split_file {split_file!r}: {len(ambiguous)} {split} name(s) are in both "
                f"train and test (first: {ambiguous[:5]})"
            )
            raise ValueError(msg)
        return self._pool.select([where[key][0] for key in table[split]])

    def _carve(self, split: str) -> Food101Dataset:
        if split == "val" and self.val_fraction == 0.0:
            msg = (
                "val_fraction is 0, so there is no validation split; set val_fraction > 0 "
                "or give a split_file"
            )
            raise ValueError(msg)
        if self._pool is None:
            self._pool = self._read("train")
        labels = [-1 if r.label is None else r.label for r in self._pool.records]
        kept, held = stratified_split(self._pool.ids, labels, self.val_fraction, self.split_seed)
        return self._pool.select(kept if split == "train" else held)

    def build_split(self, split: str) -> Food101Dataset:
        """The dataset of ``split``, checked (see ``on_bad_sample``); ``predict`` is test."""
        source = "test" if split == "predict" else split
        if self.split_file is not None:
            dataset = self._from_split_file(source, self.split_file)
        elif source == "test":
            dataset = self._read("test")
        else:
            dataset = self._carve(source)
        dataset = dataset.select(range(len(dataset)), self.image_transform(train=split == "train"))
        dataset, self.bad_samples[split] = screen(
            dataset,
            split=split,
            on_bad_sample=self.on_bad_sample,
            image_check=self.image_check,
            threads=self.check_threads,
        )
        return dataset
