"""Decision thresholds of multi-label predictions, tuned on validation samples.

A multi-label prediction is ``sigmoid(logit) > t``. With ``fixed`` thresholds ``t = 0.5`` for
every class (the landed behaviour). ``global`` chooses one ``t`` that maximises F1-macro on the
validation samples; ``per_class`` chooses each class's ``t`` to maximise that class's F1 (which
maximises their mean, F1-macro, too). Every cut of the sorted scores is tried, exactly: the
result is the best F1 the samples allow, never worse than at 0.5 on those samples. When several
thresholds reach the best F1, 0.5 is kept if it is one of them, else the one nearest to 0.5 (a
cut between two scores is represented by their midpoint). F1 follows torchmetrics: a class with
no positive and no prediction scores 0, and F1-macro averages over every class.

The thresholds are selected on validation only; test metrics apply them (``*_tuned`` names,
beside the F1 at 0.5, which keeps its name).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from .choices import Choice
from .tasks import Task

__all__ = [
    "THRESHOLDS_KEY",
    "ThresholdMode",
    "check_threshold_mode",
    "checkpoint_thresholds",
    "select_thresholds",
]

#: Scores of two cuts within this distance count as equal (F1 is a ratio of small integers).
_TIE = 1e-9


class ThresholdMode(Choice):
    """How the decision thresholds of a multi-label task are chosen."""

    FIXED = "fixed"
    GLOBAL = "global"
    PER_CLASS = "per_class"


def check_threshold_mode(mode: ThresholdMode | str, task: Task | str) -> ThresholdMode:
    """The mode, refused for a task without multi-label thresholds.

    Raises:
        ValueError: ``global`` or ``per_class`` with a ``multiclass`` or ``binary`` task.
    """
    mode, task = ThresholdMode(mode), Task(task)
    if mode is not ThresholdMode.FIXED and task is not Task.MULTILABEL:
        msg = (
            f"model.init_args.threshold_mode={mode.value!r} tunes multi-label thresholds, but "
            f"the task is {task.value!r}; use threshold_mode: fixed (the default) for it"
        )
        raise ValueError(msg)
    return mode


def _cuts(probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per class, every cut of the scores sorted in descending order.

    Cut ``k`` (0..N) predicts the ``k`` highest scores positive; it is made by any threshold in
    ``[s_{k+1}, s_k)`` (``s`` sorted descending, ``p > t`` is positive).

    Returns:
        ``(f1, lower, upper, valid)``, each [N + 1, C]: the class's F1 at the cut, the bounds of
        its thresholds, and whether the cut is realisable (not inside a run of equal scores,
        nor below a score of exactly 0).
    """
    n, classes = probs.shape
    scores, order = probs.double().sort(dim=0, descending=True)  # shape = [N, C]
    hits = target.double().gather(0, order)
    tp = torch.cat([hits.new_zeros(1, classes), hits.cumsum(0)])  # shape = [N + 1, C]
    predicted = torch.arange(n + 1, dtype=torch.float64).unsqueeze(1)  # shape = [N + 1, 1]
    denom = predicted + hits.sum(0, keepdim=True)  # 2tp + fp + fn = predicted + positives
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    one = scores.new_ones(1, classes)
    upper = torch.cat([torch.maximum(scores[:1], one), scores])  # s_k, cut 0: up to max(1, s_1)
    lower = torch.cat([scores, scores.new_zeros(1, classes)])  # s_{k+1}, cut N: down to 0
    valid = upper > lower
    valid[0] = True  # t = upper bound predicts nothing, even when s_1 = 1
    return f1, lower, upper, valid


def _representative(lower: torch.Tensor, upper: torch.Tensor, first: bool) -> torch.Tensor:
    """0.5 where it lies in ``[lower, upper)``, else the interval's midpoint."""
    inside = (lower <= 0.5) & (upper > 0.5)
    if first:  # cut 0 also takes t = upper (p > upper is nothing)
        inside = inside | ((lower <= 0.5) & (upper >= 0.5))
    return torch.where(inside, torch.full_like(lower, 0.5), (lower + upper) / 2)


def _thresholds_of_cuts(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """The representative threshold of every cut, [N + 1, C]."""
    rest = _representative(lower[1:], upper[1:], first=False)
    top = _representative(lower[:1], upper[:1], first=True)
    return torch.cat([top, rest])


def _best(
    score: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Along dim 0: the float32 threshold of the best valid cut, ties to the one nearest 0.5."""
    threshold = _thresholds_of_cuts(lower, upper)
    score = torch.where(valid, score, torch.full_like(score, -1.0))
    best = score.max(dim=0, keepdim=True).values
    near = torch.where(
        score >= best - _TIE, (threshold - 0.5).abs(), torch.full_like(score, float("inf"))
    )
    pick = near.argmin(dim=0, keepdim=True)
    chosen = threshold.gather(0, pick).squeeze(0).float()
    # a midpoint of two adjacent float32 scores may round up onto the upper one, which would
    # then not be predicted: the lower score itself makes the same cut (p > lower excludes it)
    low, high = lower.gather(0, pick).squeeze(0).float(), upper.gather(0, pick).squeeze(0).float()
    cut_zero = pick.squeeze(0) == 0  # predict nothing: t = upper is fine there
    return torch.where((chosen >= high) & ~cut_zero, low, chosen)


def select_thresholds(
    logits: torch.Tensor, target: torch.Tensor, mode: ThresholdMode | str
) -> torch.Tensor:
    """The decision thresholds (on probabilities) that maximise F1 on these samples.

    Args:
        logits: [N, C] multi-label logits of the validation samples.
        target: [N, C] multi-hot targets.
        mode: ``fixed`` (0.5 everywhere), ``global`` (one threshold, best F1-macro) or
            ``per_class`` (each class's best F1).

    Returns:
        [C] float32 thresholds; 0.5 everywhere for ``fixed`` or no samples.
    """
    mode = ThresholdMode(mode)
    classes = logits.shape[-1]
    if mode is ThresholdMode.FIXED or logits.shape[0] == 0:
        return torch.full((classes,), 0.5)
    probs, target = torch.sigmoid(logits.detach().float().cpu()), (target.cpu() > 0.5)
    if mode is ThresholdMode.PER_CLASS:
        f1, lower, upper, valid = _cuts(probs, target)
        return _best(f1, lower, upper, valid)
    return _global(probs, target).expand(classes).clone()


def _global(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The one threshold of best F1-macro: every cut of all scores pooled, ties nearest 0.5."""
    classes = probs.shape[1]
    f1, _, _, _ = _cuts(probs, target)  # each class's F1 after its k highest scores
    scores, order = probs.double().reshape(-1).sort(descending=True)  # shape = [N * C]
    column = order % classes
    # each pooled score moves its class one cut on: F1-macro changes by that class's step
    rank = probs.double().argsort(dim=0, descending=True).argsort(dim=0).reshape(-1)[order] + 1
    step = (f1[rank, column] - f1[rank - 1, column]) / classes
    start = f1[0].mean().reshape(1)
    macro = torch.cat([start, start + step.cumsum(0)])  # shape = [N * C + 1], cut k of the pool
    upper = torch.cat([torch.maximum(scores[:1], scores.new_ones(1)), scores])
    lower = torch.cat([scores, scores.new_zeros(1)])
    valid = upper > lower
    valid[0] = True
    columns = (t.unsqueeze(1) for t in (macro, lower, upper, valid))  # shape = [N * C + 1, 1]
    return _best(*columns)


#: The module's buffer (and checkpoint key) that holds the tuned thresholds.
THRESHOLDS_KEY = "thresholds"


def checkpoint_thresholds(state: dict[str, Any], mode: ThresholdMode) -> None:
    """Fit a checkpoint's state dict to a module's ``threshold_mode``, in place.

    A module with ``fixed`` thresholds has no buffer for tuned ones: a checkpoint's are dropped
    (they apply only where ``threshold_mode`` asks for them). A tuning module given a
    checkpoint without them (saved with ``fixed``) keeps 0.5 until a validation epoch of a fit
    tunes them, and says so.
    """
    if mode is ThresholdMode.FIXED:
        state.pop(THRESHOLDS_KEY, None)
    elif THRESHOLDS_KEY not in state:
        rank_zero_warn(
            f"the checkpoint has no tuned thresholds (saved with threshold_mode: fixed); "
            f"threshold_mode: {mode.value} uses 0.5 for every class until a validation epoch "
            "of a fit tunes them"
        )
