"""Images as uint8 through the loader, normalised on the device.

open_clip's preprocessing ends in ``ToTensor`` (divide by 255) and ``Normalize`` (subtract the
mean, divide by the std, per channel). Done in a DataLoader worker, that makes float32 tensors:
four times the bytes of the pixels to pass between processes, to pin and to copy to the GPU.
:func:`defer_normalization` replaces those two steps by :class:`PixelsToTensor`, which keeps the
pixels as uint8 [3, H, W] and carries the mean and std; :func:`normalize_pixels` then does the
same arithmetic on the batch, on its device, so the values are those of the whole transform
(bit-identical on the CPU; on a GPU too, since every division is by a tensor, never by a scalar
that CUDA would turn into a multiplication by its reciprocal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize

__all__ = [
    "PixelsToTensor",
    "defer_normalization",
    "image_dtype",
    "image_normalization",
    "normalize_pixels",
]


class PixelsToTensor:
    """A PIL image or H x W x 3 uint8 array -> uint8 tensor [3, H, W]; normalisation deferred.

    The step that stands for open_clip's ``ToTensor`` + ``Normalize`` when the batch is
    normalised on its device (:func:`normalize_pixels`). Its ``mean`` and ``std`` are those
    of the ``Normalize`` it replaces (a cache's manifest records them from here). Its name
    ends in ``ToTensor``: the geometry before it is what a ``uint8`` cache stores.

    Args:
        mean: per-channel mean of the pixels scaled to [0, 1].
        std: per-channel standard deviation of the pixels scaled to [0, 1].
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """The uint8 tensor [3, H, W] of ``image`` (an RGB image, or its pixels)."""
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))  # a copy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def defer_normalization(transform: Any) -> Any:
    """``transform`` with its final ``ToTensor`` and ``Normalize`` replaced by PixelsToTensor.

    Returns ``transform`` itself when it does not end in exactly those two steps (another
    transform keeps making the float tensors it makes).
    """
    steps = list(getattr(transform, "transforms", ()))
    if len(steps) < 2:
        return transform
    to_tensor, normalize = steps[-2:]
    if "ToTensor" not in type(to_tensor).__name__ or not isinstance(normalize, Normalize):
        return transform
    if isinstance(to_tensor, PixelsToTensor):
        return transform
    return Compose([*steps[:-2], PixelsToTensor(normalize.mean, normalize.std)])


def image_normalization(transform: Any) -> PixelsToTensor | None:
    """The :class:`PixelsToTensor` step ending ``transform``, or None if it makes floats."""
    steps = list(getattr(transform, "transforms", [transform]))
    last = steps[-1] if steps else None
    return last if isinstance(last, PixelsToTensor) else None


def image_dtype(transform: Any) -> torch.dtype:
    """The dtype of ``transform``'s output: uint8 if it defers normalisation, else float32.

    What the zeros of an absent image are made of, so that a batch stacks.
    """
    return torch.float32 if image_normalization(transform) is None else torch.uint8


def normalize_pixels(
    pixels: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """A uint8 batch [B, 3, H, W] -> the float32 batch ``ToTensor`` + ``Normalize`` would make.

    The arithmetic of those two steps, on the batch's device: float32, divided by 255, the
    mean subtracted, divided by the std (each a division by a tensor, so exactly rounded on
    every device). Images the data does not have (``present`` False) are zeros, as the
    datasets make them.

    Args:
        pixels: uint8 [B, 3, H, W].
        mean: per-channel mean (of the pixels scaled to [0, 1]).
        std: per-channel standard deviation.
        present: bool [B], which rows have an image (None: all).

    Returns:
        float32 [B, 3, H, W].
    """
    device = pixels.device
    scale = torch.full((1, 1, 1, 1), 255.0, device=device)
    shift = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    spread = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    images = pixels.to(torch.float32).div_(scale).sub_(shift).div_(spread)
    if present is not None:
        keep = present.to(device=device, dtype=torch.bool).view(-1, 1, 1, 1)
        images = images.masked_fill_(~keep, 0.0)
    return images
