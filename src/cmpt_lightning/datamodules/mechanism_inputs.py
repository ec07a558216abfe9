"""What a missingness mechanism reads from a split: its labels, or a score per sample.

The ``label`` and ``score`` mechanisms (:mod:`~cmpt_lightning.mechanisms`) rank samples by
their labels or by a statistic of their inputs. These are read here with one pass over the
split's samples, once per split and setting (the data module caches the ranking), and only when
such a mechanism is chosen: ``mcar`` reads nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..mechanisms import MissingMechanism, ScoreName
from ..missing import MissingConfig

__all__ = ["mechanism_inputs", "sample_score"]


def sample_score(sample: dict[str, Any], score: ScoreName | str) -> float:
    """One sample's score (an absent modality's input is zeros: its score is 0).

    - ``text_length``: the number of non-padding token ids (start and end of text included);
    - ``image_brightness``: the mean of the image tensor as the dataset serves it;
    - ``image_contrast``: its standard deviation.
    """
    name = ScoreName(score)
    if name is ScoreName.TEXT_LENGTH:
        return float((torch.as_tensor(sample["text"]) != 0).sum())
    image = torch.as_tensor(sample["image"]).double()
    if name is ScoreName.IMAGE_BRIGHTNESS:
        return float(image.mean())
    return float(image.std(unbiased=False))


def _label(value: Any) -> int | list[float]:
    label = torch.as_tensor(value)
    if label.ndim == 0:
        return int(label)
    return [float(v) for v in label.flatten().tolist()]


def mechanism_inputs(
    dataset: Dataset, config: MissingConfig, class_names: Sequence[str]
) -> dict[str, Any]:
    """The keyword inputs of :meth:`MissingConfig.plan` that ``config``'s mechanism needs.

    Reads every sample of ``dataset`` once (none for ``mcar``). Random training transforms
    (``augment``) are drawn from a generator seeded with the protocol seed, so the scores, and
    the masks, are the same in every run.

    Args:
        dataset: the split's dataset (samples are dicts with ``label``, ``image``, ``text``).
        config: the split's missing-modality settings.
        class_names: the class names, in label order.

    Returns:
        ``{}`` for ``mcar``; ``{"labels": ..., "class_names": ...}`` for ``label``;
        ``{"scores": ...}`` for ``score``.
    """
    kind = MissingMechanism(config.mechanism)
    if kind is MissingMechanism.MCAR:
        return {}
    size = len(dataset)  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if kind is MissingMechanism.LABEL:
            labels = [_label(dataset[i]["label"]) for i in range(size)]
            return {"labels": labels, "class_names": list(class_names)}
        return {"scores": [sample_score(dataset[i], config.score) for i in range(size)]}
