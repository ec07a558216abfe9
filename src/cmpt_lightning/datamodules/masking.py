"""The missing-modality protocol of a data module: its masks, simulated or read from a file.

:class:`ProtocolMasks` is the part of :class:`~cmpt_lightning.datamodules.base.CMPTDataModule`
that decides what the model sees of each sample: the protocol's ranking of a split
(:class:`~cmpt_lightning.missing.MissingPlan`) and its masks at the configured rate and type,
or the rows of a masks file (``missing.masks_file``, :mod:`cmpt_lightning.mask_files`), AND the
data's own availability.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only

from ..datasets.base import MultimodalDataset, Sample
from ..datasets.cache_samples import CachedDataset
from ..datasets.records import RecordDataset
from ..mask_files import MasksFile, MasksFileError, read_masks
from ..mask_import import align_masks
from ..missing import MissingConfig, MissingPlan, availability_counts, combine_availability
from .mechanism_inputs import mechanism_inputs

__all__ = ["ProtocolMasks"]

log = logging.getLogger(__name__)
_log_once = rank_zero_only(log.log)  # setup runs on every process: say it on rank zero only


class ProtocolMasks:
    """The masks of the protocol, per split (mixed into the data modules' base class).

    The data module provides the attributes below; the masks are a pure function of (seed,
    sample id), or of the masks file, so they are the same for every worker count, world size
    and machine.
    """

    datasets: dict[str, MultimodalDataset]
    train_missing: MissingConfig
    eval_missing: MissingConfig
    counts: dict[str, dict[str, int]]
    _plans: dict[tuple[Any, ...], MissingPlan]
    _mask_files: dict[str, MasksFile]
    _file_masks: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]

    @property
    def class_names(self) -> list[str]:
        """Human-readable class names, in label order (the data module's)."""
        raise NotImplementedError

    def missing_config(self, split: str) -> MissingConfig | None:
        """The simulated missingness of ``split`` (None for predict: only real missingness)."""
        if split == "predict":
            return None
        return self.train_missing if split == "train" else self.eval_missing

    def plan_groups(self, split: str) -> list[str] | None:
        """The group of each sample of ``split`` whose members share their masks, or None.

        None (the default): the protocol ranks the samples themselves. A family whose samples
        come in groups (MM-IMDb's plots of one movie) returns one key per sample; the
        protocol then ranks the groups and the rate counts groups (see
        :class:`~cmpt_lightning.missing.MissingPlan`).
        """
        return None

    def plan(self, split: str, seed: int, epoch: int | None = None) -> MissingPlan:
        """The protocol's ranking of ``split``, cached per seed and epoch (see plan_groups).

        The split's missing-modality settings choose the mechanism (``mcar``, ``label``,
        ``score``); ``seed`` replaces their seed (a test grid may set its own).
        """
        config = self.missing_config(split) or MissingConfig()
        key = (split, seed, epoch, config.mechanism_key)
        if key not in self._plans:
            ids = list(self.datasets[split].ids)
            groups = self.plan_groups(split)
            config = dataclasses.replace(config, seed=seed, resample_each_epoch=True)
            inputs = mechanism_inputs(self.datasets[split], config, self.class_names)
            self._plans[key] = config.plan(ids, epoch=epoch, groups=groups, **inputs)
        return self._plans[key]

    def masks(self, split: str, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Protocol masks (image kept, text kept) over the samples of ``split``, in order.

        Simulated from the split's :class:`~cmpt_lightning.missing.MissingConfig`, or read
        from its ``masks_file`` (:meth:`file_masks`).
        """
        config = self.missing_config(split)
        if config is None:
            ones = torch.ones(len(self.datasets[split]), dtype=torch.bool)
            return ones, ones.clone()
        if config.masks_file is not None:
            image, text = self.file_masks(split, config.masks_file)
            return image.clone(), text.clone()
        plan = self.plan(split, config.seed, epoch if config.resample_each_epoch else None)
        return plan.masks(config.rate, config.type, both_ratio=config.both_ratio)

    def file_masks(self, split: str, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks of ``split`` read from the masks file ``path``, in the split's order.

        Every sample of the split must have a row (else a
        :class:`~cmpt_lightning.mask_files.MasksFileError` saying how many do not); rows of
        ids the split does not have are counted and reported once. Read once per data module.
        """
        key = (split, path)
        if key not in self._file_masks:
            if path not in self._mask_files:
                self._mask_files[path] = read_masks(path)
            masks = self._mask_files[path]
            if split not in masks.splits:
                have = ", ".join(masks.splits) or "none"
                msg = (
                    f"masks file {path!r} has no {split!r} split (it has: {have}), but "
                    f"missing.masks_file of the {split} split names it; write the split into "
                    "it (cmpt data masks export / import), or set masks_file to null"
                )
                raise MasksFileError(msg)
            ids: Sequence[str] = list(self.datasets[split].ids)
            image, text, extra = align_masks(masks.splits[split], ids, file=path, split=split)
            if extra:
                _log_once(
                    logging.WARNING,
                    "masks file %s: %d of its %d %s rows are not samples of the split (ignored)",
                    path,
                    extra,
                    len(masks.splits[split].ids),
                    split,
                )
            self._file_masks[key] = (image, text)
        return self._file_masks[key]

    def availability(self, split: str, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """What the model sees of each sample of ``split``: (image present, text present).

        The data's own availability AND the protocol's masks, except that the protocol never
        takes the last modality of a sample that has only one (see
        :func:`~cmpt_lightning.missing.combine_availability`).
        """
        keep_img, keep_txt = self.masks(split, epoch)
        real_img, real_txt = self.real_availability(split)
        img, txt, _ = combine_availability(real_img, real_txt, keep_img, keep_txt)
        return img, txt

    def availability_counts(self, split: str, epoch: int = 0) -> dict[str, int]:
        """Samples of ``split`` per availability case, and how many the protocol spared."""
        keep_img, keep_txt = self.masks(split, epoch)
        real_img, real_txt = self.real_availability(split)
        img, txt, spared = combine_availability(real_img, real_txt, keep_img, keep_txt)
        counts = availability_counts(img, txt)
        counts["spared"] = int(spared.sum())
        return counts

    def real_availability(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Which samples of ``split`` have an image and a text in the data itself."""
        dataset = self.datasets[split]
        if isinstance(dataset, RecordDataset | CachedDataset):
            return dataset.availability()
        n = len(dataset)
        return torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)

    def apply_missing(self, batch: Sample, split: str, epoch: int = 0) -> Sample:
        """Add the protocol's simulated missingness of ``split`` to a collated batch.

        ``image_present`` / ``text_present`` become what the model may use; the data's own
        availability is kept in ``image_available`` / ``text_available``.
        """
        keep_img, keep_txt = self.masks(split, epoch)
        index = batch["index"].cpu()
        real_img, real_txt = batch["image_present"], batch["text_present"]
        device = real_img.device
        img, txt, _ = combine_availability(
            real_img, real_txt, keep_img[index].to(device), keep_txt[index].to(device)
        )
        batch["image_available"], batch["text_available"] = real_img, real_txt
        batch["image_present"], batch["text_present"] = img, txt
        return batch
