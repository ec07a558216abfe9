"""The CMPT objective: task loss plus a weighted alignment of each proxy with its real token."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .choices import Choice
from .models.cmpt import CMPTOutput
from .tasks import Task

__all__ = ["AlignLoss", "CMPTLoss", "LossParts"]


class AlignLoss(Choice):
    """Distance between a proxy and the real embedding it stands for."""

    MSE = "mse"
    COSINE = "cosine"


class LossParts(NamedTuple):
    """The total loss and its two terms (the alignment term before weighting)."""

    total: torch.Tensor
    task: torch.Tensor
    align: torch.Tensor


class CMPTLoss(nn.Module):
    """``L = L_task(logits, y) + align_weight * L_align``.

    ``L_task`` is cross-entropy (multiclass) or BCE-with-logits (multilabel, binary), over every
    sample. ``L_align`` is, over the complete samples C of the batch (zero if there are none),
    ``(1 / |C|) sum_i [d(p_T,i, sg(h_T,i)) + d(p_V,i, sg(h_V,i))]`` with ``d`` the mean squared
    error over the embedding dimensions (or ``1 - cosine``) and ``sg`` a stop-gradient on the
    real embedding (``detach_target``).

    Args:
        task: ``multiclass``, ``multilabel`` or ``binary``.
        align_weight: lambda, the weight of the alignment term (0 disables it).
        align_loss: ``mse`` or ``cosine``.
        detach_target: stop the gradient through the real embeddings in the alignment term.
        label_smoothing: label smoothing of the multiclass cross-entropy.
    """

    def __init__(
        self,
        task: Task | str = Task.MULTICLASS,
        *,
        align_weight: float = 0.2,
        align_loss: AlignLoss | str = AlignLoss.MSE,
        detach_target: bool = True,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if align_weight < 0:
            msg = f"align_weight must be >= 0, got {align_weight!r}"
            raise ValueError(msg)
        self.task = Task(task)
        self.align_weight = align_weight
        self.align_loss = AlignLoss(align_loss)
        self.detach_target = detach_target
        self.label_smoothing = label_smoothing

    def task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy or BCE-with-logits, in float32."""
        logits = logits.float()
        if self.task is Task.MULTICLASS:
            return F.cross_entropy(logits, target.long(), label_smoothing=self.label_smoothing)
        if self.task is Task.BINARY:
            return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float())
        return F.binary_cross_entropy_with_logits(logits, target.float())

    def _distance(self, proxy: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Per-sample distance [n] between proxies and real embeddings [n, D]."""
        if self.detach_target:
            real = real.detach()
        proxy, real = proxy.float(), real.float()
        if self.align_loss is AlignLoss.COSINE:
            return 1 - F.cosine_similarity(proxy, real, dim=-1)
        return (proxy - real).pow(2).mean(dim=-1)

    def alignment(self, output: CMPTOutput) -> torch.Tensor:
        """The alignment term over the complete samples (a zero that keeps the graph if none)."""
        f = output.features
        complete = f.image_present & f.text_present
        per_sample = self._distance(f.text_proxy, f.text) + self._distance(f.image_proxy, f.image)
        if not bool(complete.any()):
            return per_sample.sum() * 0.0
        return per_sample[complete].mean()

    def forward(self, output: CMPTOutput, target: torch.Tensor) -> LossParts:
        """Compute the loss of a model output against the targets."""
        task = self.task_loss(output.logits, target)
        align = self.alignment(output)
        return LossParts(task + self.align_weight * align, task, align)
