"""The procedural world's four tasks as data modules: the testbed where CMPT can be judged.

The world (:mod:`cmpt_lightning.datasets.world`) generates scenes, images and captions on the
fly from ``(seed, split, index)``: no files, no download. Its tasks
(:mod:`cmpt_lightning.datasets.world_tasks`) are shaped like the paper's datasets, and their
images and captions share content the way CLIP's modalities do, so towers pretrained on the
world's pairs (the package's ``cmpt-tiny`` / ``world`` weights) have aligned spaces.

Generated samples go to the process's bounded memo
(:func:`~cmpt_lightning.datasets.sample_memo.sample_memo`) under the world's settings, the
task, split and index and this module's preprocessing settings, so that the runs of a study
in one process (the ``debug`` executor) make each sample once.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import Any

from ..datasets.errors import DataValueError, require_at_least_one
from ..datasets.sample_memo import DEFAULT_MEMO_BYTES, sample_memo
from ..datasets.world import GREYSCALE, VISUAL, World
from ..datasets.world_tasks import (
    WorldClaimsDataset,
    WorldDataset,
    WorldObjectsDataset,
    WorldScenesDataset,
    WorldTagsDataset,
    WorldTask,
)
from .base import CMPTDataModule

__all__ = ["WorldDataModule"]

_DATASETS: dict[WorldTask, type[WorldDataset]] = {
    WorldTask.OBJECTS: WorldObjectsDataset,
    WorldTask.TAGS: WorldTagsDataset,
    WorldTask.CLAIMS: WorldClaimsDataset,
    WorldTask.SCENES: WorldScenesDataset,
}


class WorldDataModule(CMPTDataModule):
    """One task of the procedural image-caption world, with the usual missing-modality settings.

    ``objects`` is Food-101-like (24 classes, accuracy), ``tags`` MM-IMDb-like (18 tags,
    multi-label, F1 macro), ``claims`` Hateful-Memes-like (binary, AUROC; the label needs both
    modalities: each alone is at chance exactly), ``scenes`` the one where both directions
    can be judged (32 classes, shape x background x material, accuracy: the image alone
    reaches 0.25, the text alone 0.33, both 0.625). The Bayes ceiling of every task per
    available modality is exact (:meth:`ceilings`).

    Args:
        task: ``objects``, ``tags``, ``claims`` or ``scenes``.
        train_size: training samples.
        val_size: validation samples.
        test_size: test samples (``predict`` uses the test split).
        seed: the world's seed (every split draws its own samples from it).
        raw_size: side of the rendered images in pixels, before the model's preprocessing.
        greyscale: probability that a photo is greyscale (its colour invisible).
        claim_attributes: the attributes a false claim changes (``claims`` only).
        num_workers: DataLoader worker processes per loader; 0 by default (a sample is
            cheaper to render than a worker is to start); null: one per usable CPU core less
            one, at most 8.
        memo_mb: the byte budget, in MiB, of the process's memo of generated samples (shared
            by every world data module of the process: the latest one built sets it; a
            ``cmpt-tiny`` sample takes about 14 KB); 0 makes every sample again on every
            access. Augmented training samples are never memoized.
        **kwargs: the shared settings of :class:`CMPTDataModule` (``batch_size``,
            ``train_missing``, ``eval_missing``, ...).
    """

    def __init__(
        self,
        task: WorldTask | str = WorldTask.OBJECTS,
        train_size: int = 2048,
        val_size: int = 512,
        test_size: int = 1024,
        seed: int = 0,
        raw_size: int = 64,
        greyscale: float = GREYSCALE,
        claim_attributes: Sequence[str] = ("colour", "shape"),
        num_workers: int | None = 0,
        memo_mb: float = DEFAULT_MEMO_BYTES / 2**20,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_workers=num_workers, **kwargs)
        if isinstance(memo_mb, bool) or not isinstance(memo_mb, int | float) or not memo_mb >= 0:
            msg = f"memo_mb must be a number of MiB >= 0 (0 turns the memo off), got {memo_mb!r}"
            raise DataValueError(msg)
        self.memo_mb = memo_mb
        self.world_task = WorldTask.parse(task, "task")
        require_at_least_one(train_size=train_size, val_size=val_size, test_size=test_size)
        try:
            self.world = World(seed, raw_size=raw_size, greyscale=greyscale)
        except ValueError as err:
            raise DataValueError(str(err)) from None
        self.sizes = {"train": train_size, "val": val_size, "test": test_size, "predict": test_size}
        bad = [name for name in claim_attributes if name not in VISUAL]
        if bad or not claim_attributes:
            msg = f"claim_attributes must be a non-empty subset of {list(VISUAL)}, got {bad!r}"
            raise DataValueError(msg)
        self.claim_attributes = tuple(claim_attributes)
        self.task = _DATASETS[self.world_task].kind

    @functools.cached_property
    def _probe(self) -> WorldDataset:
        """A one-sample test split: the task's classes and ceilings (built on first use)."""
        return self._dataset("test", 1)

    @functools.cached_property
    def _shared_tokenizer(self) -> Any:
        """:meth:`tokenizer`, built once for all splits (open_clip's reads its vocabulary)."""
        return self.tokenizer()

    def memo_key(self) -> Hashable | None:
        """What names this module's preprocessing in the memo's keys, or None for a private key.

        The open_clip transform and tokenizer are pure functions of ``clip_model``,
        ``pretrained`` and :attr:`normalize_on_device`, so data modules that agree on them share
        samples. A subclass that overrides :meth:`image_transform` or :meth:`tokenizer` gets
        None (its datasets memoize only their own samples) unless it overrides this too.
        """
        base = CMPTDataModule
        own = type(self).image_transform, type(self).tokenizer
        if own != (base.image_transform, base.tokenizer):
            return None
        return ("open_clip", self.clip_model, self.pretrained, self.normalize_on_device)

    def _dataset(self, split: str, size: int) -> WorldDataset:
        cls = _DATASETS[self.world_task]
        extra: dict[str, Any] = {}
        if cls is WorldClaimsDataset:
            extra["claim_attributes"] = self.claim_attributes
        sample_memo().resize(int(self.memo_mb * 2**20))
        return cls(
            size,
            split,
            self.image_transform(train=split == "train"),
            self._shared_tokenizer,
            self.image_size(),
            world=self.world,
            memoize=self.memo_mb > 0 and not (split == "train" and self.augment),  # deterministic
            memo_key=self.memo_key(),
            **extra,
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (of tags for ``tags``; 2 for ``claims``)."""
        return self._probe.num_classes

    @property
    def class_names(self) -> list[str]:
        """The class names, in label order."""
        return list(self._probe.classes)

    def ceilings(self) -> dict[str, float]:
        """The task's exact Bayes ceilings per available input (see ``world_tasks.ceilings``)."""
        return self._probe.ceilings()

    def build_split(self, split: str) -> WorldDataset:
        """Generate the dataset of ``split`` (``predict`` is the test split)."""
        source = "test" if split == "predict" else split
        return self._dataset(source, self.sizes[split])
