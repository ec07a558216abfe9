"""The missing-modality protocol: which samples lose which modality, exactly and reproducibly.

Samples are ranked by a BLAKE2b hash of ``(seed, sample id)`` (and the epoch, for per-epoch
redraws). At rate r the first ``m = floor(n * r)`` samples of the ranking miss a modality:

- ``text``: those m lose their text; ``image``: they lose their image;
- ``both``: walking the same ranking, the k-th missing sample (k = 0, 1, ...) loses its image
  when ``floor((k + 1) * both_ratio) > floor(k * both_ratio)``, else its text, so exactly
  ``floor(m * both_ratio)`` lose the image; no sample loses both.

Because the sets are prefixes of one ranking, counts are exact and sets are nested across rates
(a sample missing at 0.5 is missing at 0.7, and keeps which modality it lacks). ``floor`` is
computed in decimal arithmetic from the rate as written, so ``0.29 x 100`` is 29, not 28.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction

import torch

from .choices import Choice

__all__ = [
    "MissingConfig",
    "MissingPlan",
    "MissingType",
    "SweepConfig",
    "availability_counts",
    "combine_availability",
    "exact_floor",
    "missing_mask",
    "ranking",
]


class MissingType(Choice):
    """Which modality the missing samples lose."""

    NONE = "none"
    TEXT = "text"
    IMAGE = "image"
    BOTH = "both"  # a mix: some lose the image, the others the text


def exact_floor(n: int, fraction: float) -> int:
    """``floor(n * fraction)`` without float error (``exact_floor(100, 0.29) == 29``)."""
    product = Decimal(repr(float(fraction))) * n
    return int(product.to_integral_value(rounding=ROUND_FLOOR))


def _loses_image(m: int, both_ratio: float) -> torch.Tensor:
    """Bool [m]: whether the k-th missing sample loses its image under ``both``.

    ``floor((k + 1) r) > floor(k r)``, in exact integer arithmetic on ``r = p / q`` as written.
    """
    ratio = Fraction(Decimal(repr(float(both_ratio))))
    k = torch.arange(m + 1, dtype=torch.int64)
    floors = (k * ratio.numerator) // ratio.denominator  # floor(k * r) for k = 0..m
    return floors[1:] > floors[:-1]


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number in [0, 1], got {value!r}"
        raise TypeError(msg)
    if not 0.0 <= float(value) <= 1.0:
        msg = f"{name} must be in [0, 1], got {value!r}"
        raise ValueError(msg)
    return float(value)


def _as_ids(ids: int | Sequence[int | str]) -> list[str]:
    if isinstance(ids, bool):
        msg = f"ids must be a sample count or a sequence of ids, got {ids!r}"
        raise TypeError(msg)
    if isinstance(ids, int):
        if ids < 0:
            msg = f"the sample count must be >= 0, got {ids!r}"
            raise ValueError(msg)
        return [str(i) for i in range(ids)]
    keys = [str(i) for i in ids]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dups = sorted({k for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]
        msg = f"sample ids must be unique; repeated: {dups[:10]}"
        raise ValueError(msg)
    return keys


def ranking(
    ids: int | Sequence[int | str], *, seed: int = 0, epoch: int | None = None
) -> list[int]:
    """Positions of ``ids`` in the protocol's order (hash of seed, epoch and id; ties by id)."""
    keys = _as_ids(ids)
    salt = f"{seed}:" if epoch is None else f"{seed}:{epoch}:"

    def digest(key: str) -> bytes:
        return hashlib.blake2b((salt + key).encode(), digest_size=8).digest()

    return sorted(range(len(keys)), key=lambda i: (digest(keys[i]), keys[i]))


def _parse_type(missing_type: MissingType | str) -> MissingType:
    try:
        return MissingType(missing_type)
    except ValueError:
        options = ", ".join(t.value for t in MissingType)
        msg = f"unknown missing type {missing_type!r}; choose one of: {options}"
        raise ValueError(msg) from None


class MissingPlan:
    """One ranking of a split's samples, from which the masks of any (rate, type) follow.

    Ranking is the only costly step (a hash per sample); every cell of a sweep over rates and
    types reuses it, and :func:`missing_mask` is this plan used once.

    Args:
        ids: a sample count ``n`` or the samples' unique ids (int or str).
        seed: the protocol seed.
        epoch: a training epoch for per-epoch redraws; None for the fixed draw.
    """

    def __init__(
        self, ids: int | Sequence[int | str], *, seed: int = 0, epoch: int | None = None
    ) -> None:
        self.ids = _as_ids(ids)
        self.order = torch.tensor(ranking(self.ids, seed=seed, epoch=epoch), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def masks(
        self, rate: float, missing_type: MissingType | str, *, both_ratio: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_present, text_present)`` at this rate and type, in the order of the ids."""
        rate = _check_fraction("missing rate", rate)
        both_ratio = _check_fraction("both_ratio", both_ratio)
        kind = _parse_type(missing_type)
        n = len(self.ids)
        image_present = torch.ones(n, dtype=torch.bool)
        text_present = torch.ones(n, dtype=torch.bool)
        if kind is MissingType.NONE or n == 0:
            return image_present, text_present
        m = exact_floor(n, rate)
        chosen = self.order[:m]
        if kind is MissingType.TEXT:
            text_present[chosen] = False
        elif kind is MissingType.IMAGE:
            image_present[chosen] = False
        else:
            loses_image = _loses_image(m, both_ratio)
            image_present[chosen[loses_image]] = False
            text_present[chosen[~loses_image]] = False
        return image_present, text_present


def missing_mask(
    ids: int | Sequence[int | str],
    rate: float,
    missing_type: MissingType | str,
    *,
    both_ratio: float = 0.5,
    seed: int = 0,
    epoch: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples keep their image and text under a missing rate and type.

    Args:
        ids: a sample count ``n`` (ids ``0..n-1``) or the samples' ids (int or str, unique).
        rate: fraction of samples that miss a modality, in [0, 1].
        missing_type: ``none``, ``text``, ``image`` or ``both``.
        both_ratio: with ``both``, the fraction of missing samples that lose the image.
        seed: the protocol seed.
        epoch: a training epoch for per-epoch redraws; None for the fixed draw.

    Returns:
        ``(image_present, text_present)``, two bool tensors in the order of ``ids``.

    Example:
        >>> img, txt = missing_mask(10, 0.3, "text", seed=0)
        >>> int((~txt).sum()), int((~img).sum())
        (3, 0)
    """
    rate = _check_fraction("missing rate", rate)
    both_ratio = _check_fraction("both_ratio", both_ratio)
    kind = _parse_type(missing_type)
    plan = MissingPlan(ids, seed=seed, epoch=epoch)
    return plan.masks(rate, kind, both_ratio=both_ratio)


def combine_availability(
    real_image: torch.Tensor,
    real_text: torch.Tensor,
    keep_image: torch.Tensor,
    keep_text: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the model may use: the data's availability AND the protocol's masks.

    The protocol never removes the last modality of a sample: a sample that really has only
    one modality keeps it even where the protocol would drop it (such samples are returned in
    ``spared`` so that they can be counted and reported, never silently).

    Returns:
        ``(image_present, text_present, spared)``, bool tensors of the inputs' shape.
    """
    image = real_image & keep_image
    text = real_text & keep_text
    spared = ~(image | text) & (real_image | real_text)
    image = image | (spared & real_image)
    text = text | (spared & real_text)
    return image, text, spared


def availability_counts(image_present: torch.Tensor, text_present: torch.Tensor) -> dict[str, int]:
    """Number of samples per availability case (and with neither modality)."""
    img, txt = image_present, text_present
    return {
        "complete": int((img & txt).sum()),
        "image_only": int((img & ~txt).sum()),
        "text_only": int((~img & txt).sum()),
        "neither": int((~img & ~txt).sum()),
        "total": int(img.numel()),
    }


@dataclass
class MissingConfig:
    """Simulated missing modalities for one phase (training, or evaluation).

    Attributes:
        rate: fraction of samples that miss a modality, in [0, 1].
        type: ``none``, ``text``, ``image`` or ``both`` (a mix; see ``both_ratio``).
        both_ratio: with ``both``, the fraction of the missing samples that lose the image.
        seed: the protocol seed; masks are a pure function of (seed, sample id).
        resample_each_epoch: training only: redraw the masks every epoch from
            (seed, epoch, id) instead of keeping one draw.
    """

    rate: float = 0.0
    type: MissingType | str = "both"
    both_ratio: float = 0.5
    seed: int = 0
    resample_each_epoch: bool = False

    def __post_init__(self) -> None:
        self.rate = _check_fraction("missing rate", self.rate)
        self.both_ratio = _check_fraction("both_ratio", self.both_ratio)
        self.type = _parse_type(self.type).value

    @property
    def missing_type(self) -> MissingType:
        """:attr:`type` as the enum."""
        return MissingType(self.type)

    def masks(
        self, ids: int | Sequence[int | str], *, epoch: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`missing_mask` with these settings (``epoch`` used only when resampling)."""
        return missing_mask(
            ids,
            self.rate,
            self.type,
            both_ratio=self.both_ratio,
            seed=self.seed,
            epoch=epoch if self.resample_each_epoch else None,
        )


#: The sweep's default rates: 0, 0.1, ..., 1.0.
DEFAULT_RATES = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class SweepConfig:
    """A grid of test-time (missing rate, missing type) cells, evaluated from one pass.

    Attributes:
        rates: missing rates to evaluate, each in [0, 1].
        types: missing types to evaluate (``text``, ``image``, ``both``, ``none``).
        both_ratio: with ``both``, the fraction of missing samples that lose the image; None
            takes the data module's ``eval_missing.both_ratio``.
        seed: the protocol seed; None takes the data module's ``eval_missing.seed``.
    """

    rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    types: list[str] = field(default_factory=lambda: ["text", "image", "both"])
    both_ratio: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.rates:
            msg = "sweep.rates is empty; give at least one missing rate, e.g. [0, 0.5, 1]"
            raise ValueError(msg)
        if not self.types:
            msg = "sweep.types is empty; give at least one of text, image, both"
            raise ValueError(msg)
        self.rates = [_check_fraction("sweep rate", r) for r in self.rates]
        self.types = [_parse_type(t).value for t in self.types]
        if self.both_ratio is not None:
            self.both_ratio = _check_fraction("sweep.both_ratio", self.both_ratio)
