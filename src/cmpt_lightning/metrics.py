"""Task metrics, computed exactly over a whole evaluation set, overall and per availability case.

Evaluation collects per-sample results keyed by their dataset index; under DDP the pieces of
every rank are gathered and de-duplicated by index (``DistributedSampler`` pads the last batch
with repeated samples), so the metrics equal those of a single process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchmetrics
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    multiclass_accuracy,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_f1_score,
)

from .missing import CASE_ORDER, case_index
from .models.head import AvailabilityCase
from .tasks import Task

__all__ = ["EvalCollector", "availability_case", "compute_metrics", "train_metric"]


def _f1_samples(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sample-averaged F1 of bool multi-label predictions."""
    true = target > 0.5
    tp = (pred & true).sum(-1).float()
    denom = pred.sum(-1).float() + true.sum(-1).float()
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(tp))
    return f1.mean()


def _ranking_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Threshold-free multi-label metrics: ``map`` and ``auroc_macro``.

    Each is the mean over the classes where it is defined (AP: a positive sample; AUROC: a
    positive and a negative), NaN when there is none (torchmetrics would count such a class
    as 0).
    """
    positive = labels.sum(0)
    out = {}
    for name, defined, fn in (
        ("map", positive > 0, multilabel_average_precision),
        ("auroc_macro", (positive > 0) & (positive < labels.shape[0]), multilabel_auroc),
    ):
        columns = defined.nonzero().flatten()
        if columns.numel() == 0:
            out[name] = float("nan")
            continue
        p, y = probs[:, columns], labels[:, columns]
        if columns.numel() == 1:  # torchmetrics needs >= 2 labels: the class twice, same mean
            p, y = p.repeat(1, 2), y.repeat(1, 2)
        out[name] = float(fn(p, y, num_labels=p.shape[1], average="macro"))
    return out


def _f1_scores(
    pred: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, sample_pred: torch.Tensor
) -> list[float]:
    """F1 macro, micro, weighted of bool ``pred`` [N, C]; sample-averaged of ``sample_pred``."""
    out = []
    num_labels = pred.shape[1]
    if num_labels == 1:  # torchmetrics needs >= 2 labels; the averages are the one class's
        pred, labels = pred.repeat(1, 2), labels.repeat(1, 2)
        num_labels = 2
    for avg in ("macro", "micro", "weighted"):
        out.append(
            float(multilabel_f1_score(pred.long(), labels, num_labels=num_labels, average=avg))
        )
    return [*out, float(_f1_samples(sample_pred, target))]


def compute_metrics(
    task: Task | str,
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    thresholds: torch.Tensor | None = None,
) -> dict[str, float]:
    """The task's metrics over a set of samples.

    Multiclass: ``acc`` (top-1, micro). Multilabel: ``f1_macro``, ``f1_micro``,
    ``f1_weighted``, ``f1_samples`` (a class is predicted when its probability is > 0.5), the
    threshold-free ``map`` (macro average precision) and ``auroc_macro``, and with
    ``thresholds`` the same four F1 at those thresholds as ``f1_*_tuned``. Binary: ``auroc``
    and ``acc``.

    Args:
        task: the task.
        logits: [N, C] (or [N, 1] for binary).
        target: [N] class indices, [N, C] multi-hot, or [N] 0/1.
        num_classes: number of classes.
        thresholds: multilabel only: [C] decision thresholds on the probabilities, e.g.
            tuned on validation by :func:`~cmpt_lightning.thresholds.select_thresholds`.

    Returns:
        Metric name -> value (NaN for an empty set).
    """
    task = Task(task)
    logits = logits.float()
    names = {
        Task.MULTICLASS: ("acc",),
        Task.MULTILABEL: ("f1_macro", "f1_micro", "f1_weighted", "f1_samples"),
        Task.BINARY: ("auroc", "acc"),
    }[task]
    if task is Task.MULTILABEL:
        tuned = () if thresholds is None else tuple(f"{n}_tuned" for n in names)
        names = (*names, *tuned, "map", "auroc_macro")
    if logits.shape[0] == 0:
        return dict.fromkeys(names, float("nan"))
    if task is Task.MULTICLASS:
        acc = multiclass_accuracy(logits, target.long(), num_classes=num_classes, average="micro")
        return {"acc": float(acc)}
    if task is Task.MULTILABEL:
        probs, labels = torch.sigmoid(logits), target.long()
        f1 = _f1_scores(probs > 0.5, labels, target, logits > 0)  # the landed rules, exactly
        if thresholds is not None:
            pred = probs > thresholds.to(probs)
            f1 += _f1_scores(pred, labels, target, pred)
        out = dict(zip(names, f1, strict=False))  # the F1 names, then the tuned ones
        out.update(_ranking_metrics(probs, labels))
        return out
    probs, labels = torch.sigmoid(logits.reshape(-1)), target.reshape(-1).long()
    auroc = (
        binary_auroc(probs, labels) if labels.unique().numel() == 2 else torch.tensor(float("nan"))
    )
    return {"auroc": float(auroc), "acc": float(binary_accuracy(probs, labels))}


def train_metric(task: Task | str, num_classes: int) -> torchmetrics.Metric:
    """A running metric for the training loop (accuracy, or F1-macro for multilabel)."""
    task = Task(task)
    if task is Task.MULTILABEL:
        return torchmetrics.F1Score(task="multilabel", num_labels=num_classes, average="macro")
    if task is Task.BINARY:
        return torchmetrics.Accuracy(task="binary")
    return torchmetrics.Accuracy(task="multiclass", num_classes=num_classes, average="micro")


def availability_case(
    image_present: torch.Tensor, text_present: torch.Tensor
) -> dict[AvailabilityCase, torch.Tensor]:
    """Bool masks [N] of the samples in each availability case (see :func:`case_index`)."""
    case = case_index(image_present, text_present)
    return {name: case == i for i, name in enumerate(CASE_ORDER)}


class EvalCollector:
    """Per-sample evaluation results of one epoch, gathered over ranks and keyed by index."""

    def __init__(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}

    def update(self, **tensors: torch.Tensor) -> None:
        """Add a batch: every tensor has the batch as its first dimension; ``index`` is required."""
        if "index" not in tensors:
            msg = "EvalCollector.update needs the samples' dataset 'index'"
            raise ValueError(msg)
        for name, value in tensors.items():
            self._parts.setdefault(name, []).append(value.detach())

    def reset(self) -> None:
        """Forget everything collected."""
        self._parts = {}

    def __len__(self) -> int:
        return sum(t.shape[0] for t in self._parts.get("index", []))

    def compute(
        self, all_gather: Callable[[torch.Tensor], Any] | None = None, world_size: int = 1
    ) -> dict[str, torch.Tensor]:
        """Concatenate, gather across ranks (if ``world_size > 1``), sort by index, de-duplicate.

        Args:
            all_gather: ``LightningModule.all_gather`` (stacks a tensor from every rank).
            world_size: number of processes.

        Returns:
            Name -> tensor over unique samples, ordered by dataset index (on the CPU).
        """
        if not self._parts:
            return {}
        data = {name: torch.cat(parts) for name, parts in self._parts.items()}
        if world_size > 1 and all_gather is not None:
            data = {name: _gather_padded(value, all_gather) for name, value in data.items()}
        index = data["index"].long()
        order = torch.argsort(index, stable=True)
        index = index[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]  # drop the repeats of DistributedSampler's padding
        keep = order[first]
        return {name: value[keep].cpu() for name, value in data.items()}


def _gather_padded(value: torch.Tensor, all_gather: Callable[[torch.Tensor], Any]) -> torch.Tensor:
    """All-gather tensors whose first dimension may differ between ranks."""
    if value.dtype == torch.bool:  # not every backend (gloo) gathers bool
        return _gather_padded(value.to(torch.uint8), all_gather).bool()
    length = torch.tensor([value.shape[0]], device=value.device)
    lengths = all_gather(length).reshape(-1)
    longest = int(lengths.max())
    padded = value.new_zeros((longest, *value.shape[1:]))
    padded[: value.shape[0]] = value
    gathered = all_gather(padded)  # shape = [world, longest, ...]
    return torch.cat([gathered[r, : int(n)] for r, n in enumerate(lengths)])
