"""What every data module of the package shares.

The model's preprocessing, the loaders, and the missing modalities of the protocol
(:mod:`cmpt_lightning.missing`, simulated or read from a masks file: the
:class:`~cmpt_lightning.datamodules.masking.ProtocolMasks` it mixes in).
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader

from ..datasets.base import MultimodalDataset, Sample
from ..datasets.errors import DataValueError
from ..datasets.images import PixelsToTensor, defer_normalization, image_normalization
from ..datasets.images import normalize_pixels as _normalize_pixels
from ..mask_files import MasksFile
from ..missing import MissingConfig, MissingPlan
from ..models.clip import build_image_transform, build_tokenizer
from ..tasks import Task
from .loaders import EpochShuffleSampler, ResumableDataLoader
from .masking import ProtocolMasks

__all__ = ["CMPTDataModule", "default_num_workers", "usable_cpus"]

log = logging.getLogger(__name__)
_log_once = rank_zero_only(log.log)  # setup runs on every process: say it on rank zero only

_SPLITS = ("train", "val", "test", "predict")

#: The most DataLoader workers ``num_workers: null`` picks (more rarely feed one GPU faster).
MAX_DEFAULT_WORKERS = 8


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity where known, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def default_num_workers(processes: int = 1) -> int:
    """The workers of ``num_workers: null``: one per usable core less one, at most 8.

    The usable cores (:func:`usable_cpus`) are shared among the ``processes`` of this machine
    (one per GPU under DDP), and one core per process stays with the process itself, so one
    core gives 0 (loading in the main process), 2 cores give 1, 16 cores give 8.
    """
    share = usable_cpus() // max(1, processes)
    return max(0, min(MAX_DEFAULT_WORKERS, share - 1))


class CMPTDataModule(ProtocolMasks, LightningDataModule):
    """Base data module: splits, loaders, the open_clip preprocessing, and simulated missingness.

    Each batch is a dict of stacked :data:`~cmpt_lightning.datasets.base.Sample` fields. Before
    it reaches the model, :meth:`apply_missing` adds the protocol's simulated missingness:
    ``image_present`` / ``text_present`` become (the data has it) AND (the protocol keeps it);
    the data's own availability stays in ``image_available`` / ``text_available``. Masks are a
    pure function of (seed, sample id), so they are the same for every worker count, world size
    and machine.

    Args:
        clip_model: the open_clip model whose tokenizer and image preprocessing to use (linked
            from ``model.init_args.clip`` by the CLI).
        pretrained: the model's pretrained tag, for its normalisation constants (linked from
            ``model.init_args.pretrained``).
        batch_size: samples per batch (per process under DDP).
        num_workers: DataLoader worker processes per loader; null: one per usable CPU core
            less one (shared among the processes of a DDP run), at most 8 (see
            :func:`default_num_workers`). A value above the usable cores is kept (and logged).
        train_missing: simulated missing modalities while training.
        eval_missing: simulated missing modalities for validation and test.
        augment: open_clip's training augmentation (random resized crop) on training images.
        pin_memory: pin host memory (None: when CUDA is available).
    """

    task: Task = Task.MULTICLASS
    #: The file of new samples to predict (families that read one set it); None: the test split.
    predict_file: str | None = None
    #: Splits built and screened by ``setup("fit")`` besides train and val, so that a bad
    #: sample in them stops the run before the first training step (``("test",)`` when the
    #: test split is used after fit: ``cmpt fit --test_after_fit true`` sets it).
    extra_fit_splits: tuple[str, ...] = ()
    #: Pass images through the loaders as uint8 pixels and normalise them on the batch's
    #: device (:meth:`on_after_batch_transfer`): a quarter of the bytes between the workers,
    #: the pinned copy and the GPU, and no float arithmetic in the workers. The families that
    #: read image files or a cache set it; the generated data (synthetic, world) keeps float.
    normalize_on_device: bool = False

    def __init__(
        self,
        clip_model: str = "cmpt-tiny",
        pretrained: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        train_missing: MissingConfig | None = None,
        eval_missing: MissingConfig | None = None,
        augment: bool = False,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            message = f"{name} must be >= {least}, got {value!r}"
            if value is not None and value < least:
                raise DataValueError(message)
        if num_workers is not None and num_workers > usable_cpus():
            _log_once(
                logging.INFO,
                "num_workers=%d is more than the %d usable CPU cores; kept as set "
                "(num_workers: null picks one per usable core, at most %d)",
                num_workers,
                usable_cpus(),
                MAX_DEFAULT_WORKERS,
            )
        self.clip_model = clip_model
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_missing = train_missing or MissingConfig()
        self.eval_missing = eval_missing or MissingConfig()
        self.augment = augment
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.datasets: dict[str, MultimodalDataset] = {}
        self._plans: dict[tuple[Any, ...], MissingPlan] = {}  # (split, seed, epoch, mechanism)
        self._mask_files: dict[str, MasksFile] = {}  # masks files read, by path
        self._file_masks: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        #: The realised availability counts of each split, logged once at setup.
        self.counts: dict[str, dict[str, int]] = {}
        #: Ids of prediction rows with neither an image nor a text: not predicted, listed
        #: (``predictions.csv`` writes them with a note).
        self.without_inputs: list[str] = []
        self._copy_streams: dict[torch.device, torch.cuda.Stream] = {}
        self._pixel_norm: PixelsToTensor | None = None

    # --- what a family provides -------------------------------------------------------------
    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes (linked to ``model.init_args.num_classes`` by the CLI)."""

    @property
    def class_names(self) -> list[str]:
        """Human-readable class names, in label order."""
        return [str(i) for i in range(self.num_classes)]

    @abstractmethod
    def build_split(self, split: str) -> MultimodalDataset:
        """Build the dataset of ``split`` (train, val, test or predict)."""

    def default_predict_source(self) -> str:
        """What ``predict`` reads without a :attr:`predict_file`, for the warning at setup."""
        return "the test split"

    # --- preprocessing ------------------------------------------------------------------------
    def image_transform(self, train: bool = False) -> Any:
        """The open_clip preprocessing of :attr:`clip_model` (augmented if train and augment).

        With :attr:`normalize_on_device` it ends in
        :class:`~cmpt_lightning.datasets.images.PixelsToTensor` (uint8 [3, H, W]) instead of
        ``ToTensor`` and ``Normalize``: :meth:`normalize_images` does their arithmetic on the
        batch.
        """
        transform = build_image_transform(
            self.clip_model, self.pretrained, train=train and self.augment
        )
        return defer_normalization(transform) if self.normalize_on_device else transform

    def normalize_images(self, batch: Sample) -> Sample:
        """``batch["image"]`` normalised where it lies, if it holds uint8 pixels.

        The arithmetic of open_clip's ``ToTensor`` and ``Normalize``
        (:func:`~cmpt_lightning.datasets.images.normalize_pixels`), so the values equal those
        the whole transform makes in a worker; images the data does not have stay zeros.
        Float images (the generated data's) are left as they are. Lightning calls it through
        :meth:`on_after_batch_transfer`; call it yourself on batches of these loaders that
        go to a model without a Trainer.
        """
        images = batch.get("image") if isinstance(batch, dict) else None
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            return batch
        if self._pixel_norm is None:
            self._pixel_norm = image_normalization(defer_normalization(self.image_transform()))
        norm = self._pixel_norm
        if norm is None:  # a transform without ToTensor + Normalize: only scale to [0, 1]
            norm = PixelsToTensor((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        present = batch.get("image_available", batch.get("image_present"))
        batch["image"] = _normalize_pixels(images, norm.mean, norm.std, present)
        return batch

    def tokenizer(self) -> Any:
        """The open_clip tokenizer of :attr:`clip_model`."""
        return build_tokenizer(self.clip_model)

    def image_size(self) -> tuple[int, int]:
        """(H, W) of the preprocessed images."""
        size = self.image_transform().transforms[0].size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    # --- setup and masks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the splits the stage needs and log the realised availability counts once.

        ``fit`` also builds :attr:`extra_fit_splits`. Predicting without a :attr:`predict_file`
        logs a warning naming the split predicted instead.
        """
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
            None: ("train", "val", "test"),
        }[stage]
        if stage == "fit":
            unknown = [s for s in self.extra_fit_splits if s not in _SPLITS]
            if unknown:
                msg = f"extra_fit_splits must name splits of {_SPLITS}, got {unknown}"
                raise DataValueError(msg)
            wanted = tuple(dict.fromkeys((*wanted, *self.extra_fit_splits)))
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self.build_split(split)
                self._log_counts(split)
                if split == "predict" and self.predict_file is None:
                    _log_once(
                        logging.WARNING,
                        "predict: no predict_file given, so %s (%d samples) is predicted, with "
                        "the data's own availability only (no simulated missingness)",
                        self.default_predict_source(),
                        len(self.datasets[split]),
                    )

    def _log_counts(self, split: str) -> None:
        counts = self.availability_counts(split)
        self.counts[split] = counts
        config = self.missing_config(split)
        if config is None:
            setting = "real missingness only"
        elif config.masks_file is not None:
            setting = f"masks_file={config.masks_file}"
        else:
            setting = f"rate={config.rate}, type={config.type}, seed={config.seed}"
        rank_zero_info(f"{split} split ({setting}): {counts}")

    def _current_split(self) -> str | None:
        trainer = self.trainer
        if trainer is None:
            return None
        if trainer.training:
            return "train"
        if trainer.sanity_checking or trainer.validating:
            return "val"
        if trainer.testing:
            return "test"
        if trainer.predicting:
            return "predict"
        return None

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply the simulated missingness of the running stage (see :meth:`apply_missing`)."""
        split = self._current_split()
        if split is None or not isinstance(batch, dict) or "index" not in batch:
            return batch
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self.apply_missing(batch, split, epoch)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Copy the batch to ``device``; to a GPU on a side stream, so the copy overlaps compute.

        The pinned batch (``pin_memory``) is copied without blocking on a stream of its own;
        the compute stream waits for that copy only, and each copied tensor is marked as used
        by the compute stream, so that its memory is not reused before the step is done.
        """
        if device.type != "cuda" or not torch.cuda.is_available():
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        device = torch.device(
            device.type, torch.cuda.current_device() if device.index is None else device.index
        )
        stream = self._copy_streams.get(device)
        if stream is None:
            stream = self._copy_streams[device] = torch.cuda.Stream(device)
        compute = torch.cuda.current_stream(device)
        with torch.cuda.stream(stream):
            moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        compute.wait_stream(stream)
        apply_to_collection(moved, torch.Tensor, lambda t: t.is_cuda and t.record_stream(compute))
        return moved

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_copy_streams"] = {}  # CUDA streams do not pickle (spawned processes, DDP)
        return state

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise uint8 images on the batch's device (see :meth:`normalize_images`)."""
        return self.normalize_images(batch)

    # --- loaders ------------------------------------------------------------------------------
    def _current_epoch(self) -> int:
        """The trainer's epoch (restored from a checkpoint before the loaders start), or 0."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _resume_offset(self) -> int:
        """Batches of the current training epoch the (restored) trainer has already processed.

        Read when an epoch's iteration starts. Lightning's own loop progress is the record:
        ``processed`` before its restart bookkeeping runs, ``completed`` after it (a checkpoint
        saved at the end of a batch counts that batch as processed, not yet completed).
        """
        trainer = self.trainer
        if trainer is None:
            return 0
        current = trainer.fit_loop.epoch_loop.batch_progress.current
        return max(current.completed, getattr(current, "processed", 0))

    #: Batches each DataLoader worker prepares ahead of the model (torch's default, made
    #: explicit): ``num_workers x prefetch_factor`` batches wait in shared memory, about
    #: 0.6 MB per 224 x 224 sample, so keep it small where ``/dev/shm`` is small (containers).
    prefetch_factor: int = 2

    def loader_workers(self) -> int:
        """The workers of each loader: ``num_workers``, or for null :func:`default_num_workers`.

        The processes sharing the machine are the trainer's devices (1 without a trainer).
        """
        if self.num_workers is not None:
            return self.num_workers
        trainer = self.trainer
        return default_num_workers(trainer.num_devices if trainer is not None else 1)

    def loader_options(self) -> dict[str, Any]:
        """The DataLoader options of every loader (see :meth:`_loader`)."""
        workers = self.loader_workers()
        return {
            "batch_size": self.batch_size,
            "num_workers": workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": workers > 0,
            "prefetch_factor": self.prefetch_factor if workers > 0 else None,
            "drop_last": False,
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Sample]:
        """A DataLoader over ``split`` that keeps the model fed.

        - The texts are tokenized once, here in the main process, before the workers start
          (:meth:`~cmpt_lightning.datasets.base.MultimodalDataset.pretokenize`): the workers
          inherit the cache instead of tokenizing every sample of every epoch.
        - With ``num_workers > 0``: persistent workers (no re-spawn and no rebuilt cache each
          epoch) and :attr:`prefetch_factor` batches per worker in flight.
        - Pinned host memory when CUDA is available (``pin_memory: null``), for faster and
          asynchronous copies to the GPU.

        ``num_workers: null`` (the default) fits the machine (:meth:`loader_workers`): real data
        costs a few milliseconds of JPEG decoding and resizing per sample and core
        (``benchmarks/input_pipeline.py``). The synthetic demo keeps 0: its samples are cheaper
        to make than a worker is to start.
        """
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, split))
        dataset = self.datasets[split]
        dataset.pretokenize()
        options = self.loader_options()
        if split != "train":
            return DataLoader(dataset, shuffle=shuffle, **options)
        # a pure function of (seed, epoch), resumable mid-epoch: see .loaders
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        epochs = EpochShuffleSampler(dataset, seed=seed, epoch_fn=self._current_epoch)
        return ResumableDataLoader(
            dataset,
            sampler=epochs if shuffle else None,
            resume_offset=self._resume_offset,
            **options,
        )

    def train_dataloader(self) -> DataLoader[Sample]:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Sample]:
        """Validation batches, in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Sample]:
        """Test batches, in order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[Sample]:
        """Prediction batches, in order."""
        return self._loader("predict", shuffle=False)
