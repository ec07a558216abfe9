"""The ranking behind the missing-modality protocol: :class:`MissingPlan` and its pieces.

Samples (or groups of samples) are ranked by a BLAKE2b hash of ``(seed, id)``
(:func:`rank_key`), reordered by a mechanism of :mod:`~cmpt_lightning.mechanisms` where one is
chosen, and the first ``floor(n * rate)`` of the ranking miss a modality
(:meth:`MissingPlan.masks`). :mod:`cmpt_lightning.missing` re-exports every public name here,
so ``from cmpt_lightning.missing import MissingPlan`` keeps working.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Any

import torch

from .choices import Choice
from .mechanisms import (
    ScoreDirection,
    check_weights,
    label_order,
    score_order,
    uniform_of,
)

__all__ = [
    "MissingPlan",
    "MissingType",
    "exact_floor",
    "missing_mask",
    "rank_key",
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
