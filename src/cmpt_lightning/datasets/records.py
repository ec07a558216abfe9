"""Parsed samples (:class:`Record`) and the dataset that serves them, shared by the file readers.

A family's reader parses its files into records (sample id, image path, text, label, and the
problems found while parsing); :class:`RecordDataset` turns records into
:data:`~cmpt_lightning.datasets.base.Sample` dicts, loading each image when it is asked for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from PIL import Image

from ..missing import rank_key
from .base import MultimodalDataset
from .errors import BadSampleError, DataTypeError, DataValueError

__all__ = ["UNLABELLED", "Record", "RecordDataset", "stratified_split"]

#: The label of a sample without one (prediction data): -1, or a vector of -1 for multilabel.
UNLABELLED = -1

#: What reading an image can raise when the file is not a usable image.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

_Self = TypeVar("_Self", bound="RecordDataset")


@dataclass(frozen=True)
class Record:
    """One parsed sample.

    Attributes:
        id: stable, unique sample id (a file name stem, an imdb id, a row's id).
        image: path of the image file; None when the sample has no image (real missingness).
        text: the text; None when the sample has no text (real missingness).
        label: the class index, the class indices (multilabel), or None (unlabelled).
        source: where the text and label came from, for messages (``texts/train.csv:12``).
        problems: what is wrong with the sample, found while parsing (empty text, unknown label).
        parsed: False when the row itself could not be read (a JSONL line that is not a JSON
            object, a CSV row with the wrong number of columns, a metadata file that is not
            JSON): its ``problems`` say why, and it is not also reported as lacking an image
            or a text.
    """

    id: str
    image: Path | None
    text: str | None
    label: int | tuple[int, ...] | None
    source: str
    problems: tuple[str, ...] = ()
    parsed: bool = True


class RecordDataset(MultimodalDataset):
    """A :class:`MultimodalDataset` over parsed :class:`Record` objects.

    Args:
        records: the samples, in order.
        num_classes: number of classes.
        multilabel: labels are sets of classes (a float multi-hot target) instead of one class.
        image_transform: PIL image -> float tensor [3, H, W] (the open_clip preprocessing).
        tokenizer: list of strings -> int tensor [B, L] (the open_clip tokenizer).
        image_size: (H, W) of the transform's output.
    """

    #: Every sample of the family must have an image (a missing file is a bad sample).
    requires_image: ClassVar[bool] = True
    #: Every sample of the family must have a non-empty text.
    requires_text: ClassVar[bool] = True
    #: The family's name, for messages.
    family: ClassVar[str] = "dataset"

    def __init__(
        self,
        records: Sequence[Record],
        num_classes: int,
        multilabel: bool,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
    ) -> None:
        super().__init__(image_transform, tokenizer, image_size)
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.records = list(records)
        self.ids = [record.id for record in self.records]

    def select(
        self: _Self,
        indices: Sequence[int],
        image_transform: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> _Self:
        """A copy holding the records at ``indices`` (and another transform, if given)."""
        subset = copy.copy(self)
        subset.records = [self.records[i] for i in indices]
        subset.ids = [record.id for record in subset.records]
        if image_transform is not None:
            subset.image_transform = image_transform
        return subset

    def availability(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Which samples have an image and a text in the data (bool [N] each)."""
        image = torch.tensor([r.image is not None for r in self.records], dtype=torch.bool)
        text = torch.tensor([r.text is not None for r in self.records], dtype=torch.bool)
        return image, text

    def load_image(self, index: int) -> Image.Image | None:
        """Read the image of sample ``index`` as RGB (None if the sample has none)."""
        record = self.records[index]
        if record.image is None:
            return None
        try:
            with Image.open(record.image) as image:
                return image.convert("RGB")
        except IMAGE_ERRORS as err:
            msg = (
                f"cannot read image {str(record.image)!r} of sample {record.id!r}: {err}. Find "
                "every such file before training with `cmpt data check ... --image_check decode`, "
                "or set image_check: decode so that setup finds them"
            )
            raise BadSampleError(msg) from err

    def load_text(self, index: int) -> str | None:
        """The text of sample ``index`` (None if the sample has none)."""
        return self.records[index].text

    def target(self, index: int) -> torch.Tensor:
        """Class index (int64 scalar) or multi-hot float [C]; -1 for an unlabelled sample."""
        label = self.records[index].label
        if self.multilabel:
            if label is None:
                return torch.full((self.num_classes,), float(UNLABELLED))
            hot = torch.zeros(self.num_classes)
            hot[list(label) if isinstance(label, tuple) else [label]] = 1.0
            return hot
        if isinstance(label, tuple):
            msg = f"sample {self.records[index].id!r} has labels {label} in a single-label task"
            raise DataTypeError(msg)
        return torch.tensor(UNLABELLED if label is None else label, dtype=torch.long)


def stratified_split(
    ids: Sequence[str], groups: Sequence[Hashable], fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split positions into (kept, held out), holding out ``fraction`` of every group.

    Within each group the samples are ranked as the missing-modality protocol ranks them
    (:func:`~cmpt_lightning.missing.rank_key`, a BLAKE2b hash of ``(seed, id)``) and the first
    ``round(n * fraction)`` are held out, at least one and at most ``n - 1`` for a group of
    ``n >= 2`` (a group of one stays whole). The split is a pure function of (seed, ids,
    groups): the same on every machine, and a sample's side does not depend on the order of
    the file.

    Args:
        ids: unique sample ids.
        groups: the stratum of each sample (its class; anything hashable).
        fraction: share of each group to hold out, in [0, 1).
        seed: the split seed.

    Returns:
        The kept and the held-out positions, each in increasing order.
    """
    if not 0.0 <= fraction < 1.0:
        msg = f"the held-out fraction must be in [0, 1), got {fraction!r}"
        raise DataValueError(msg)
    if len(ids) != len(groups):
        msg = f"got {len(ids)} ids but {len(groups)} groups"
        raise DataValueError(msg)
    members: dict[Hashable, list[int]] = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(position)
    held: list[int] = []
    for positions in members.values():
        n = len(positions)
        if fraction == 0.0 or n < 2:
            continue
        exact = (Decimal(repr(fraction)) * n).to_integral_value(rounding=ROUND_HALF_UP)
        count = min(n - 1, max(1, int(exact)))
        ranked = sorted(positions, key=lambda p: (rank_key(ids[p], seed), ids[p]))
        held.extend(ranked[:count])
    held_set = set(held)
    kept = [p for p in range(len(ids)) if p not in held_set]
    return kept, sorted(held)
