"""Test-time corruptions: partly degraded inputs, as axes of the test grid.

A :class:`Corruption` is a kind and a level, written ``kind:level`` (level ranges in
:data:`LEVEL_RANGES`):

- ``image_noise:L``: Gaussian noise of standard deviation L (pixels in [0, 1]), L in [0, 1];
- ``image_blur:L``: Gaussian blur of standard deviation L pixels, L in [0, 32];
- ``image_occlusion:L``: a square patch over a fraction L of the area, at a seeded position,
  filled with the normalisation mean (a grey; 0 after normalisation), L in [0, 1];
- ``text_dropout:L``: each content token dropped with probability L, L in [0, 1];
- ``text_truncate:L``: the first ceil((1 - L) n) of the n content tokens kept, L in [0, 1].

Images arrive normalised (open_clip's mean and std); noise and blur act in pixel space
[0, 1]: de-normalised with the given mean and std, corrupted, clamped, normalised again.
Texts are open_clip token ids ``[SOT, w_1 .. w_n, EOT, 0 ..]``: the kept content tokens are
packed after SOT, followed by EOT and padding; a text with content keeps at least one token.
Level 0 is the identity for every kind (the input is returned as it is).

The randomness of sample i is a pure function of (seed, the sample's index in its split,
kind, level): a generator per sample, seeded by a BLAKE2b hash of the four, drawing on the
CPU. A sample's corrupted input is therefore the same in any batching, on any device, and
never touches the global RNG. Absent inputs (``*_available`` False) are left as they are.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .choices import Choice

__all__ = [
    "EOT_TOKEN",
    "LEVEL_RANGES",
    "PAD_TOKEN",
    "Corruption",
    "CorruptionKind",
    "corrupt_batch",
    "corrupt_images",
    "corrupt_text",
    "parse_corruptions",
    "sample_generators",
]

#: open_clip's end-of-text id (``SimpleTokenizer.eot_token_id``) and its padding id.
EOT_TOKEN, PAD_TOKEN = 49407, 0


class CorruptionKind(Choice):
    """What a corruption degrades, and how."""

    IMAGE_NOISE = "image_noise"  # Gaussian pixel noise, sd = level
    IMAGE_BLUR = "image_blur"  # Gaussian blur, sigma = level pixels
    IMAGE_OCCLUSION = "image_occlusion"  # a grey square over a fraction level of the area
    TEXT_DROPOUT = "text_dropout"  # each content token dropped with probability level
    TEXT_TRUNCATE = "text_truncate"  # the last fraction level of the content tokens dropped

    @property
    def modality(self) -> str:
        """The input it corrupts: ``image`` or ``text``."""
        return self.value.split("_", 1)[0]


#: Each kind's allowed levels (inclusive) and what a level means, for the error messages.
LEVEL_RANGES: dict[CorruptionKind, tuple[float, float, str]] = {
    CorruptionKind.IMAGE_NOISE: (0.0, 1.0, "the noise's standard deviation, pixels in [0, 1]"),
    CorruptionKind.IMAGE_BLUR: (0.0, 32.0, "the blur's standard deviation in pixels"),
    CorruptionKind.IMAGE_OCCLUSION: (0.0, 1.0, "the fraction of the image area covered"),
    CorruptionKind.TEXT_DROPOUT: (0.0, 1.0, "the probability of dropping a content token"),
    CorruptionKind.TEXT_TRUNCATE: (0.0, 1.0, "the fraction of content tokens cut off the end"),
}


@dataclass(frozen=True)
class Corruption:
    """A corruption kind at a level; ``str()`` gives its canonical spec (``image_noise:0.1``).

    Attributes:
        kind: the kind (a :class:`CorruptionKind` or its name).
        level: its strength, in the kind's range (:data:`LEVEL_RANGES`).
    """

    kind: CorruptionKind
    level: float

    def __post_init__(self) -> None:
        kind = CorruptionKind.parse(self.kind, "corruption kind")
        level = _check_level(kind, self.level, f"{kind.value}:{self.level}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "level", level)

    @classmethod
    def parse(cls, spec: Corruption | str) -> Corruption:
        """The corruption a ``kind:level`` string names (a :class:`Corruption` is returned as is).

        Raises:
            ValueError: for a spec that is not ``kind:level``, an unknown kind, or a level out
                of the kind's range; the message names the spec and what is allowed.
        """
        if isinstance(spec, Corruption):
            return spec
        kind, sep, level = str(spec).strip().partition(":")
        options = CorruptionKind.options()
        if not sep:
            msg = f"corruption {spec!r} must be KIND:LEVEL, e.g. image_noise:0.1; kinds: {options}"
            raise ValueError(msg)
        parsed = CorruptionKind.parse(kind.strip(), f"the kind of corruption {spec!r}")
        try:
            value = float(level)
        except ValueError:
            msg = f"corruption {spec!r}: the level {level!r} is not a number"
            raise ValueError(msg) from None
        return cls(parsed, _check_level(parsed, value, spec))

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.level!r}"


def _check_level(kind: CorruptionKind, level: object, spec: str) -> float:
    """``level`` as a float, if it is in ``kind``'s range; the errors name ``spec``."""
    if isinstance(level, bool) or not isinstance(level, int | float):
        msg = f"corruption {spec!r}: the level must be a number, got {level!r}"
        raise TypeError(msg)
    low, high, meaning = LEVEL_RANGES[kind]
    if not low <= float(level) <= high:  # NaN fails too
        msg = (
            f"corruption {spec!r}: the level ({meaning}) must be in [{low:g}, {high:g}], "
            f"got {level!r}"
        )
        raise ValueError(msg)
    return float(level)


def parse_corruptions(
    specs: Sequence[Corruption | str], setting: str = "test_grid.corruptions"
) -> list[Corruption]:
    """The corruptions of a list of specs, each once.

    Raises:
        TypeError: when ``specs`` is a single string instead of a list.
        ValueError: for a bad spec (see :meth:`Corruption.parse`) or one listed twice.
    """
    if isinstance(specs, str):
        msg = f"{setting} must be a list of KIND:LEVEL specs, e.g. [{specs}], got {specs!r}"
        raise TypeError(msg)
    parsed = [Corruption.parse(spec) for spec in specs]
    seen: set[Corruption] = set()
    for corruption in parsed:
        if corruption in seen:
            msg = f"{setting} lists {corruption} twice; give each corruption once"
            raise ValueError(msg)
        seen.add(corruption)
    return parsed


def sample_generators(
    seed: int, index: torch.Tensor | Sequence[int], corruption: Corruption
) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by a hash of (seed, index, kind, level)."""
    generators = []
    for i in torch.as_tensor(index).reshape(-1).tolist():
        key = f"{int(seed)}|{int(i)}|{corruption.kind.value}|{corruption.level!r}".encode()
        value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        generators.append(torch.Generator().manual_seed(value >> 1))  # 63 bits
    return generators


def _stats(mean: Sequence[float], std: Sequence[float], like: torch.Tensor) -> tuple[Any, Any]:
    shape = (1, -1, 1, 1)
    shift = torch.as_tensor(mean, dtype=torch.float32, device=like.device).view(shape)
    spread = torch.as_tensor(std, dtype=torch.float32, device=like.device).view(shape)
    return shift, spread


def corrupt_images(
    images: torch.Tensor,
    index: torch.Tensor,
    corruption: Corruption,
    *,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """A batch of normalised images [B, C, H, W] with an image corruption applied, on its device.

    Args:
        images: normalised float images (``(pixels - mean) / std``).
        index: [B] the samples' indices in their split (what seeds each one's randomness).
        corruption: an ``image_*`` corruption.
        seed: the protocol seed.
        mean: per-channel normalisation mean (of pixels in [0, 1]).
        std: per-channel normalisation standard deviation.
        present: bool [B], which rows have an image (None: all); the others stay as they are.

    Returns:
        A new tensor, the same shape, dtype and device (``images`` itself at level 0).

    Raises:
        ValueError: for a text corruption.
    """
    kind, level = corruption.kind, corruption.level
    if kind.modality != "image":
        msg = f"corrupt_images got the text corruption {corruption}; use corrupt_text"
        raise ValueError(msg)
    if level == 0.0 or images.shape[0] == 0:
        return images
    batch, _, height, width = images.shape
    if kind is CorruptionKind.IMAGE_OCCLUSION:  # the mean colour is 0 after normalisation
        out = images.clone()
        side = min(round(math.sqrt(level * height * width)), height, width)
        for row, gen in enumerate(sample_generators(seed, index, corruption)):
            top = int(torch.randint(0, height - side + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - side + 1, (1,), generator=gen))
            out[row, :, top : top + side, left : left + side] = 0.0
    else:
        shift, spread = _stats(mean, std, images)
        pixels = images.float() * spread + shift  # shape = [B, C, H, W], in [0, 1]
        if kind is CorruptionKind.IMAGE_NOISE:
            noise = torch.stack(
                [
                    torch.randn(images.shape[1:], generator=gen)
                    for gen in sample_generators(seed, index, corruption)
                ]
            )  # shape = [B, C, H, W], drawn on the CPU
            pixels = pixels + level * noise.to(pixels.device)
        else:
            from torchvision.transforms.v2 import functional as tvf

            # reflect padding needs kernel // 2 < the image side
            radius = min(math.ceil(3 * level), height - 1, width - 1)
            pixels = tvf.gaussian_blur(pixels, [2 * radius + 1] * 2, [level, level])
        out = ((pixels.clamp(0.0, 1.0) - shift) / spread).to(images.dtype)
    if present is not None:
        keep = present.to(device=images.device, dtype=torch.bool).view(batch, 1, 1, 1)
        out = torch.where(keep, out, images)
    return out


def corrupt_text(
    tokens: torch.Tensor,
    index: torch.Tensor,
    corruption: Corruption,
    *,
    seed: int,
    present: torch.Tensor | None = None,
    eot: int = EOT_TOKEN,
    pad: int = PAD_TOKEN,
) -> torch.Tensor:
    """A batch of token ids [B, L] with a text corruption applied, on its device.

    Content tokens are those between the first token (SOT) and the first ``eot``; the kept
    ones are packed after SOT, then ``eot``, then ``pad``. A text with content keeps at least
    one token (dropout keeps the one it was least likely to drop). Rows without ``eot``,
    without content or not ``present`` stay as they are.

    Args:
        tokens: int64 [B, L] ids of open_clip's tokenizer.
        index: [B] the samples' indices in their split (what seeds each one's randomness).
        corruption: a ``text_*`` corruption.
        seed: the protocol seed.
        present: bool [B], which rows have a text (None: all).
        eot: the end-of-text id.
        pad: the padding id.

    Returns:
        A new tensor, the same shape, dtype and device (``tokens`` itself at level 0).

    Raises:
        ValueError: for an image corruption.
    """
    kind, level = corruption.kind, corruption.level
    if kind.modality != "text":
        msg = f"corrupt_text got the image corruption {corruption}; use corrupt_images"
        raise ValueError(msg)
    if level == 0.0 or tokens.shape[0] == 0:
        return tokens
    out = tokens.detach().cpu().clone()
    rows = [bool(p) for p in present.reshape(-1).tolist()] if present is not None else None
    generators = sample_generators(seed, index, corruption)
    for row in range(out.shape[0]):
        ends = (out[row] == eot).nonzero()
        if (rows is not None and not rows[row]) or len(ends) == 0 or int(ends[0]) < 2:
            continue
        end = int(ends[0])
        content = out[row, 1:end]  # shape = [n]
        if kind is CorruptionKind.TEXT_DROPOUT:
            draw = torch.rand(content.shape[0], generator=generators[row])
            keep = draw >= level
            if not bool(keep.any()):
                keep[int(draw.argmax())] = True
        else:  # the 1e-9: (1 - 0.7) * 10 is 3.0000000000000004, whose ceil would be 4
            count = max(1, math.ceil((1.0 - level) * content.shape[0] - 1e-9))
            keep = torch.arange(content.shape[0]) < count
        kept = content[keep].clone()
        out[row, 1:] = pad
        out[row, 1 : 1 + kept.shape[0]] = kept
        out[row, 1 + kept.shape[0]] = eot
    return out.to(tokens.device)


def corrupt_batch(
    batch: Mapping[str, Any],
    corruption: Corruption,
    *,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """A copy of a collated batch with its images or texts corrupted (the rest shared).

    Args:
        batch: ``image``, ``text``, ``index`` and the availability masks
            (``image_available`` / ``text_available``, defaulting to ``*_present``).
        corruption: the corruption.
        seed: the protocol seed.
        mean: per-channel normalisation mean of the images.
        std: per-channel normalisation standard deviation.

    Returns:
        The new batch.
    """
    out = dict(batch)
    if corruption.kind.modality == "image":
        present = batch.get("image_available", batch.get("image_present"))
        out["image"] = corrupt_images(
            batch["image"],
            batch["index"],
            corruption,
            seed=seed,
            mean=mean,
            std=std,
            present=present,
        )
    else:
        present = batch.get("text_available", batch.get("text_present"))
        out["text"] = corrupt_text(
            batch["text"], batch["index"], corruption, seed=seed, present=present
        )
    return out
