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

The ranking itself lives in :mod:`~cmpt_lightning.missing_plan` (re-exported here). Instead of
simulating, ``MissingConfig.masks_file`` takes a split's masks from a masks file
(:mod:`~cmpt_lightning.mask_files`, ``cmpt data masks export`` / ``import``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .mechanisms import (
    MissingMechanism,
    ScoreDirection,
    ScoreName,
    check_non_negative,
    check_weights,
    label_strata,
)
from .missing_plan import (
    MissingPlan,
    MissingType,
    _check_fraction,
    exact_floor,
    missing_mask,
    rank_key,
    ranking,
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
        masks_file: a masks file (``.csv`` or ``.json``, written by ``cmpt data masks export``
            or ``import``; docs/protocol.md) whose rows for this phase's splits replace the
            simulated masks: every sample of the split must be in it (ids of the file that
            are not in the split are counted and reported). The settings above are then not
            used for the masks (a test grid still simulates its own rates from ``seed``).
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
    masks_file: str | None = None

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
        if self.masks_file is not None:
            self.masks_file = str(self.masks_file)
            if self.resample_each_epoch:
                msg = (
                    f"missing.masks_file {self.masks_file!r} is one fixed draw: it cannot be "
                    "redrawn each epoch; set resample_each_epoch to false, or masks_file to null"
                )
                raise ValueError(msg)

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
