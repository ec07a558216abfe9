"""What the world's tasks label, and the exact Bayes ceiling of each per available input.

The ceilings are those of a reader that perceives perfectly and decides optimally, given the
world's mention rates and greyscale probability (:class:`~.world.World`):

- ``objects`` and ``scenes`` (accuracy): the label's attributes (:data:`LABEL_ATTRIBUTES`)
  are independent and uniform, so the ceiling is the product, over them, of ``r + (1 - r) /
  k`` for the rate ``r`` at which the input reveals an attribute of ``k`` values (the image:
  1 for a visual attribute, 0.8 for the colour, 0 for the caption-only ones; the caption: its
  mention rate; both: ``1 - (1 - r_image)(1 - r_text)``); otherwise a uniform guess.
- ``tags`` (F1 macro, the large-sample limit): per tag, the better of "unknown means absent",
  ``2r / (1 + r)``, and "unknown means present", ``2p / (2p + (1 - r)(1 - p))``, for the rate
  ``r`` at which the input reveals the tag and its frequency ``p``; averaged over tags.
- ``claims`` (AUROC): each modality alone is at chance exactly; together, a lie goes unseen
  only when it is about the colour of a greyscale photo.

:mod:`.world_tasks` re-exports every name; the table of the default world is there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..choices import Choice
from .world import VALUES, VISUAL, Scene, World

__all__ = ["LABEL_ATTRIBUTES", "TAGS", "WorldTask", "ceilings", "label_index", "tag_vector"]

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
    """The world's tasks: objects (Food-101-like), tags (MM-IMDb-like), claims (memes), scenes.

    ``scenes`` is the one where each modality carries content the other lacks (see the module
    docstring), so that both a missing text and a missing image can be judged.
    """

    OBJECTS = "objects"
    TAGS = "tags"
    CLAIMS = "claims"
    SCENES = "scenes"


#: The attributes whose values make the class of the single-label tasks, outermost first.
LABEL_ATTRIBUTES: dict[WorldTask, tuple[str, ...]] = {
    WorldTask.OBJECTS: ("colour", "shape"),
    WorldTask.SCENES: ("shape", "background", "material"),
}


def label_index(scene: Scene, attributes: Sequence[str]) -> int:
    """The class of ``scene``: its values of ``attributes`` as digits, the first outermost."""
    label = 0
    for attribute in attributes:
        label = label * len(VALUES[attribute]) + scene.index(attribute)
    return label


def tag_vector(scene: Scene) -> np.ndarray:
    """The multi-hot tags of ``scene``, float32 [len(TAGS)] in the order of :data:`TAGS`."""
    return np.array(
        [getattr(scene, attribute) in values for _, attribute, values in _TAG_RULES],
        dtype=np.float32,
    )


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
        task: ``objects`` or ``scenes`` (accuracy), ``tags`` (F1 macro, the large-sample
            limit), or ``claims`` (AUROC).
        world: the world (its mention rates and greyscale probability).
        claim_attributes: the attributes false claims change (``claims`` only).

    Returns:
        ``{"image": ..., "text": ..., "both": ..., "chance": ...}``: the best expected score
        from the image alone, the caption alone, both, and neither.
    """
    task = WorldTask.parse(task, "task")
    out: dict[str, float] = {}
    if task in LABEL_ATTRIBUTES:  # independent attributes: a product of their accuracies
        attributes = LABEL_ATTRIBUTES[task]
        for source in ("image", "text", "both"):
            out[source] = 1.0
            for attribute in attributes:
                r, k = _reveal(world, attribute)[source], len(VALUES[attribute])
                out[source] *= r + (1 - r) / k  # known, or a uniform guess among k
        out["chance"] = 1 / float(np.prod([len(VALUES[a]) for a in attributes]))
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
