"""Datasets on the procedural world: pretraining pairs and three tasks like the paper's.

:class:`WorldPairs` streams truthful image-caption pairs for contrastive pretraining.

The three tasks draw their scenes, images and captions from :class:`~.world.World` (see
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

**What each modality can reach**, for a reader that perceives perfectly (Bayes ceilings of the
default world: greyscale 0.2, the mention rates of :data:`~.world.MENTION`), computed exactly
by :func:`ceilings`:

=======  ==========  ======  ======  ======  ======================================
task     metric      image   text    both    chance (no input)
=======  ==========  ======  ======  ======  ======================================
objects  accuracy    0.833   0.643   0.958   0.042
tags     F1 macro    0.830   0.802   0.917   0.429 (every tag predicted present)
claims   AUROC       0.500   0.500   0.991   0.500 (accuracy: 0.5, 0.5, 0.95)
=======  ==========  ======  ======  ======  ======================================

objects: the image shows the shape always and the colour unless greyscale, ``(0.8 + 0.2 / 6)
x 1``; the caption states colour and shape with 0.75 each, ``(0.75 + 0.25 / 6) x (0.75 + 0.25
/ 4)``. tags: per tag, F1 is the better of "unknown means absent", ``2r / (1 + r)``, and
"unknown means present", ``2p / (2p + (1 - r)(1 - p))``, for the rate ``r`` at which the
modality reveals the tag and its frequency ``p``; averaged over tags. claims: a lie goes
unseen only when it is about the colour of a greyscale photo.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..choices import Choice
from ..tasks import Task
from .base import MultimodalDataset, Sample
from .world import VALUES, VISUAL, Caption, Scene, World

__all__ = [
    "TAGS",
    "WorldClaimsDataset",
    "WorldDataset",
    "WorldObjectsDataset",
    "WorldPairs",
    "WorldTagsDataset",
    "WorldTask",
    "ceilings",
    "tag_vector",
]

#: The tags of the ``tags`` task, in order, with the attribute and values that make each true.
_TAG_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    *((c, "colour", (c,)) for c in VALUES["colour"]),
    *((s, "shape", (s,)) for s in VALUES["shape"]),
    ("striped", "texture", ("striped",)),
    ("large", "size", ("large",)),
    ("group", "count", ("2", "3")),
    ("dark", "background", ("dark",)),
    *((m, "material", (m,)) for m in VALUES["material"]),
)
TAGS: tuple[str, ...] = tuple(name for name, _, _ in _TAG_RULES)


class WorldTask(Choice):
    """The world's three tasks: objects (Food-101-like), tags (MM-IMDb-like), claims (memes)."""

    OBJECTS = "objects"
    TAGS = "tags"
    CLAIMS = "claims"


def tag_vector(scene: Scene) -> np.ndarray:
    """The multi-hot tags of ``scene``, float32 [len(TAGS)] in the order of :data:`TAGS`."""
    return np.array(
        [getattr(scene, attribute) in values for _, attribute, values in _TAG_RULES],
        dtype=np.float32,
    )


class WorldDataset(MultimodalDataset):
    """The samples of one split of one world task (base of the three task datasets).

    Args:
        num_samples: number of samples.
        split: the split's name (``train``, ``val``, ``test``); it keys the samples.
        image_transform: PIL image -> float tensor [3, H, W] (the open_clip preprocessing).
        tokenizer: list of strings -> int tensor [B, L] (the open_clip tokenizer).
        image_size: (H, W) of the transform's output, for the zeros of an absent image.
        world: the generator; None builds ``World(seed)``.
        seed: the world's seed when ``world`` is None.
        memoize: keep every generated sample in memory (per process), so that later epochs
            do not render it again; only for deterministic transforms (no augmentation).
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
    ) -> None:
        super().__init__(image_transform, tokenizer, image_size)
        self.memoize = memoize
        self._memo: dict[int, Sample] = {}
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

    def __getitem__(self, index: int) -> Sample:
        """The sample ``index`` (see :class:`MultimodalDataset`), generated once if memoized."""
        if not self.memoize:
            return super().__getitem__(index)
        if index not in self._memo:
            self._memo[index] = super().__getitem__(index)
        return self._memo[index]


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
        scene = self.scene(index)
        label = scene.index("colour") * len(VALUES["shape"]) + scene.index("shape")
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


def _reveal(world: World, attribute: str) -> dict[str, float]:
    """Probability that the image, the text and either of them reveal ``attribute``."""
    image = 0.0 if attribute not in VISUAL else 1.0 - world.greyscale * (attribute == "colour")
    text = world.mention[attribute]
    return {"image": image, "text": text, "both": 1.0 - (1.0 - image) * (1.0 - text)}


def _tag_f1(reveal: float, frequency: float) -> float:
    """The best expected F1 of one tag revealed at rate ``reveal``, present at ``frequency``."""
    absent = 2 * reveal / (1 + reveal)  # unknowns predicted absent
    present = 2 * frequency / (2 * frequency + (1 - reveal) * (1 - frequency))
    return max(absent, present)


def ceilings(
    task: WorldTask | str, world: World, claim_attributes: Sequence[str] = ("colour", "shape")
) -> dict[str, float]:
    """The Bayes ceiling of ``task``'s main metric per available input, exactly.

    Args:
        task: ``objects`` (accuracy), ``tags`` (F1 macro, the large-sample limit), or
            ``claims`` (AUROC).
        world: the world (its mention rates and greyscale probability).
        claim_attributes: the attributes false claims change (``claims`` only).

    Returns:
        ``{"image": ..., "text": ..., "both": ..., "chance": ...}``: the best expected score
        from the image alone, the caption alone, both, and neither.
    """
    task = WorldTask.parse(task, "task")
    out: dict[str, float] = {}
    if task is WorldTask.OBJECTS:
        colour, shape = _reveal(world, "colour"), _reveal(world, "shape")
        n_colour, n_shape = len(VALUES["colour"]), len(VALUES["shape"])
        for source in ("image", "text", "both"):
            c, s = colour[source], shape[source]
            out[source] = (c + (1 - c) / n_colour) * (s + (1 - s) / n_shape)
        out["chance"] = 1 / (n_colour * n_shape)
    elif task is WorldTask.TAGS:
        for source in ("image", "text", "both", "chance"):
            scores = []
            for _, attribute, values in _TAG_RULES:
                reveal = 0.0 if source == "chance" else _reveal(world, attribute)[source]
                scores.append(_tag_f1(reveal, len(values) / len(VALUES[attribute])))
            out[source] = float(np.mean(scores))
    else:
        out = {"image": 0.5, "text": 0.5, "both": 1.0, "chance": 0.5}
        if "colour" in claim_attributes:
            k = len(claim_attributes)
            unseen = world.greyscale / k  # of the lies: about the colour of a grey photo
            said = world.greyscale * (1 / k + (1 - 1 / k) * world.mention["colour"])  # of truths
            out["both"] = 1 - unseen * said / 2
    return out
