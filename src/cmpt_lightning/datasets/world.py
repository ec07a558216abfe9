"""A procedural image-caption world: the testbed where towers can be pretrained the way CLIP is.

Every sample is generated on the fly from ``(seed, split, index)``; nothing is read from disk.

**Scene.** Ten attributes, each drawn uniformly and independently:

=============  =============================================  ==========================
attribute      values                                         shown by
=============  =============================================  ==========================
colour         red, orange, yellow, green, blue, purple       image (unless greyscale)
shape          circle, square, triangle, cross                image
count          1, 2, 3 (copies of the same object)            image
size           small, large                                   image
position       left, right, top, bottom (where the group is)  image
texture        solid, striped                                 image
background     light, dark                                    image
material       wood, metal, glass, paper                      caption only
owner          anna, ben, chloe, david, emma, felix           caption only
mood           cheerful, gloomy, calm                         caption only
=============  =============================================  ==========================

**Image** (``raw_size`` pixels square, 64 by default): the ``count`` objects in a row on the
``position`` side, jittered by up to 1.5 pixels, with a random brightness (x 0.8 to 1.15) and
Gaussian pixel noise (sd 8). With probability :data:`GREYSCALE` = 0.2 the photo is greyscale:
the object's grey level is drawn independently of its colour, so the image carries *no*
information about the colour; everything else stays visible.

**Caption**: each attribute is mentioned independently with the probability of
:data:`MENTION` (colour 0.75, shape 0.75, count 0.5, size 0.5, position 0.5, texture 0.4,
background 0.3, material 0.5, owner 0.4, mood 0.3), in words drawn from 2 to 3 synonyms per
value, arranged by one of four sentence templates with the trailing phrases in random order. An
unmentioned shape becomes a generic noun (thing, object, item); an unmentioned count leaves
the noun singular, so it says nothing about the count. Captions never lie in this module (the
binary task of :mod:`.world_tasks` builds its false claims on top).

**What each modality predicts about the other.** The caption states on average 3.7 of the 7
visual attributes (the sum of their mention rates), all of them true; the other 3.3 are
uniform given the caption. The image determines all 7 visual attributes in 80% of the photos
and 6 of them in greyscale photos; it says nothing about material, owner or mood, nor about
which attributes the caption will mention. So an image predicts the value behind each of a
caption's visual words: always for the 6 shown in every photo, 83% of the time for a colour
word (0.8 + 0.2 / 6); and a caption predicts an image's visual content up to the attributes
it leaves out. The tasks of :mod:`.world_tasks` state their exact per-modality ceilings.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "GREYSCALE",
    "MENTION",
    "TEXT_ONLY",
    "VALUES",
    "VISUAL",
    "WORDS",
    "Caption",
    "Scene",
    "World",
    "render",
    "sample_scene",
    "write_caption",
]

#: The values of every attribute, in a fixed order (a value's index is its class index).
VALUES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "orange", "yellow", "green", "blue", "purple"),
    "shape": ("circle", "square", "triangle", "cross"),
    "count": ("1", "2", "3"),
    "size": ("small", "large"),
    "position": ("left", "right", "top", "bottom"),
    "texture": ("solid", "striped"),
    "background": ("light", "dark"),
    "material": ("wood", "metal", "glass", "paper"),
    "owner": ("anna", "ben", "chloe", "david", "emma", "felix"),
    "mood": ("cheerful", "gloomy", "calm"),
}
#: The attributes an image can show, and those only a caption can state.
VISUAL = ("colour", "shape", "count", "size", "position", "texture", "background")
TEXT_ONLY = ("material", "owner", "mood")
#: Probability that a caption mentions each attribute (independently).
MENTION: dict[str, float] = {
    "colour": 0.75,
    "shape": 0.75,
    "count": 0.5,
    "size": 0.5,
    "position": 0.5,
    "texture": 0.4,
    "background": 0.3,
    "material": 0.5,
    "owner": 0.4,
    "mood": 0.3,
}
#: Probability that a photo is greyscale (its colour invisible).
GREYSCALE = 0.2

#: The synonyms a caption may use for each value; shapes as (singular, plural) pairs.
WORDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "colour": {
        "red": ("red", "scarlet", "crimson"),
        "orange": ("orange", "amber"),
        "yellow": ("yellow", "golden", "lemon"),
        "green": ("green", "emerald", "leafy"),
        "blue": ("blue", "azure", "cobalt"),
        "purple": ("purple", "violet", "lilac"),
    },
    "shape": {
        "circle": (("circle", "circles"), ("disc", "discs"), ("dot", "dots")),
        "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
        "triangle": (("triangle", "triangles"), ("wedge", "wedges"), ("pyramid", "pyramids")),
        "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    },
    "count": {
        "1": ("one", "a single", "just one"),
        "2": ("two", "a pair of", "a couple of"),
        "3": ("three", "a trio of", "a group of three"),
    },
    "size": {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")},
    "position": {
        "left": ("on the left", "at the left", "to the left"),
        "right": ("on the right", "at the right", "to the right"),
        "top": ("at the top", "near the top", "up top"),
        "bottom": ("at the bottom", "near the bottom", "down below"),
    },
    "texture": {"solid": ("solid", "plain", "filled"), "striped": ("striped", "stripy", "banded")},
    "background": {
        "light": ("on a light background", "on a pale backdrop", "against a bright backdrop"),
        "dark": ("on a dark background", "on a dim backdrop", "against a black backdrop"),
    },
    "material": {
        m: (adj, f"made of {m}")
        for m, adj in zip(VALUES["material"], ("wooden", "metal", "glass", "paper"), strict=True)
    },
    "owner": {o: (f"{o}'s", f"owned by {o}", f"belonging to {o}") for o in VALUES["owner"]},
    "mood": {
        "cheerful": ("what a cheerful scene", "it feels cheerful", "so cheerful"),
        "gloomy": ("what a gloomy scene", "it feels gloomy", "rather gloomy"),
        "calm": ("what a calm scene", "it feels calm", "very calm"),
    },
}
_GENERIC = (("thing", "things"), ("object", "objects"), ("item", "items"))
_TEMPLATES = (
    "{np}{tail}",
    "a photo of {np}{tail}",
    "there {be} {np}{tail}",
    "a picture of {np}{tail}",
)
_RGB = {
    "red": (200, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (230, 210, 50),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 180),
}
_BACKGROUND = {"light": 205.0, "dark": 45.0}
_SIZES = np.array([len(values) for values in VALUES.values()])


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates, each float [size, size] (shared, read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


@dataclass(frozen=True)
class Scene:
    """One scene: a value per attribute of :data:`VALUES`, and whether its photo is greyscale."""

    colour: str
    shape: str
    count: str
    size: str
    position: str
    texture: str
    background: str
    material: str
    owner: str
    mood: str
    greyscale: bool = False

    def visible(self, attribute: str) -> bool:
        """Whether the image shows ``attribute`` (all visual ones, colour only in colour)."""
        return attribute in VISUAL and not (attribute == "colour" and self.greyscale)

    def index(self, attribute: str) -> int:
        """The index of this scene's value of ``attribute`` in :data:`VALUES`."""
        return VALUES[attribute].index(getattr(self, attribute))


@dataclass(frozen=True)
class Caption:
    """A caption, the attributes it states, and the scene it describes."""

    text: str
    mentioned: frozenset[str]
    scene: Scene = field(repr=False)


def sample_scene(rng: np.random.Generator, greyscale: float = GREYSCALE) -> Scene:
    """Draw a scene: every attribute uniform and independent, greyscale with ``greyscale``."""
    picks = rng.integers(0, _SIZES)  # one uniform index per attribute
    values = {name: VALUES[name][k] for name, k in zip(VALUES, picks.tolist(), strict=True)}
    return Scene(**values, greyscale=bool(rng.random() < greyscale))


def _mask(shape: str, yy: np.ndarray, xx: np.ndarray, radius: float) -> np.ndarray:
    """The pixels of one object centred at the origin of ``yy``, ``xx`` (bool [H, W])."""
    ay, ax = np.abs(yy), np.abs(xx)
    if shape == "circle":
        return yy**2 + xx**2 <= radius**2
    if shape == "square":
        return (ay <= 0.85 * radius) & (ax <= 0.85 * radius)
    if shape == "triangle":  # apex up, base at +0.8 r
        return (yy >= -radius) & (yy <= 0.8 * radius) & (ax <= (yy + radius) / 1.8)
    return ((ay <= radius / 3) & (ax <= radius)) | ((ax <= radius / 3) & (ay <= radius))


def render(scene: Scene, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Draw ``scene`` as an RGB uint8 image [size, size, 3] (grey in all channels if greyscale).

    The objects sit in a row (a column for left and right) centred a quarter of the image in
    from the ``position`` side, each with radius 0.09 (small) or 0.15 (large) of ``size``.
    """
    s = float(size)
    radius = (0.09 if scene.size == "small" else 0.15) * s
    n = int(scene.count)
    along = [s * (k + 0.5) / n for k in range(n)]  # centres along the row
    across = {"left": 0.25, "top": 0.25, "right": 0.75, "bottom": 0.75}[scene.position] * s
    yy, xx = _grid(size)  # shape = [size, size] each
    region = np.zeros((size, size), dtype=bool)
    for centre in along:
        cy, cx = (centre, across) if scene.position in ("left", "right") else (across, centre)
        dy, dx = rng.uniform(-1.5, 1.5, size=2) * s / 64
        region |= _mask(scene.shape, yy - cy - dy, xx - cx - dx, radius)
    if scene.greyscale:
        tone = np.full(3, rng.uniform(90.0, 170.0))  # independent of the colour
    else:
        tone = np.asarray(_RGB[scene.colour], dtype=np.float64) + rng.normal(0, 10, size=3)
    img = np.full((size, size, 3), _BACKGROUND[scene.background], dtype=np.float32)
    img[region] = tone
    if scene.texture == "striped":
        period = max(2, size // 8)
        dark = region & (((yy + rng.integers(period)) // (period // 2)) % 2 == 1)
        img[dark] = tone * 0.45
    img *= np.float32(rng.uniform(0.8, 1.15))
    noise = rng.standard_normal((size, size, 1 if scene.greyscale else 3), dtype=np.float32)
    return np.clip(img + 8 * noise, 0, 255).astype(np.uint8)  # shape = [size, size, 3]


def _pick(rng: np.random.Generator, options: tuple[Any, ...]) -> Any:
    return options[int(rng.integers(len(options)))]


def write_caption(
    scene: Scene,
    rng: np.random.Generator,
    mention: Mapping[str, float] = MENTION,
    force: frozenset[str] = frozenset(),
) -> Caption:
    """Describe ``scene`` in one sentence, mentioning each attribute with ``mention[name]``.

    Args:
        scene: the scene the caption states (truthfully).
        rng: the caption's random stream.
        mention: probability of mentioning each attribute of :data:`VALUES`.
        force: attributes mentioned whatever ``mention`` says.

    Returns:
        The caption, with the set of attributes it mentions.
    """
    draws = rng.random(len(VALUES))
    said = frozenset(
        name for name, u in zip(VALUES, draws, strict=True) if name in force or u < mention[name]
    )

    def word(name: str) -> Any:
        return _pick(rng, WORDS[name][getattr(scene, name)])

    plural = "count" in said and scene.count != "1"
    noun = _pick(rng, WORDS["shape"][scene.shape] if "shape" in said else _GENERIC)[plural]
    owner_form = word("owner") if "owner" in said else None
    material_form = word("material") if "material" in said else None
    adjectives = [word(name) for name in ("size", "texture", "colour") if name in said]
    if material_form is not None and not material_form.startswith("made"):
        adjectives.append(material_form)
    phrase = " ".join([*adjectives, noun])
    if owner_form is not None and owner_form.endswith("'s"):
        det = owner_form + (
            " " + ("one", "two", "three")[int(scene.count) - 1] if "count" in said else ""
        )
    elif "count" in said:
        det = word("count")
    else:
        det = "the" if rng.random() < 0.3 else ("an" if phrase[0] in "aeiou" else "a")
    tail = [word(name) for name in ("position", "background") if name in said]
    tail += [form for form in (material_form, owner_form) if form and " " in form]
    order = rng.permutation(len(tail))
    tail_text = "".join(" " + tail[k] for k in order)
    template = _pick(rng, _TEMPLATES)
    text = template.format(np=f"{det} {phrase}", tail=tail_text, be="are" if plural else "is")
    if "mood" in said:
        text += _pick(rng, (", ", ". ")) + word("mood")
    return Caption(text=text, mentioned=said, scene=scene)


def _split_key(split: str) -> int:
    """A stable 32-bit key of a split name (the same on every machine and run)."""
    return int.from_bytes(hashlib.blake2b(split.encode(), digest_size=4).digest(), "little")


class World:
    """The world's generator: scenes, images and captions as pure functions of (seed, split, i).

    Args:
        seed: the world's seed.
        raw_size: side of the rendered images, in pixels.
        mention: probability of mentioning each attribute (defaults: :data:`MENTION`); a
            partial mapping overrides only the attributes it names.
        greyscale: probability that a photo is greyscale.
    """

    def __init__(
        self,
        seed: int = 0,
        raw_size: int = 64,
        mention: Mapping[str, float] | None = None,
        greyscale: float = GREYSCALE,
    ) -> None:
        unknown = set(mention or {}) - set(VALUES)
        if unknown:
            msg = f"mention names unknown attributes {sorted(unknown)}; choose from {list(VALUES)}"
            raise ValueError(msg)
        self.mention = {**MENTION, **(mention or {})}
        for name, p in [*self.mention.items(), ("greyscale", greyscale)]:
            if not 0.0 <= p <= 1.0:
                msg = f"probability {name!r} must be in [0, 1], got {p!r}"
                raise ValueError(msg)
        if raw_size < 16:
            msg = f"raw_size must be >= 16 pixels, got {raw_size!r}"
            raise ValueError(msg)
        self.seed = seed
        self.raw_size = raw_size
        self.greyscale = greyscale

    @property
    def key(self) -> tuple[Any, ...]:
        """Every setting a sample depends on: ``(seed, raw_size, greyscale, mention items)``.

        Two worlds with equal keys make the same scenes, images and captions (the memo of
        :mod:`.sample_memo` keys samples by it).
        """
        return (self.seed, self.raw_size, self.greyscale, tuple(sorted(self.mention.items())))

    def rng(self, split: str, index: int, stream: int) -> np.random.Generator:
        """The random stream ``stream`` of sample ``index`` of ``split``."""
        return np.random.default_rng([self.seed, _split_key(split), index, stream])

    def scene(self, split: str, index: int) -> Scene:
        """The scene of sample ``index`` of ``split``."""
        return sample_scene(self.rng(split, index, 0), self.greyscale)

    def draw(self, scene: Scene, split: str, index: int) -> Image.Image:
        """Render ``scene`` with the image stream of sample ``index`` of ``split``."""
        return Image.fromarray(render(scene, self.rng(split, index, 1), self.raw_size))

    def describe(
        self, scene: Scene, split: str, index: int, force: frozenset[str] = frozenset()
    ) -> Caption:
        """Caption ``scene`` with the caption stream of sample ``index`` of ``split``."""
        return write_caption(scene, self.rng(split, index, 2), self.mention, force)

    def image(self, split: str, index: int) -> Image.Image:
        """The image of sample ``index`` of ``split``."""
        return self.draw(self.scene(split, index), split, index)

    def caption(self, split: str, index: int) -> Caption:
        """The (truthful) caption of sample ``index`` of ``split``."""
        return self.describe(self.scene(split, index), split, index)

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, raw_size={self.raw_size}, greyscale={self.greyscale})"
