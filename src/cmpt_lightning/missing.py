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
A plan may rank groups of samples instead (MM-IMDb's movies): then the rate counts groups and
every member of a group shares its masks.

The ranking above is the ``mcar`` mechanism (missing completely at random). ``label`` and
``score`` (:mod:`~cmpt_lightning.mechanisms`) rank by the label or by a per-sample score instead,
still from the same hash, so counts stay exact and sets nested across rates.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Any

import torch

from .choices import Choice
from .mechanisms import (
    MissingMechanism,
    ScoreDirection,
    ScoreName,
    check_non_negative,
    check_weights,
    label_order,
    label_strata,
    score_order,
    uniform_of,
)
from .models.head import AvailabilityCase

__all__ = [
    "CASE_ORDER",
    "MissingConfig",
    "MissingMechanism",
    "MissingPlan",
    "MissingType",
    "ScoreDirection",
    "ScoreName",
    "availability_counts",
    "case_index",
    "combine_availability",
    "exact_floor",
    "missing_mask",
    "rank_key",
    "ranking",
]

#: The availability cases in the order of :func:`case_index` (and of stacked case logits).
CASE_ORDER = (AvailabilityCase.COMPLETE, AvailabilityCase.IMAGE_ONLY, AvailabilityCase.TEXT_ONLY)


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


def rank_key(key: str, seed: int, epoch: int | None = None) -> bytes:
    """The protocol's sort key of one id: BLAKE2b (8 bytes) of ``"seed:key"``.

    With an epoch (per-epoch redraws) the hashed text is ``"seed:epoch:key"``.

    Args:
        key: the id, as a string.
        seed: the protocol seed.
        epoch: a training epoch, or None for the fixed draw.

    Returns:
        The 8-byte digest; sorting by it (ties by id) gives the protocol's order.
    """
    salt = f"{seed}:" if epoch is None else f"{seed}:{epoch}:"
    return hashlib.blake2b((salt + key).encode(), digest_size=8).digest()


def ranking(
    ids: int | Sequence[int | str], *, seed: int = 0, epoch: int | None = None
) -> list[int]:
    """Positions of ``ids`` in the protocol's order (:func:`rank_key` of each id; ties by id)."""
    keys = _as_ids(ids)
    digests = [rank_key(key, seed, epoch) for key in keys]
    return sorted(range(len(keys)), key=lambda i: (digests[i], keys[i]))


def _group_rows(groups: Sequence[int | str], n: int) -> tuple[list[str], torch.Tensor]:
    """The unique group keys (first-seen order) and, per sample, the position of its group."""
    keys = [str(g) for g in groups]
    if len(keys) != n:
        msg = f"groups must give one group key per id: got {len(keys)} keys for {n} ids"
        raise ValueError(msg)
    unique = list(dict.fromkeys(keys))
    position = {key: i for i, key in enumerate(unique)}
    return unique, torch.tensor([position[key] for key in keys], dtype=torch.long)


class MissingPlan:
    """One ranking of a split's samples, from which the masks of any (rate, type) follow.

    Ranking is the only costly step (a hash per sample); every cell of a test grid over rates
    and types reuses it, and :func:`missing_mask` is this plan used once.

    With ``groups`` the protocol ranks the groups instead (e.g. the movies of MM-IMDb, whose
    plots are separate samples): the rate counts groups, ``floor(n_groups * rate)`` of them
    miss a modality, and every member of a group shares its group's masks.

    Without ``strata`` or ``scores`` the ranking is the ``mcar`` one; with ``strata`` it is the
    ``label`` mechanism's, with ``scores`` the ``score`` mechanism's (see
    :mod:`~cmpt_lightning.mechanisms`). With groups, a group takes its first member's stratum
    and the mean of its members' scores.

    Args:
        ids: a sample count ``n`` or the samples' unique ids (int or str).
        seed: the protocol seed.
        epoch: a training epoch for per-epoch redraws; None for the fixed draw.
        groups: None, or one group key (int or str) per id: rank the unique groups, not the ids.
        strata: ``label`` mechanism: each id's stratum key (its class, or set of classes).
        weights: ``label`` mechanism: relative missing rate per stratum key (others: 1).
        scores: ``score`` mechanism: each id's score (finite numbers).
        strength: ``score`` mechanism: how strongly the score decides (>= 0; 0 is ``mcar``).
        direction: ``score`` mechanism: ``high`` (high scores miss first) or ``low``.
    """

    def __init__(
        self,
        ids: int | Sequence[int | str],
        *,
        seed: int = 0,
        epoch: int | None = None,
        groups: Sequence[int | str] | None = None,
        strata: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        scores: Sequence[float] | None = None,
        strength: float = 1.0,
        direction: ScoreDirection | str = ScoreDirection.HIGH,
    ) -> None:
        self.ids = _as_ids(ids)
        units = self.ids
        self.rows: torch.Tensor | None = None  # per sample, its group's position in `units`
        if groups is not None:
            units, self.rows = _group_rows(groups, len(self.ids))
        self.units = len(units)
        order = ranking(units, seed=seed, epoch=epoch)
        if strata is not None and scores is not None:
            msg = "give strata (the label mechanism) or scores (the score mechanism), not both"
            raise ValueError(msg)
        if strata is not None:
            order = label_order(order, self._per_unit(strata, "strata"), check_weights(weights))
        elif scores is not None:
            values = [float(s) for s in self._per_unit(scores, "scores")]
            if not all(math.isfinite(v) for v in values):
                msg = "scores must be finite numbers (a NaN or infinite score was given)"
                raise ValueError(msg)
            if isinstance(strength, bool) or not 0 <= float(strength) < math.inf:
                msg = f"score strength must be a finite number >= 0, got {strength!r}"
                raise ValueError(msg)
            uniforms = [uniform_of(rank_key(key, seed, epoch)) for key in units]
            order = score_order(
                order, uniforms, values, strength=float(strength), direction=direction
            )
        self.order = torch.tensor(order, dtype=torch.long)

    def _per_unit(self, values: Sequence[Any], name: str) -> list[Any]:
        """One value per id, as one per unit: a group's first member's, or its members' mean."""
        if len(values) != len(self.ids):
            msg = f"{name} must give one value per id: got {len(values)} for {len(self.ids)} ids"
            raise ValueError(msg)
        if self.rows is None:
            return list(values)
        members: list[list[Any]] = [[] for _ in range(self.units)]
        for row, value in zip(self.rows.tolist(), values, strict=True):
            members[row].append(value)
        if name == "scores":
            return [math.fsum(float(v) for v in group) / len(group) for group in members]
        return [group[0] for group in members]

    def __len__(self) -> int:
        return len(self.ids)

    def masks(
        self, rate: float, missing_type: MissingType | str, *, both_ratio: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_present, text_present)`` at this rate and type, in the order of the ids."""
        rate = _check_fraction("missing rate", rate)
        both_ratio = _check_fraction("both_ratio", both_ratio)
        kind = MissingType(missing_type)
        n = self.units  # samples, or groups
        image_present = torch.ones(n, dtype=torch.bool)
        text_present = torch.ones(n, dtype=torch.bool)
        if kind is not MissingType.NONE and n > 0:
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
        if self.rows is not None:  # from groups to their members, shape = [len(ids)]
            return image_present[self.rows], text_present[self.rows]
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
    kind = MissingType(missing_type)
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


def case_index(image_present: torch.Tensor, text_present: torch.Tensor) -> torch.Tensor:
    """Each sample's availability case, as its position in :data:`CASE_ORDER`.

    Args:
        image_present: bool [N].
        text_present: bool [N].

    Returns:
        Long [N]: 0 complete, 1 image only (text missing), 2 text only (image missing), -1 for
        a sample with neither modality.
    """
    img, txt = image_present.bool(), text_present.bool()
    case = torch.where(txt, 2, -1)  # text only, or neither
    case = torch.where(img, torch.where(txt, 0, 1), case)  # complete, or image only
    return case.long()


def availability_counts(image_present: torch.Tensor, text_present: torch.Tensor) -> dict[str, int]:
    """Number of samples per availability case (and with neither modality)."""
    case = case_index(image_present, text_present)
    counts = {name.value: int((case == i).sum()) for i, name in enumerate(CASE_ORDER)}
    counts["neither"] = int((case < 0).sum())
    counts["total"] = int(case.numel())
    return counts


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
        mechanism: what decides which samples miss a modality: ``mcar`` (the hash of (seed,
            id) alone, missing completely at random), ``label`` (per-class rates, see
            ``class_weights``) or ``score`` (a per-sample score, see ``score``); the count
            ``floor(n * rate)`` stays exact and the sets nested across rates (docs/protocol.md).
        class_weights: ``label`` only: each class's relative missing rate, by class name or
            index (classes not given: 1), e.g. ``{dog: 2, cat: 0.5}``; a class's rate is then
            ``rate x weight / mean weight`` until it runs out of samples.
        score: ``score`` only: ``text_length`` (tokens of the text), ``image_brightness``
            (mean of the input image) or ``image_contrast`` (its standard deviation).
        score_direction: ``score`` only: ``high`` (high scores miss more often) or ``low``.
        score_strength: ``score`` only: how strongly the score decides, >= 0 (0: the ``mcar``
            masks; 1: a sample one standard deviation above the mean is e (2.7) times as likely
            to be drawn next as an average one).
    """

    rate: float = 0.0
    type: MissingType | str = "both"
    both_ratio: float = 0.5
    seed: int = 0
    resample_each_epoch: bool = False
    mechanism: MissingMechanism | str = "mcar"
    class_weights: dict[str, float] | None = None
    score: ScoreName | str = "text_length"
    score_direction: ScoreDirection | str = "high"
    score_strength: float = 1.0

    def __post_init__(self) -> None:
        self.rate = _check_fraction("missing rate", self.rate)
        self.both_ratio = _check_fraction("both_ratio", self.both_ratio)
        self.type = MissingType(self.type).value
        self.mechanism = MissingMechanism(self.mechanism).value
        self.score = ScoreName(self.score).value
        self.score_direction = ScoreDirection(self.score_direction).value
        if self.class_weights is not None:
            self.class_weights = check_weights(self.class_weights)
        self.score_strength = check_non_negative("score_strength", self.score_strength)

    @property
    def mechanism_key(self) -> tuple[Any, ...]:
        """The settings that decide the ranking besides the seed (for caching plans)."""
        kind = MissingMechanism(self.mechanism)
        if kind is MissingMechanism.LABEL:
            return (kind.value, tuple(sorted((self.class_weights or {}).items())))
        if kind is MissingMechanism.SCORE:
            return (kind.value, self.score, self.score_direction, self.score_strength)
        return (kind.value,)

    @property
    def missing_type(self) -> MissingType:
        """:attr:`type` as the enum."""
        return MissingType(self.type)

    def plan(
        self,
        ids: int | Sequence[int | str],
        *,
        epoch: int | None = None,
        groups: Sequence[int | str] | None = None,
        labels: Sequence[int] | Sequence[Sequence[float]] | None = None,
        class_names: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
    ) -> MissingPlan:
        """The ranking of ``ids`` under these settings (``epoch`` used only when resampling).

        Args:
            ids: a sample count or the samples' unique ids.
            epoch: the training epoch (used only with ``resample_each_epoch``).
            groups: one group key per id, or None (see :class:`MissingPlan`).
            labels: ``label`` mechanism: one class index or multi-hot row per id.
            class_names: ``label`` mechanism: the class names, in label order.
            scores: ``score`` mechanism: the :attr:`score` of each id.

        Raises:
            ValueError: if the mechanism needs ``labels`` or ``scores`` and they are missing.
        """
        kind = MissingMechanism(self.mechanism)
        extra: dict[str, Any] = {}
        if kind is MissingMechanism.LABEL:
            if labels is None or class_names is None:
                msg = "missing.mechanism 'label' needs the samples' labels and the class names"
                raise ValueError(msg)
            extra["strata"], extra["weights"] = label_strata(
                labels, class_names, self.class_weights
            )
        elif kind is MissingMechanism.SCORE:
            if scores is None:
                msg = f"missing.mechanism 'score' needs each sample's {self.score} score"
                raise ValueError(msg)
            extra = {
                "scores": scores,
                "strength": self.score_strength,
                "direction": self.score_direction,
            }
        epoch = epoch if self.resample_each_epoch else None
        return MissingPlan(ids, seed=self.seed, epoch=epoch, groups=groups, **extra)

    def masks(
        self,
        ids: int | Sequence[int | str],
        *,
        epoch: int | None = None,
        **inputs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_present, text_present)`` of ``ids``: :meth:`plan` (with ``inputs``) used once.

        With ``mcar`` this is :func:`missing_mask` with these settings.
        """
        plan = self.plan(ids, epoch=epoch, **inputs)
        return plan.masks(self.rate, self.type, both_ratio=self.both_ratio)
