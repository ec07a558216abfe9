"""What every data module over files on disk shares: the root, the checks, and the carve.

A file-backed family is a reader (``datasets/<family>.py``) and a small
:class:`FileDataModule` subclass (``datamodules/<family>.py``) that declares what is specific
to the family: its name (:attr:`~FileDataModule.family`, its key in
:data:`~cmpt_lightning.datamodules.registry.FAMILIES`), its dataset class, its raw splits and
their official sizes, its classes, how a split of the data module is read
(:meth:`~FileDataModule.read_split`), and what ``cmpt data check`` reports
(:meth:`~FileDataModule.inspect`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..datasets.checks import BadSample, CheckReport, ImageCheck, OnBadSample, find_bad_samples
from ..datasets.checks import screen as screen_dataset
from ..datasets.errors import DataValueError
from ..datasets.records import Record, RecordDataset, stratified_split
from .base import CMPTDataModule

__all__ = ["FileDataModule", "check_val_fraction"]

_D = TypeVar("_D", bound=RecordDataset)


def check_val_fraction(value: float) -> float:
    """``value`` if it is a share in [0, 1) for the validation carve, else a ValueError."""
    if not 0.0 <= value < 1.0:
        msg = f"val_fraction must be in [0, 1), got {value!r}"
        raise DataValueError(msg)
    return value


class FileDataModule(CMPTDataModule):
    """A data module over a dataset on disk: its root, the checks at setup, and the data check.

    Every split is screened when it is built (:meth:`build_split`): with ``on_bad_sample:
    error`` a bad sample fails the setup listing the offending files, with ``skip`` it is left
    out and kept in :attr:`bad_samples`; an image path that leads outside ``root`` is a bad
    sample unless ``allow_outside_root``. :meth:`inspect` reads every raw split of the family
    the same way, without a tokenizer or model weights, for ``cmpt data check``. The
    constructor reads no file.

    Args:
        root: the dataset's root folder (``~`` is expanded).
        image_check: how images are checked at setup: ``none``, ``exists``, ``verify`` (header
            and structure, the default: seconds for 100k images) or ``decode`` (pixels, about a
            minute per 100k images on 2 cores).
        check_threads: threads of the image check (null: Python's default, cpus + 4, at most 32).
        on_bad_sample: ``error`` (fail at setup, listing the offending files) or ``skip``
            (leave them out, count them and log the count).
        allow_outside_root: read images whose paths lead outside ``root``. By default an image
            path of the data (a table's image column, Hateful Memes' ``img``, Food-101's file
            names) must stay inside ``root``, both as written (``..`` and absolute paths
            elsewhere are refused) and after following symbolic links (a link inside the root
            that leads out of it is refused; a symlinked root itself is fine): such a sample is
            a bad sample naming its row and path, and its file is never opened. Set true for
            data that keeps its images elsewhere on purpose, and only for tables you trust.
        **kwargs: the shared settings of :class:`CMPTDataModule` (``batch_size``,
            ``num_workers``, ``train_missing``, ``eval_missing``, ...).
    """

    #: The family's name: its key in the registry and in ``cmpt data check <family>``.
    family: ClassVar[str]
    #: The family's dataset class (which modalities every sample must have).
    dataset_class: ClassVar[type[RecordDataset]]
    #: The family's raw splits (as its files name them), in reading order.
    raw_splits: ClassVar[tuple[str, ...]] = ()
    #: Samples per raw split of the official release (a different count is only a warning).
    official_sizes: ClassVar[Mapping[str, int]] = {}

    def __init__(
        self,
        root: str,
        image_check: ImageCheck | str = "verify",
        check_threads: int | None = None,
        on_bad_sample: OnBadSample | str = "error",
        allow_outside_root: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.image_check = ImageCheck.parse(image_check, "image_check")
        self.check_threads = check_threads
        self.on_bad_sample = OnBadSample.parse(on_bad_sample, "on_bad_sample")
        self.allow_outside_root = allow_outside_root
        #: The bad samples found in each split at setup (left out under ``on_bad_sample: skip``).
        self.bad_samples: dict[str, list[BadSample]] = {}

    # --- what a family provides -------------------------------------------------------------
    @property
    @abstractmethod
    def classes(self) -> list[str]:
        """Class names in label order."""

    @abstractmethod
    def read_split(self, split: str) -> RecordDataset:
        """The dataset of ``split`` (train, val, test or predict) as read, not yet screened."""

    @abstractmethod
    def inspect(self) -> CheckReport:
        """Read every raw split of the family and report what is in it and what is wrong.

        The findings of ``cmpt data check``: samples per split against the official sizes,
        the bad samples of each split (with the module's ``image_check``), and notes about the
        dataset as a whole. Needs no tokenizer and no model weights.

        Raises:
            DatasetNotFoundError: if the data is not under ``root``.
            ValueError: if a file cannot be used at all (e.g. a table without its columns).
        """

    # --- shared -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes (linked to ``model.init_args.num_classes`` by the CLI)."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return list(self.classes)

    def build_split(self, split: str) -> RecordDataset:
        """The dataset of ``split``, checked (see ``on_bad_sample``)."""
        return self.screen(self.read_split(split), split)

    def screen(self, dataset: _D, split: str) -> _D:
        """``dataset`` without its bad samples, or a ``BadSampleError`` listing them.

        The problems found are kept in :attr:`bad_samples` under ``split``.
        """
        dataset, self.bad_samples[split] = screen_dataset(
            dataset,
            split=split,
            on_bad_sample=self.on_bad_sample,
            image_check=self.image_check,
            threads=self.check_threads,
            root=self.root,
            allow_outside_root=self.allow_outside_root,
        )
        return dataset

    def find_bad(self, records: Sequence[Record]) -> list[BadSample]:
        """The problems of ``records`` under this module's ``image_check`` (for :meth:`inspect`)."""
        return find_bad_samples(
            records,
            requires_image=self.dataset_class.requires_image,
            requires_text=self.dataset_class.requires_text,
            image_check=self.image_check,
            threads=self.check_threads,
            root=self.root,
            allow_outside_root=self.allow_outside_root,
        )

    def carve(
        self,
        pool: _D,
        groups: Sequence[Hashable],
        split: str,
        *,
        fraction: float,
        seed: int,
        fix: str,
    ) -> _D:
        """The ``train`` part of ``pool`` or the held-out ``val`` part: a seeded, stratified carve.

        ``fraction`` of every group is held out for validation (see
        :func:`~cmpt_lightning.datasets.records.stratified_split`): a pure function of (seed,
        ids, groups).

        Args:
            pool: the samples to split.
            groups: the stratum of each sample of ``pool`` (its class).
            split: ``train`` (what is kept) or ``val`` (what is held out).
            fraction: the share of each group held out (``val_fraction``).
            seed: the carve's seed (``split_seed``).
            fix: how to get a validation split when ``fraction`` is 0, for the message.

        Raises:
            ValueError: for ``val`` when ``fraction`` is 0.
        """
        if split == "val" and fraction == 0.0:
            msg = f"val_fraction is 0, so there is no validation split; {fix}"
            raise DataValueError(msg)
        kept, held = stratified_split(pool.ids, groups, fraction, seed)
        return pool.select(kept if split == "train" else held)
