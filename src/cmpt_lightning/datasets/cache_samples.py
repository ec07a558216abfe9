"""Samples in a cache: how one is written into litdata chunks, and read back as a Sample.

A cached sample is a flat dict that litdata serialises field by field::

    id             str     the stable sample id
    index          int     its position in the split (what the missingness masks index)
    label          int, or float32 [C] for multilabel
    image_present  bool    the data has an image (real availability)
    text_present   bool    the data has a text
    image          bytes   H x W x 3 uint8 pixels, or a JPEG file; empty without an image
    text           int32 [L] the token ids; zeros without a text

:class:`SampleEncoder` makes one from a dataset of the files (what ``cmpt data cache`` maps
over the split), :class:`SampleDecoder` turns one back into the
:data:`~cmpt_lightning.datasets.base.Sample` the dataset of the files would have returned, and
:class:`CachedDataset` reads a cached split by position.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose
from torchvision.transforms import functional as F

from .base import MultimodalDataset, Sample
from .cache import (
    SAMPLES_NAME,
    CacheNotFoundError,
    ImageStorage,
    join_location,
    read_json,
    require_litdata,
    split_image_transform,
)
from .cache_files import read_item
from .errors import DataValueError
from .images import image_dtype
from .records import RecordDataset

__all__ = ["CachedDataset", "SampleDecoder", "SampleEncoder", "resize_short_side"]


def resize_short_side(image: Image.Image, short: int) -> Image.Image:
    """``image`` scaled (bicubic, antialiased) so that its short side is ``short``, never up."""
    if min(image.size) <= short:
        return image
    resized = F.resize(image, short, interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    return resized if isinstance(resized, Image.Image) else image


class SampleEncoder:
    """Sample ``index`` of a dataset of files -> the dict a cache stores (see the module).

    Picklable: litdata's workers each receive a copy.

    Args:
        dataset: the split, as the data module builds it (screened; texts pretokenized).
        transform: the evaluation transform of the model the cache is for.
        storage: ``uint8`` (the transform's geometry applied, pixels kept) or ``jpeg``.
        resize: the short side of a ``jpeg`` image (larger images are scaled down to it).
        jpeg_quality: the JPEG quality of ``jpeg`` images (1 to 95).
    """

    def __init__(
        self,
        dataset: RecordDataset,
        transform: Any,
        storage: ImageStorage | str = ImageStorage.UINT8,
        resize: int = 256,
        jpeg_quality: int = 90,
    ) -> None:
        self.dataset = dataset
        self.storage = ImageStorage.parse(storage, "image_storage")
        self.geometry = Compose(split_image_transform(transform)[0])
        self.resize = resize
        self.jpeg_quality = jpeg_quality

    def image_bytes(self, image: Image.Image) -> bytes:
        """The stored form of an RGB image (see :class:`ImageStorage`)."""
        if self.storage is ImageStorage.UINT8:
            pixels = np.asarray(self.geometry(image), dtype=np.uint8)  # [H, W, 3]
            return pixels.tobytes()
        buffer = io.BytesIO()
        resize_short_side(image, self.resize).save(buffer, "JPEG", quality=self.jpeg_quality)
        return buffer.getvalue()

    def __call__(self, index: int) -> dict[str, Any]:
        """The cached form of sample ``index``."""
        dataset = self.dataset
        image = dataset.load_image(index)
        text = dataset.load_text(index)
        label = dataset.target(index)
        return {
            "id": str(dataset.ids[index]),
            "index": int(index),
            "label": label.numpy().astype(np.float32) if label.ndim else int(label),
            "image_present": image is not None,
            "text_present": text is not None,
            "image": b"" if image is None else self.image_bytes(image.convert("RGB")),
            "text": dataset.token_ids(text).numpy().astype(np.int32),
        }


class SampleDecoder:
    """A cached sample -> the :data:`~cmpt_lightning.datasets.base.Sample` of the files.

    For a ``uint8`` cache read with a transform whose geometry is the cache's (evaluation),
    only the transform's to-tensor and normalisation steps run, on the stored pixels: the
    result is bit-identical to the transform applied to the image file. Any other transform
    (training augmentation) runs whole on the stored image, as does every transform on a
    ``jpeg`` cache. Picklable: DataLoader workers each receive a copy.

    Args:
        storage: how the cache stores images.
        image_size: (H, W) of the transform's output (of a ``uint8`` cache's pixels, too).
        transform: the data module's transform for the split.
        cached_steps: the geometry steps (their ``repr``) the cache applied, from its manifest.
    """

    def __init__(
        self,
        storage: ImageStorage | str,
        image_size: tuple[int, int],
        transform: Any,
        cached_steps: Sequence[str] = (),
    ) -> None:
        self.storage = ImageStorage.parse(storage, "image_storage")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.transform = transform
        self.tail: Callable[[Any], torch.Tensor] | None = None
        if self.storage is ImageStorage.UINT8:
            geometry, tail = split_image_transform(transform)
            if [repr(step) for step in geometry] == list(cached_steps):
                self.tail = Compose(tail)

    def image(self, data: Any) -> torch.Tensor:
        """The model's input tensor [3, H, W] of a stored image."""
        if self.storage is ImageStorage.JPEG:
            with Image.open(io.BytesIO(data)) as image:
                return self.transform(image.convert("RGB"))
        height, width = self.image_size
        # PixelsToTensor copies the read-only bytes once; ToTensor needs a writable array
        buffer = data if image_dtype(self.transform) is torch.uint8 else bytearray(data)
        pixels = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
        if self.tail is not None:  # as on the file's crop: ToTensor and Normalize, or
            return self.tail(pixels)  # PixelsToTensor (uint8, normalised on the device)
        return self.transform(Image.fromarray(pixels))

    def __call__(self, item: dict[str, Any]) -> Sample:
        """The sample of a cached item."""
        image_present = bool(item["image_present"])
        label = item["label"]
        if isinstance(label, np.ndarray):
            target = torch.from_numpy(np.array(label, dtype=np.float32))
        else:
            target = torch.tensor(int(label), dtype=torch.long)
        if image_present:
            pixels = self.image(item["image"])
        else:
            pixels = torch.zeros(3, *self.image_size, dtype=image_dtype(self.transform))
        return {
            "image": pixels,
            "text": torch.from_numpy(np.array(item["text"], dtype=np.int64)),
            "label": target,
            "image_present": torch.tensor(image_present),
            "text_present": torch.tensor(bool(item["text_present"])),
            "id": str(item["id"]),
            "index": torch.tensor(int(item["index"]), dtype=torch.long),
        }


def _no_tokenizer(texts: list[str]) -> torch.Tensor:
    msg = "a cached split holds token ids, not texts: there is nothing to tokenize"
    raise RuntimeError(msg)


class CachedDataset(MultimodalDataset):
    """One split of a cache, read by position (a map-style dataset of Samples).

    The litdata reader is opened on first access in each process (so DataLoader workers each
    open their own); over an object store, litdata fetches each chunk once into its local
    cache folder. Sample ``i`` is the split's ``i``-th sample, as in the dataset of the files.

    Args:
        location: the split's folder or URL (``<cache>/<split>``).
        ids: the split's sample ids, in order (from its ``samples.json``).
        image_available: which samples have an image in the data (bool [N]).
        text_available: which samples have a text in the data (bool [N]).
        decoder: turns a cached item into a Sample (holds the split's transform).
        cache_dir: litdata's local folder for chunks fetched from an object store (None: its
            default).
    """

    cache_tokens = False

    def __init__(
        self,
        location: str,
        ids: Sequence[str],
        image_available: torch.Tensor,
        text_available: torch.Tensor,
        decoder: SampleDecoder,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(decoder.transform, _no_tokenizer, decoder.image_size)
        self.location = location
        self.ids = list(ids)
        self.image_available = image_available
        self.text_available = text_available
        self.decoder = decoder
        self.cache_dir = cache_dir
        self._reader: Any = None

    @classmethod
    def open(
        cls, cache: str, split: str, decoder: SampleDecoder, cache_dir: str | None = None
    ) -> CachedDataset:
        """The split ``split`` of the cache at ``cache`` (reads its ``samples.json``)."""
        location = join_location(cache, split)
        try:
            samples = read_json(join_location(location, SAMPLES_NAME))
        except CacheNotFoundError as err:
            msg = f"the cache at {cache!r} has no {split!r} split ({err})"
            raise CacheNotFoundError(msg) from None
        image = torch.tensor([c == "1" for c in samples["image"]], dtype=torch.bool)
        text = torch.tensor([c == "1" for c in samples["text"]], dtype=torch.bool)
        return cls(location, samples["ids"], image, text, decoder, cache_dir)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # each process opens its own reader
        return state

    def reader(self) -> Any:
        """The split's litdata ``StreamingDataset``, opened on first use in this process."""
        if self._reader is None:
            require_litdata()
            from litdata import StreamingDataset

            self._reader = StreamingDataset(self.location, cache_dir=self.cache_dir)
            # the whole split (len() of a StreamingDataset is this process's share under DDP)
            held = sum(end - start for start, end in self._reader.region_of_interest)
            if held != len(self.ids):
                msg = (
                    f"the cached split at {self.location!r} holds {held} samples but its "
                    f"samples.json lists {len(self.ids)}: rebuild the cache"
                )
                raise DataValueError(msg)
        return self._reader

    def availability(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Which samples have an image and a text in the data (bool [N] each)."""
        return self.image_available, self.text_available

    def pretokenize(self) -> None:
        """Nothing to do: the cache holds the token ids."""
        return None

    def load_image(self, index: int) -> Image.Image | None:
        """The stored image of sample ``index`` (a uint8 cache's crop), or None."""
        item = read_item(self.reader(), index, self.location)  # a lost chunk: one message
        if not item["image_present"]:
            return None
        if self.decoder.storage is ImageStorage.JPEG:
            with Image.open(io.BytesIO(item["image"])) as image:
                return image.convert("RGB")
        height, width = self.image_size
        return Image.frombytes("RGB", (width, height), bytes(item["image"]))

    def load_text(self, index: int) -> str | None:
        """Always None: a cache holds token ids, not texts (see :meth:`__getitem__`)."""
        return None

    def target(self, index: int) -> torch.Tensor:
        """The label of sample ``index``."""
        return self[index]["label"]

    def __getitem__(self, index: int) -> Sample:
        item = read_item(self.reader(), index, self.location)  # a lost chunk: one message
        if int(item["index"]) != index or str(item["id"]) != self.ids[index]:
            msg = (
                f"the cached split at {self.location!r} holds sample {item['id']!r} at position "
                f"{index}, where its samples.json lists {self.ids[index]!r}: rebuild the cache"
            )
            raise DataValueError(msg)
        return self.decoder(item)
