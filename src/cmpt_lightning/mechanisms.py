"""Missingness mechanisms: the order in which the protocol takes samples, beyond MCAR.

The protocol (:mod:`~cmpt_lightning.missing`) takes the first ``floor(n * rate)`` samples of one
ranking, so counts are exact and sets are nested across rates for any ranking. A mechanism only
changes the ranking:

- ``mcar`` (missing completely at random, the default): by the BLAKE2b hash of (seed, id).
- ``label`` (missing at random given the label): the samples of each stratum (a class; for
  multi-label data, a set of classes) keep their ``mcar`` order among themselves and the strata
  are interleaved so that, at every prefix, stratum s holds as close as possible to a share
  ``n_s w_s / sum_t n_t w_t`` of the missing samples (Sainte-Laguë apportionment: the k-th
  sample of s, k = 0, 1, ..., gets the priority ``(k + 1/2) / (n_s w_s)``, in exact rational
  arithmetic). So each class's missing rate is ``rate x w_s / mean weight`` (to within one
  sample) until a class runs out, and the overall rate stays exact. A weight of 0 puts the
  class after all others.
- ``score`` (missing not at random: it depends on the sample itself): weighted sampling without
  replacement (Efraimidis and Spirakis, 2006), seeded by the hash: sample i gets the key
  ``E_i exp(-strength * z_i)``, where ``E_i = -log(1 - u_i)`` is an exponential variate from its
  hash ``u_i`` and ``z_i`` its standardised score (negated for ``direction: low``). Strength 0
  gives exactly the ``mcar`` ranking; large strengths take the highest scores first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .choices import Choice

__all__ = [
    "MissingMechanism",
    "ScoreDirection",
    "ScoreName",
    "check_non_negative",
    "check_weights",
    "label_order",
    "label_strata",
    "score_order",
    "uniform_of",
]


class MissingMechanism(Choice):
    """What decides which samples miss a modality."""

    MCAR = "mcar"  # the hash of (seed, id) alone
    LABEL = "label"  # per-class rates (class_weights)
    SCORE = "score"  # a per-sample score (text length, image statistics)


class ScoreName(Choice):
    """The per-sample score of the ``score`` mechanism."""

    TEXT_LENGTH = "text_length"  # tokens of the text, start and end of text included
    IMAGE_BRIGHTNESS = "image_brightness"  # mean of the model's input image tensor
    IMAGE_CONTRAST = "image_contrast"  # standard deviation of the model's input image tensor


class ScoreDirection(Choice):
    """Which samples the ``score`` mechanism takes first."""

    HIGH = "high"  # high scores miss more often
    LOW = "low"  # low scores miss more often


def uniform_of(digest: bytes) -> float:
    """The hash as a number in (0, 1), non-decreasing with the digest (bytes read big-endian)."""
    value = (int.from_bytes(digest, "big") + 0.5) / 2.0 ** (8 * len(digest))
    return min(value, _BELOW_ONE)  # float rounding may reach 1.0 for the largest digests


_BELOW_ONE = math.nextafter(1.0, 0.0)


def _exact(value: float) -> Fraction:
    """``value`` as written (``0.1`` is 1/10), for exact priorities."""
    return Fraction(Decimal(repr(float(value))))


def check_non_negative(name: str, value: Any) -> float:
    """``value`` as a float, refused unless it is a finite number >= 0 (``name`` says whose).

    Raises:
        TypeError: if ``value`` is not a number (a bool is not one).
        ValueError: if it is negative, infinite or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number >= 0, got {value!r}"
        raise TypeError(msg)
    if not 0 <= float(value) < math.inf:
        msg = f"{name} must be a finite number >= 0, got {value!r}"
        raise ValueError(msg)
    return float(value)


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The ``label`` mechanism's class or stratum weights, checked: finite numbers >= 0."""
    return {
        str(key): check_non_negative(f"class weight of {key!r}", value)
        for key, value in (weights or {}).items()
    }


def label_order(
    base: Sequence[int], strata: Sequence[str], weights: Mapping[str, float]
) -> list[int]:
    """The ``label`` ranking: strata interleaved in proportion to ``size x weight``.

    Args:
        base: the ``mcar`` ranking (positions of the units, first taken first).
        strata: each unit's stratum key, in the order of the units.
        weights: each stratum's relative missing rate (>= 0); a key not given weighs 1.

    Returns:
        The positions of the units, first taken first.
    """
    sizes: dict[str, int] = {}
    for stratum in strata:
        sizes[stratum] = sizes.get(stratum, 0) + 1
    seen: dict[str, int] = {}
    keyed: list[tuple[int, Fraction, int, int]] = []  # (after all?, priority, base rank, unit)
    for rank, unit in enumerate(base):
        stratum = strata[unit]
        k = seen.get(stratum, 0)
        seen[stratum] = k + 1
        weight = _exact(weights.get(stratum, 1.0))
        if weight == 0:
            keyed.append((1, Fraction(0), rank, unit))  # weight 0: after every weighted sample
        else:
            keyed.append((0, Fraction(2 * k + 1, 2 * sizes[stratum]) / weight, rank, unit))
    keyed.sort()
    return [unit for *_, unit in keyed]


def score_order(
    base: Sequence[int],
    uniforms: Sequence[float],
    scores: Sequence[float],
    *,
    strength: float,
    direction: ScoreDirection | str = ScoreDirection.HIGH,
) -> list[int]:
    """The ``score`` ranking: seeded weighted sampling without replacement, by score.

    Args:
        base: the ``mcar`` ranking (ties are broken in its order).
        uniforms: each unit's hash as a number in (0, 1) (:func:`uniform_of`).
        scores: each unit's score (finite).
        strength: how strongly the score decides (>= 0; 0: the ``mcar`` ranking).
        direction: ``high`` (high scores first) or ``low``.

    Returns:
        The positions of the units, first taken first.
    """
    n = len(scores)
    sign = 1.0 if ScoreDirection(direction) is ScoreDirection.HIGH else -1.0
    mean = math.fsum(scores) / n if n else 0.0
    var = math.fsum((s - mean) ** 2 for s in scores) / n if n else 0.0
    std = math.sqrt(var)
    position = {unit: rank for rank, unit in enumerate(base)}

    def key(unit: int) -> tuple[float, int]:
        z = 0.0 if std == 0 else sign * (scores[unit] - mean) / std
        exponential = -math.log1p(-uniforms[unit])  # increasing in the hash
        return (math.log(exponential) - strength * z, position[unit])

    return sorted(range(n), key=key)


def label_strata(
    labels: Sequence[int] | Sequence[Sequence[float]],
    class_names: Sequence[str],
    class_weights: Mapping[str, float] | None,
) -> tuple[list[str], dict[str, float]]:
    """The ``label`` mechanism's strata and their weights, from the samples' labels.

    Args:
        labels: one class index per sample (multiclass, binary), or one multi-hot row per
            sample (multi-label: the stratum is the set of its classes, ``a+b``, or ``(none)``).
        class_names: the class names, in label order.
        class_weights: relative missing rate per class, keyed by class name or index (as a
            string); classes not given weigh 1. A multi-label stratum weighs the mean of its
            classes' weights (1 for ``(none)``).

    Returns:
        ``(strata, weights)``: one stratum key per sample, and the weight of each stratum.

    Raises:
        ValueError: if ``class_weights`` names a class the data does not have.
    """
    names = [str(name) for name in class_names]
    by_key: dict[str, float] = {}
    for key, value in (class_weights or {}).items():
        key = str(key)
        if key in names:
            by_key[key] = value
        elif key.isdigit() and int(key) < len(names):
            by_key[names[int(key)]] = value
        else:
            shown = names if len(names) <= 20 else [*names[:20], "..."]
            msg = (
                f"class_weights names the class {key!r}, which the data does not have; use "
                f"class names or indices 0..{len(names) - 1}: {shown}"
            )
            raise ValueError(msg)
    strata: list[str] = []
    weights: dict[str, float] = {}
    for label in labels:
        if isinstance(label, int):
            classes = [names[label]]
            stratum = classes[0]
        else:
            classes = [names[c] for c, v in enumerate(label) if float(v) > 0.5]
            stratum = "+".join(classes) if classes else "(none)"
        if stratum not in weights:
            values = [by_key.get(name, 1.0) for name in classes]
            weights[stratum] = math.fsum(values) / len(values) if values else 1.0
        strata.append(stratum)
    return strata, weights
