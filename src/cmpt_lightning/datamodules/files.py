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

import dataclasses
import inspect
import os
from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch.utils.data import DataLoader

from ..datasets.base import MultimodalDataset, Sample
from ..datasets.cache import CacheManifest, join_location, require_litdata
from ..datasets.cache_samples import CachedDataset, SampleDecoder
from ..datasets.checks import BadSample, CheckReport, ImageCheck, OnBadSample, find_bad_samples
from ..datasets.checks import screen as screen_dataset
from ..datasets.errors import DataValueError
from ..datasets.records import Record, RecordDataset, stratified_split
from .base import CMPTDataModule
from .cache import CacheOrder, expected_manifest, open_manifest

__all__ = ["CACHE_NEUTRAL", "FileDataModule", "check_val_fraction", "family_options", "plain"]

#: Settings of a file family that do not change the samples of its splits: not compared when a
#: cache is read (the raw root may be elsewhere on another machine; a cache is screened once).
CACHE_NEUTRAL = frozenset(
    {"root", "image_check", "check_threads", "predict_file", "cache", "cache_order"}
)
#: The settings every data module shares (batches, masks, model): not the family's own.
SHARED = frozenset(inspect.signature(CMPTDataModule.__init__).parameters) - {"self"}


def family_options(cls: type[CMPTDataModule]) -> list[str]:
    """The constructor arguments of a data module class beyond the shared ones, in order."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is not None and issubclass(klass, CMPTDataModule) and klass is not CMPTDataModule:
            params = inspect.signature(init).parameters.values()
            names.update((p.name, None) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    return [name for name in names if name not in SHARED and name != "self"]


def plain(value: Any) -> Any:
    """``value`` as JSON has it: enums by value, paths and other objects as strings."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


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
        cache: read the splits from this cache, written by ``cmpt data cache`` (a folder, or
            an object-store URL litdata reads, e.g. ``s3://bucket/food101-vit-b-16``) instead
            of the files under ``root``, which is then not read. The cache must have been
            built with this module's split settings and for the model's image size and
            tokenizer; otherwise setup stops, naming the cache's value and this run's.
            Chunks fetched from an object store are kept in litdata's local folder
            (``LITDATA_CACHE_DIR``). ``predict_file`` is still read from ``root``.
        cache_order: the order of the training samples read from the cache: ``stream``
            (litdata's chunk-wise shuffle and DDP sharding; resumes from the loader's state)
            or ``exact`` (the same batches as from the files; for a cache on a local or
            shared file system). See :class:`~cmpt_lightning.datamodules.cache.CacheOrder`.
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
    #: Images travel through the loaders as uint8 and are normalised on the device.
    normalize_on_device = True

    def __init__(
        self,
        root: str,
        image_check: ImageCheck | str = "verify",
        check_threads: int | None = None,
        on_bad_sample: OnBadSample | str = "error",
        allow_outside_root: bool = False,
        cache: str | None = None,
        cache_order: CacheOrder | str = "stream",
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
        self.cache = None if cache is None else str(cache)
        self.cache_order = CacheOrder.parse(cache_order, "cache_order")
        self._manifest: CacheManifest | None = None
        self._stream_loader: Any = None  # the cache's ``stream`` training loader, once made
        self._stream_state: dict[str, Any] | None = None  # its position from a checkpoint

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
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (the cache's, when reading one)."""
        manifest = self.cache_manifest()
        return list(self.classes if manifest is None else manifest.classes)

    def build_split(self, split: str) -> MultimodalDataset:
        """The dataset of ``split``: from the cache if given, else read and checked.

        The files are screened (see ``on_bad_sample``); a cache was screened when it was built.
        """
        if self.cache is not None and not (split == "predict" and self.predict_file):
            return self.cached_split(split)
        return self.screen(self.read_split(split), split)

    # --- a cache instead of the files -----------------------------------------------------------
    def data_settings(self) -> dict[str, Any]:
        """The settings that decide the samples of the splits, as a cache's manifest has them.

        The family's constructor arguments but :data:`CACHE_NEUTRAL`, read from the attributes
        of the same names (a family that keeps them otherwise overrides this).
        """
        names = [n for n in family_options(type(self)) if n not in CACHE_NEUTRAL]
        return {name: plain(getattr(self, name)) for name in names}

    def expected_manifest(self) -> CacheManifest:
        """The manifest of a cache of this module's splits for its model (no split counts)."""
        return expected_manifest(
            self.family,
            self.data_settings(),
            self.task.value,
            self.clip_model,
            self.image_transform(train=False),
            self.tokenizer(),
        )

    def cache_manifest(self) -> CacheManifest | None:
        """The manifest of :attr:`cache`, read and checked once; None without a cache.

        Raises:
            CacheNotFoundError: if there is no cache there.
            CacheMismatchError: if it was built with other settings, or is incomplete.
        """
        if self.cache is None:
            return None
        if self._manifest is None:
            self._manifest = open_manifest(self.cache, self.expected_manifest())
        return self._manifest

    def cache_decoder(self, train: bool) -> SampleDecoder:
        """How this module turns the cache's items into Samples (training or evaluation)."""
        manifest = self.cache_manifest()
        if manifest is None:
            msg = "cache_decoder needs a cache; this data module reads the files"
            raise DataValueError(msg)
        transform = self.image_transform(train=train)
        return SampleDecoder(
            manifest.image["storage"], self.image_size(), transform, manifest.image["steps"]
        )

    def cached_split(self, split: str) -> CachedDataset:
        """The split ``split`` of :attr:`cache` (``predict``: its test split)."""
        decoder = self.cache_decoder(train=split == "train")
        return CachedDataset.open(str(self.cache), "test" if split == "predict" else split, decoder)

    def train_dataloader(self) -> DataLoader[Sample]:
        """Shuffled training batches (from a cache: in the order of ``cache_order``)."""
        if self.cache is None or self.cache_order is CacheOrder.EXACT:
            return super().train_dataloader()
        if "train" not in self.datasets:
            self.setup("fit")  # checks the cache and its training split
        require_litdata()
        from .streaming import streaming_train_loader

        loader = streaming_train_loader(
            join_location(self.cache, "train"),
            self.cache_decoder(train=True),
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            epoch=self._current_epoch,
            consumed=self._resume_offset,
            options=self.loader_options(),
        )
        if self._stream_state is not None:  # restored from a checkpoint before the loader
            loader.load_state_dict(self._stream_state)
            self._stream_state = None
        self._stream_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The ``stream`` training loader's position, saved in checkpoints (else nothing).

        Lightning restores a data module's state before the model asks for the training
        loader (``estimated_stepping_batches``), so the loader resumes from it whenever it
        is made; Lightning's own record of loader states is restored too late for that one.
        """
        loader = self._stream_loader
        return {} if loader is None else {"cache_stream": loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the ``stream`` loader's position for the training loader (see state_dict)."""
        self._stream_state = state_dict.get("cache_stream")

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
