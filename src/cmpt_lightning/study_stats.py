"""The statistics of ``cmpt study``: bootstrap intervals over seeds, paired differences, verdicts.

Every number of a study is a mean over replicates (a replicate is one combination of the
study's seed keys, e.g. ``seed_everything`` x the world's ``data.init_args.seed``). Its 95%
confidence interval is the percentile bootstrap of that mean: :data:`RESAMPLES` resamples of the
replicates with replacement, drawn by a ``numpy`` Generator seeded with :data:`BOOTSTRAP_SEED`
(a fresh one for every interval, so that an interval does not depend on which were computed
before it). Two methods are compared on the replicates they share, one paired difference per
replicate; the verdict is ``win`` when the difference's interval lies above 0, ``loss`` when it
lies below, ``tie`` when it contains 0, and ``n/a`` with fewer than two pairs (no interval).
Pure python and numpy: nothing here trains or reads files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .choices import Choice

__all__ = [
    "BOOTSTRAP_SEED",
    "LEVEL",
    "RESAMPLES",
    "Estimate",
    "PairingWarning",
    "Verdict",
    "bootstrap_ci",
    "compare",
    "estimate",
    "pair_values",
    "verdict",
]

#: Bootstrap resamples of every interval.
RESAMPLES = 10_000
#: The seed of the numpy Generator of every bootstrap (``np.random.default_rng(BOOTSTRAP_SEED)``).
BOOTSTRAP_SEED = 0
#: The confidence level of every interval.
LEVEL = 0.95

_K = TypeVar("_K", bound=Hashable)


class Verdict(Choice):
    """How CMPT fares against another method at the study's confidence level."""

    WIN = "win"  # the paired difference's interval lies above 0
    LOSS = "loss"  # ... below 0
    TIE = "tie"  # ... contains 0
    NA = "n/a"  # fewer than two pairs: no interval


class PairingWarning(UserWarning):
    """Two methods were not run on the same replicates; only the shared ones are compared."""


@dataclass(frozen=True)
class Estimate:
    """A mean over replicates with its bootstrap confidence interval.

    Attributes:
        mean: the mean (nan without values).
        low: the interval's lower end (nan with fewer than two values).
        high: the interval's upper end (nan with fewer than two values).
        n: the number of values.
    """

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        """``mean [low, high]`` (``mean`` alone without an interval, ``-`` without a mean)."""
        if math.isnan(self.mean):
            return "-"
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values``.

    Args:
        values: one value per replicate (no nan).
        resamples: how many resamples (with replacement, of the same size) to draw.
        level: the confidence level, in (0, 1).
        seed: the seed of the numpy Generator that draws the resamples.

    Returns:
        (low, high); (nan, nan) with fewer than two values.

    Raises:
        ValueError: for a level outside (0, 1), fewer than one resample, or a nan value.
    """
    if not 0.0 < level < 1.0:
        msg = f"confidence level must be in (0, 1), got {level!r}"
        raise ValueError(msg)
    if resamples < 1:
        msg = f"resamples must be at least 1, got {resamples!r}"
        raise ValueError(msg)
    data = np.asarray(values, dtype=np.float64)
    if np.isnan(data).any():
        msg = f"bootstrap_ci got nan among {data.tolist()}; drop the missing values first"
        raise ValueError(msg)
    if data.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    index = rng.integers(0, data.size, size=(resamples, data.size))  # [resamples, n]
    means = data[index].mean(axis=1)  # [resamples]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def estimate(
    values: Iterable[float],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """The mean of ``values`` (nan ones dropped) with its bootstrap interval.

    Args:
        values: one value per replicate.
        resamples: the bootstrap's resamples (see :func:`bootstrap_ci`).
        level: its confidence level.
        seed: the seed of its numpy Generator.
    """
    kept = [float(v) for v in values if not math.isnan(float(v))]
    if not kept:
        return Estimate(math.nan, math.nan, math.nan, 0)
    low, high = bootstrap_ci(kept, resamples=resamples, level=level, seed=seed)
    return Estimate(math.fsum(kept) / len(kept), low, high, len(kept))


def verdict(low: float, high: float) -> Verdict:
    """``win`` above 0, ``loss`` below 0, ``tie`` across 0, ``n/a`` without an interval."""
    if math.isnan(low) or math.isnan(high):
        return Verdict.NA
    if low > 0.0:
        return Verdict.WIN
    if high < 0.0:
        return Verdict.LOSS
    return Verdict.TIE


def pair_values(
    ours: Mapping[_K, float],
    theirs: Mapping[_K, float],
    *,
    names: tuple[str, str] = ("cmpt", "the other method"),
    strict: bool = False,
) -> tuple[list[_K], list[float]]:
    """The replicates both methods have, and the paired differences ``ours - theirs``.

    Replicates where either value is nan are dropped.

    Args:
        ours: replicate (e.g. a tuple of seed values) -> value, of the reference method.
        theirs: the same for the method it is compared with.
        names: the two methods' names, for the message.
        strict: raise instead of warning when the replicates differ.

    Returns:
        The shared replicates (in the order of ``ours``) and their differences.

    Raises:
        ValueError: with ``strict``, when a replicate is in one mapping only.

    Warns:
        PairingWarning: without ``strict``, when a replicate is in one mapping only; the
            comparison then uses the shared ones.
    """
    only_ours = [k for k in ours if k not in theirs]
    only_theirs = [k for k in theirs if k not in ours]
    if only_ours or only_theirs:
        msg = (
            f"{names[0]} and {names[1]} were not run on the same seeds: only {names[0]} has "
            f"{only_ours or 'none'}, only {names[1]} has {only_theirs or 'none'}; comparing "
            "the shared seeds only (finish or re-run the missing cells to pair them all)"
        )
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, PairingWarning, stacklevel=2)
    keys, diffs = [], []
    for key, value in ours.items():
        if key in theirs and not math.isnan(value) and not math.isnan(theirs[key]):
            keys.append(key)
            diffs.append(float(value) - float(theirs[key]))
    return keys, diffs


def compare(
    ours: Mapping[_K, float],
    theirs: Mapping[_K, float],
    *,
    names: tuple[str, str] = ("cmpt", "the other method"),
    strict: bool = False,
) -> tuple[Estimate, Verdict]:
    """The mean paired difference ``ours - theirs``, its bootstrap interval and the verdict.

    Args:
        ours: replicate -> value, of the reference method.
        theirs: the same for the method it is compared with.
        names: the two methods' names, for the pairing message.
        strict: raise instead of warning when the replicates differ (see :func:`pair_values`).
    """
    _, diffs = pair_values(ours, theirs, names=names, strict=strict)
    difference = estimate(diffs)
    return difference, verdict(difference.low, difference.high)
