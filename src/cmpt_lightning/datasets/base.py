"""The sample contract every dataset of the package follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["MultimodalDataset", "Sample"]

#: One sample: ``image`` [3, H, W] float, ``text`` [L] int64 token ids, ``label`` (int64 scalar
#: for multiclass/binary, float [C] for multilabel), ``image_present`` / ``text_present`` (bool
#: scalars: the data has this modality), ``id`` (str, stable across runs and machines) and
#: ``index`` (int64 scalar, position in this dataset). An absent modality is all zeros.
Sample = dict[str, Any]


class MultimodalDataset(Dataset[Sample], ABC):
    """An image-text classification dataset that returns :data:`Sample` dicts.

    Subclasses own the files and parsing: they set :attr:`ids` and implement
    :meth:`load_image`, :meth:`load_text` and :meth:`target`. The transform and the tokenizer
    are the data module's, passed in.

    Args:
        image_transform: PIL image -> float tensor [3, H, W] (the open_clip preprocessing).
        tokenizer: list of strings -> int tensor [B, L] (the open_clip tokenizer).
        image_size: (H, W) of the transform's output, for the zeros of an absent image.
    """

    ids: Sequence[str]

    def __init__(
        self,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
    ) -> None:
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.image_size = image_size

    @abstractmethod
    def load_image(self, index: int) -> Image.Image | None:
        """The RGB image of sample ``index``, or None if the sample has none."""

    @abstractmethod
    def load_text(self, index: int) -> str | None:
        """The text of sample ``index``, or None if the sample has none."""

    @abstractmethod
    def target(self, index: int) -> torch.Tensor:
        """The label of sample ``index`` (int64 scalar, or float [C] for multilabel)."""

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        image = self.load_image(index)
        text = self.load_text(index)
        if image is not None:
            pixels = self.image_transform(image.convert("RGB"))
        else:
            pixels = torch.zeros(3, *self.image_size)
        if text is not None:
            tokens = self.tokenizer([text])[0].long()
        else:
            tokens = torch.zeros_like(self.tokenizer([""])[0]).long()
        return {
            "image": pixels,
            "text": tokens,
            "label": self.target(index),
            "image_present": torch.tensor(image is not None),
            "text_present": torch.tensor(text is not None),
            "id": str(self.ids[index]),
            "index": torch.tensor(index, dtype=torch.long),
        }
