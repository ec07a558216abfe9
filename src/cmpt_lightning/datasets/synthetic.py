"""A procedurally generated image-text classification set: the demo data, no download needed.

Each sample has a class ``y``. The image shows the colour and shape of an "image class" that is
``y`` with probability ``1 - image_noise`` and otherwise ``y``'s image sibling; the caption
names the colour word and object word of a "text class" that is ``y`` with probability
``1 - text_noise`` and otherwise ``y``'s text sibling (a different class). Each modality alone
is therefore right about ``y`` only part of the time, their errors differ, and both derive from
``y``: the two views are correlated, which is what a proxy token can learn to exploit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .base import MultimodalDataset
from .errors import DataValueError

__all__ = ["SyntheticDataset"]

_COLOURS = [
    ("crimson", (220, 20, 60)),
    ("orange", (255, 140, 0)),
    ("gold", (230, 200, 20)),
    ("green", (34, 160, 34)),
    ("teal", (0, 128, 128)),
    ("blue", (30, 60, 220)),
    ("violet", (140, 60, 200)),
    ("pink", (250, 120, 180)),
    ("brown", (120, 70, 20)),
    ("grey", (128, 128, 128)),
    ("black", (20, 20, 20)),
    ("white", (240, 240, 240)),
]
_OBJECTS = ["circle", "square", "stripe", "cross"]
_FILLER = [
    "a",
    "photo",
    "of",
    "the",
    "small",
    "large",
    "bright",
    "dark",
    "picture",
    "with",
    "on",
    "near",
    "view",
    "image",
    "old",
    "new",
    "one",
    "my",
    "this",
    "simple",
]

MAX_CLASSES = len(_COLOURS)


def _draw(
    colour: tuple[int, int, int], shape: str, rng: np.random.Generator, size: int
) -> np.ndarray:
    """An RGB uint8 image [size, size, 3]: noisy background, the class colour drawn as a shape."""
    img = rng.normal(110, 30, size=(size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.35, 0.65, size=2) * size
    radius = rng.uniform(0.2, 0.32) * size
    if shape == "circle":
        region = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif shape == "square":
        region = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
    elif shape == "stripe":
        region = np.abs(yy - cy) <= radius / 2.5
    else:
        region = (np.abs(yy - cy) <= radius / 3) | (np.abs(xx - cx) <= radius / 3)
    img[region] = np.asarray(colour) + rng.normal(0, 12, size=(int(region.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


class SyntheticDataset(MultimodalDataset):
    """Seeded synthetic samples generated on the fly (nothing is read from disk).

    Args:
        num_samples: number of samples.
        num_classes: number of classes, 2 to 12.
        seed: seed of this split; sample ``i`` is a pure function of (seed, i).
        image_transform: PIL image -> tensor, the model's preprocessing.
        tokenizer: the model's tokenizer.
        image_size: (H, W) of the transform's output.
        image_noise: probability that the image shows the image sibling's class.
        text_noise: probability that the caption names the text sibling's class.
        raw_size: side of the generated image before preprocessing.
        split: name used in the sample ids (``syn-<split>-000042``).
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        seed: int,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
        *,
        image_noise: float = 0.3,
        text_noise: float = 0.3,
        raw_size: int = 64,
        split: str = "train",
    ) -> None:
        super().__init__(image_transform, tokenizer, image_size)
        if not 2 <= num_classes <= MAX_CLASSES:
            msg = f"num_classes must be in [2, {MAX_CLASSES}] (synthetic data), got {num_classes!r}"
            raise DataValueError(msg)
        self.num_classes = num_classes
        self.seed = seed
        self.image_noise = image_noise
        self.text_noise = text_noise
        self.raw_size = raw_size
        rng = np.random.default_rng([seed, 0])
        self.labels = rng.integers(0, num_classes, size=num_samples)
        self.ids = [f"syn-{split}-{i:06d}" for i in range(num_samples)]

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index + 1, stream])

    def image_class(self, index: int) -> int:
        """The class the image of sample ``index`` depicts."""
        y = int(self.labels[index])
        if self._rng(index, 1).random() < self.image_noise:
            return y ^ 1 if (y ^ 1) < self.num_classes else y - 1
        return y

    def text_class(self, index: int) -> int:
        """The class the caption of sample ``index`` names."""
        y = int(self.labels[index])
        if self._rng(index, 2).random() < self.text_noise:
            return (y + max(2, self.num_classes // 2)) % self.num_classes
        return y

    def load_image(self, index: int) -> Image.Image:
        """Draw the image of sample ``index``."""
        c = self.image_class(index)
        pixels = _draw(
            _COLOURS[c][1], _OBJECTS[c % len(_OBJECTS)], self._rng(index, 3), self.raw_size
        )
        return Image.fromarray(pixels)

    def load_text(self, index: int) -> str:
        """Write the caption of sample ``index``."""
        c = self.text_class(index)
        rng = self._rng(index, 4)
        words = list(rng.choice(_FILLER, size=int(rng.integers(3, 7))))
        words.insert(
            int(rng.integers(0, len(words) + 1)), f"{_COLOURS[c][0]} {_OBJECTS[c % len(_OBJECTS)]}"
        )
        return " ".join(words)

    def target(self, index: int) -> torch.Tensor:
        """The class of sample ``index``."""
        return torch.tensor(int(self.labels[index]), dtype=torch.long)
