"""The demo data module: seeded synthetic image-text classification, no download needed."""

from __future__ import annotations

from typing import Any

from ..datasets.errors import DataValueError, require_at_least_one
from ..datasets.synthetic import MAX_CLASSES, SyntheticDataset
from .base import CMPTDataModule

__all__ = ["SyntheticDataModule"]


class SyntheticDataModule(CMPTDataModule):
    """Procedurally generated, learnable image-text classification (see ``SyntheticDataset``).

    Each modality alone identifies the class about 70% of the time (``image_noise`` and
    ``text_noise`` of 0.3), both together about 90%; chance is ``1 / num_classes``.

    Args:
        num_classes: number of classes, 2 to 12.
        train_size: training samples.
        val_size: validation samples.
        test_size: test samples (``predict`` uses the test split, without labels' use).
        seed: data seed; each split draws from (seed, split).
        image_noise: probability that an image shows a sibling class.
        text_noise: probability that a caption names another class.
        num_workers: DataLoader worker processes per loader; 0 here (the samples are cheaper
            to make than a worker is to start); null: one per usable CPU core less one, at
            most 8.
        **kwargs: the shared settings of :class:`CMPTDataModule` (``batch_size``,
            ``train_missing``, ``eval_missing``, ...).
    """

    def __init__(
        self,
        num_classes: int = 6,
        train_size: int = 1024,
        val_size: int = 256,
        test_size: int = 512,
        seed: int = 0,
        image_noise: float = 0.3,
        text_noise: float = 0.3,
        num_workers: int | None = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_workers=num_workers, **kwargs)
        if not 2 <= num_classes <= MAX_CLASSES:
            msg = f"num_classes must be in [2, {MAX_CLASSES}], got {num_classes!r}"
            raise DataValueError(msg)
        require_at_least_one(train_size=train_size, val_size=val_size, test_size=test_size)
        for name, noise in (("image_noise", image_noise), ("text_noise", text_noise)):
            if not 0.0 <= noise <= 1.0:
                msg = f"{name} must be in [0, 1], got {noise!r}"
                raise DataValueError(msg)
        self._num_classes = num_classes
        self.sizes = {"train": train_size, "val": val_size, "test": test_size, "predict": test_size}
        self.seed = seed
        self.image_noise = image_noise
        self.text_noise = text_noise

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self._num_classes

    def build_split(self, split: str) -> SyntheticDataset:
        """Generate the dataset of ``split`` (``predict`` is the test split)."""
        source = "test" if split == "predict" else split
        offset = {"train": 1, "val": 2, "test": 3}[source]
        return SyntheticDataset(
            self.sizes[split],
            self._num_classes,
            seed=self.seed * 10 + offset,
            image_transform=self.image_transform(train=split == "train"),
            tokenizer=self.tokenizer(),
            image_size=self.image_size(),
            image_noise=self.image_noise,
            text_noise=self.text_noise,
            split=source,
        )
