"""Datasets on the procedural world: pretraining pairs and four tasks like the paper's.

:class:`WorldPairs` streams truthful image-caption pairs for contrastive pretraining.

The four tasks draw their scenes, images and captions from :class:`~.world.World` (see
:mod:`.world` for the generative process) under the split name ``<task>/<split>``, so no two
tasks or splits share a sample's random streams (nor with the pretraining splits).

- ``objects`` (:class:`WorldObjectsDataset`, Food-101-like): 24 classes, the object's colour x
  shape (``"red circle"`` is class 0). Metric: accuracy.
- ``tags`` (:class:`WorldTagsDataset`, MM-IMDb-like): 18 tags, multi-label: the colour (6),
  the shape (4), ``striped``, ``large``, ``group`` (2 or 3 objects), ``dark`` (background),
  and the material (4), which only a caption can state. 3 to 7 tags per sample (5 on
  average); tag frequencies from 1/6 to 2/3. Metric: F1 macro.
- ``claims`` (:class:`WorldClaimsDataset`, Hateful-Memes-like): binary. The caption is written
  for a *claimed* scene: the true scene (label 0), or the true scene with one attribute of
  ``claim_attributes`` (default colour and shape, one picked uniformly) changed to another
  value drawn uniformly (label 1, "the caption contradicts the image"), with that attribute
  always mentioned. Claimed scenes are distributed alike under both labels, as are true
  scenes, so each modality alone is at chance *exactly*: the label lives only in the pair.
  Metric: AUROC (and accuracy).
- ``scenes`` (:class:`WorldScenesDataset`): 32 classes, shape x background x material
  (``"wood circle on light"`` is class 0). The shape is shared content (every image, 75% of
  the captions), the background is the image's (captions state it 30% of the time), the
  material the caption's alone (50%): each modality carries what the other lacks, so a
  missing text and a missing image both cost a lot, and comparably. Metric: accuracy.

**What each modality can reach**, for a reader that perceives perfectly (Bayes ceilings of the
default world: greyscale 0.2, the mention rates of :data:`~.world.MENTION`), computed exactly
by :func:`ceilings`:

=======  ==========  ======  ======  ======  ======================================
task     metric      image   text    both    chance (no input)
=======  ==========  ======  ======  ======  ======================================
objects  accuracy    0.833   0.643   0.958   0.042
tags     F1 macro    0.830   0.802   0.917   0.429 (every tag predicted present)
claims   AUROC       0.500   0.500   0.991   0.500 (accuracy: 0.5, 0.5, 0.95)
scenes   accuracy    0.250   0.330   0.625   0.031
=======  ==========  ======  ======  ======  ======================================

scenes: the image shows shape and background, never the material, ``1 x 1 x 1 / 4``; the
caption states them with 0.75, 0.3 and 0.5, ``(0.75 + 0.25 / 4) x (0.3 + 0.7 / 2) x (0.5 + 0.5
/ 4)``; both leave only the unmentioned material unknown, ``1 x 1 x 0.625``. How every ceiling
is computed: :mod:`.world_ceilings` (whose names this module re-exports).

**Memo.** Generated samples are kept in the process's :func:`~.sample_memo.sample_memo`
(bounded, least recently used out first), keyed by the world's settings, the task, split and
index, and what the data module says names its preprocessing: later epochs and later runs
in the same process take them from there, the same bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..tasks import Task
from .base import MultimodalDataset, Sample, TokenCache
from .sample_memo import sample_memo
from .world import VALUES, VISUAL, Caption, Scene, World
from .world_ceilings import LABEL_ATTRIBUTES, TAGS, WorldTask, ceilings, label_index, tag_vector

__all__ = [
    "LABEL_ATTRIBUTES",
    "TAGS",
    "WorldClaimsDataset",
    "WorldDataset",
    "WorldObjectsDataset",
    "WorldPairs",
    "WorldScenesDataset",
    "WorldTagsDataset",
    "WorldTask",
    "ceilings",
    "label_index",
    "tag_vector",
]


class WorldDataset(MultimodalDataset):
    """The samples of one split of one world task (base of the task datasets).

    Args:
        num_samples: number of samples.
        split: the split's name (``train``, ``val``, ``test``); it keys the samples.
        image_transform: PIL image -> float tensor [3, H, W] (the open_clip preprocessing).
        tokenizer: list of strings -> int tensor [B, L] (the open_clip tokenizer).
        image_size: (H, W) of the transform's output, for the zeros of an absent image.
        world: the generator; None builds ``World(seed)``.
        seed: the world's seed when ``world`` is None.
        memoize: keep generated samples in the process's memo
            (:func:`~.sample_memo.sample_memo`, bounded), so that later epochs (and, with a
            ``memo_key``, later datasets) do not make them again; only for deterministic
            transforms (no augmentation).
        memo_key: what names ``image_transform`` and ``tokenizer`` (a data module passes its
            preprocessing settings): datasets with equal keys, worlds, tasks and splits share
            their memoized samples. None: a key of this dataset alone.
    """

    task: ClassVar[WorldTask]
    kind: ClassVar[Task]

    def __init__(
        self,
        num_samples: int,
        split: str,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
        *,
        world: World | None = None,
        seed: int = 0,
        memoize: bool = False,
        memo_key: Hashable | None = None,
    ) -> None:
        super().__init__(image_transform, tokenizer, image_size)
        self.memoize = memoize
        self.memo_key: Hashable = object() if memo_key is None else memo_key
        if num_samples < 1:
            msg = f"num_samples must be >= 1, got {num_samples!r}"
            raise ValueError(msg)
        self.world = World(seed) if world is None else world
        self.split = split
        self.key = f"{self.task.value}/{split}"
        self.ids = [f"world-{self.task.value}-{split}-{i:06d}" for i in range(num_samples)]

    @property
    def num_classes(self) -> int:
        """Number of classes (tags for ``tags``, 2 for ``claims``)."""
        return len(self.classes)

    @property
    def classes(self) -> Sequence[str]:
        """The class names, in label order."""
        raise NotImplementedError

    def scene(self, index: int) -> Scene:
        """The true scene of sample ``index`` (what its image shows)."""
        return self.world.scene(self.key, index)

    def caption(self, index: int) -> Caption:
        """The caption of sample ``index``, with what it mentions."""
        return self.world.describe(self.scene(index), self.key, index)

    def load_image(self, index: int) -> Image.Image:
        """Render the image of sample ``index``."""
        return self.world.draw(self.scene(index), self.key, index)

    def load_text(self, index: int) -> str:
        """Write the caption of sample ``index``."""
        return self.caption(index).text

    def ceilings(self) -> dict[str, float]:
        """This task's Bayes ceilings on this world (see :func:`ceilings`)."""
        return ceilings(self.task, self.world)

    def variant(self) -> tuple[Any, ...]:
        """The task's own settings a sample depends on (``claims``: its claim attributes)."""
        return ()

    def memo_entry(self, index: int) -> Hashable:
        """The memo's key of sample ``index``: everything the sample depends on."""
        world = self.world.key
        return (type(self), world, self.key, self.variant(), self.memo_key, index)

    def __getitem__(self, index: int) -> Sample:
        """The sample ``index`` (see :class:`MultimodalDataset`), made once if memoized."""
        if not self.memoize:
            return super().__getitem__(index)
        memo, key = sample_memo(), self.memo_entry(index)
        sample = memo.get(key)
        if sample is None:
            sample = super().__getitem__(index)
            memo.put(key, sample)
        return sample

    def pretokenize(self) -> TokenCache | None:
        """Tokenize every text now (see :class:`MultimodalDataset`), unless none is needed.

        While every sample is in the memo, nothing is tokenized (a warm run writes no
        caption); the first sample made after all tokenizes every text as usual.
        """
        if self.memoize and not getattr(self, "_pretokenized", False):
            memo = sample_memo()
            if all(self.memo_entry(i) in memo for i in range(len(self))):
                return None
        return super().pretokenize()


class WorldObjectsDataset(WorldDataset):
    """Food-101-like: one of 24 classes, the object's colour x shape (``"red circle"`` first)."""

    task = WorldTask.OBJECTS
    kind = Task.MULTICLASS

    @property
    def classes(self) -> Sequence[str]:
        """``"<colour> <shape>"`` for every colour, then shape, in :data:`.world.VALUES` order."""
        return [f"{c} {s}" for c in VALUES["colour"] for s in VALUES["shape"]]

    def target(self, index: int) -> torch.Tensor:
        """The class of sample ``index`` (int64 scalar)."""
        label = label_index(self.scene(index), LABEL_ATTRIBUTES[self.task])
        return torch.tensor(label, dtype=torch.long)


class WorldScenesDataset(WorldDataset):
    """Both directions: one of 32 classes, shape x background x material.

    The shape is in every image and 75% of the captions, the background in every image and
    30% of the captions, the material in half the captions and no image: the image alone
    reaches 0.250, the caption alone 0.330, both 0.625 (:func:`ceilings`).
    """

    task = WorldTask.SCENES
    kind = Task.MULTICLASS

    @property
    def classes(self) -> Sequence[str]:
        """``"<material> <shape> on <background>"``, nested shape, background, material."""
        return [
            f"{m} {s} on {b}"
            for s in VALUES["shape"]
            for b in VALUES["background"]
            for m in VALUES["material"]
        ]

    def target(self, index: int) -> torch.Tensor:
        """The class of sample ``index`` (int64 scalar)."""
        label = label_index(self.scene(index), LABEL_ATTRIBUTES[self.task])
        return torch.tensor(label, dtype=torch.long)


class WorldTagsDataset(WorldDataset):
    """MM-IMDb-like: the multi-hot tags of :data:`TAGS` (the material only the caption states)."""

    task = WorldTask.TAGS
    kind = Task.MULTILABEL

    @property
    def classes(self) -> Sequence[str]:
        """The tags, :data:`TAGS`."""
        return TAGS

    def target(self, index: int) -> torch.Tensor:
        """The tags of sample ``index`` (float [18])."""
        return torch.from_numpy(tag_vector(self.scene(index)))


class WorldClaimsDataset(WorldDataset):
    """Hateful-Memes-like: does the caption contradict the image? Needs both modalities.

    Args:
        *args: as for :class:`WorldDataset` (samples, split, transform, tokenizer, size).
        claim_attributes: the visual attributes a false claim may change (one uniformly).
        **kwargs: as for :class:`WorldDataset` (``world``, ``seed``).
    """

    task = WorldTask.CLAIMS
    kind = Task.BINARY

    def __init__(
        self, *args: Any, claim_attributes: Sequence[str] = ("colour", "shape"), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        bad = [name for name in claim_attributes if name not in VISUAL]
        if bad or not claim_attributes:
            msg = f"claim_attributes must be a non-empty subset of {list(VISUAL)}, got {bad!r}"
            raise ValueError(msg)
        self.claim_attributes = tuple(claim_attributes)

    def variant(self) -> tuple[Any, ...]:
        """The claim attributes (they change the captions and labels)."""
        return self.claim_attributes

    @property
    def classes(self) -> Sequence[str]:
        """``("consistent", "contradicts")``: label 1 means the caption lies about the image."""
        return ("consistent", "contradicts")

    def claim(self, index: int) -> tuple[int, str, Scene]:
        """The label, the claim's attribute and the claimed scene of sample ``index``."""
        rng = self.world.rng(self.key, index, 3)
        label = int(rng.random() < 0.5)
        attribute = self.claim_attributes[int(rng.integers(len(self.claim_attributes)))]
        scene = self.scene(index)
        if not label:
            return 0, attribute, scene
        others = [v for v in VALUES[attribute] if v != getattr(scene, attribute)]
        change: dict[str, Any] = {attribute: others[int(rng.integers(len(others)))]}
        claimed = dataclasses.replace(scene, **change)
        return 1, attribute, claimed

    def caption(self, index: int) -> Caption:
        """The caption of the claimed scene, which always mentions the claim's attribute."""
        _, attribute, claimed = self.claim(index)
        return self.world.describe(claimed, self.key, index, force=frozenset({attribute}))

    def target(self, index: int) -> torch.Tensor:
        """1 if the caption contradicts the image, else 0 (int64 scalar)."""
        return torch.tensor(self.claim(index)[0], dtype=torch.long)

    def ceilings(self) -> dict[str, float]:
        """This task's Bayes ceilings (AUROC) for its ``claim_attributes``."""
        return ceilings(self.task, self.world, self.claim_attributes)


class WorldPairs(Dataset[dict[str, Any]]):
    """Image-caption pairs of one split, for contrastive pretraining (length chosen freely).

    Args:
        world: the generator.
        split: the split's name (``pretrain``, ``pretrain-val``, ...): a different name gives
            different samples.
        length: the number of pairs.
        image_transform: PIL image -> float tensor [3, H, W] (the open_clip preprocessing).

    Returns (per item):
        ``{"image": [3, H, W] float, "caption": str, "index": int}``; the default collate
        gives a list of captions, to be tokenized per batch.
    """

    def __init__(
        self,
        world: World,
        split: str,
        length: int,
        image_transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        if length < 1:
            msg = f"length must be >= 1, got {length!r}"
            raise ValueError(msg)
        self.world, self.split, self.length = world, split, length
        self.image_transform = image_transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.world.scene(self.split, index)
        image = self.world.draw(scene, self.split, index)
        caption = self.world.describe(scene, self.split, index)
        return {"image": self.image_transform(image), "caption": caption.text, "index": index}
