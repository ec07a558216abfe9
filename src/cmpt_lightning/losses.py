"""The CMPT objective: task loss plus a weighted alignment of each proxy with its real token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .choices import Choice
from .models.cmpt import CMPTOutput
from .models.head import AvailabilityCase
from .tasks import Task

__all__ = ["AlignLoss", "CMPTLoss", "LossParts"]


class AlignLoss(Choice):
    """Distance between a proxy and the real embedding it stands for."""

    MSE = "mse"
    COSINE = "cosine"


class LossParts(NamedTuple):
    """The total loss and its terms (each term before weighting).

    ``proxy_task`` is the task loss on the proxy-substituted logits of the complete samples
    (zero, and not in ``total``, when its weight is 0).
    """

    total: torch.Tensor
    task: torch.Tensor
    align: torch.Tensor
    proxy_task: torch.Tensor


class CMPTLoss(nn.Module):
    """``L = L_task(logits, y) + align_weight * L_align [+ proxy_task_weight * L_proxy]``.

    ``L_task`` is cross-entropy (multiclass) or BCE-with-logits (multilabel, binary), over every
    sample, or over the samples of the output's ``task_mask`` when it has one (a specialist's
    samples with its modality; a masked mean, zero if there are none). ``L_align`` is, over
    the complete samples C of the batch (zero if there are none),
    ``(1 / |C|) sum_i [d(p_T,i, sg(h_T,i)) + d(p_V,i, sg(h_V,i))]`` with ``d`` the mean squared
    error over the embedding dimensions (or ``1 - cosine``) and ``sg`` a stop-gradient on the
    real embedding (``detach_target``).

    ``L_proxy`` (a variant beyond the paper, off by default) is the task loss of the complete
    samples C as if one modality were missing, from the same encoding (the one-pass case
    logits, no second tower pass):
    ``(L_task(f(h_V, p_T)[C], y[C]) + L_task(f(p_V, h_T)[C], y[C])) / 2``, zero if C is
    empty. It trains the proxies (and the fusion) directly for the task they stand in for.
    With a baseline its stand-ins take the proxies' place.

    Args:
        task: ``multiclass``, ``multilabel`` or ``binary``.
        align_weight: lambda, the weight of the alignment term (0 disables it).
        align_loss: ``mse`` or ``cosine``.
        detach_target: stop the gradient through the real embeddings in the alignment term.
        label_smoothing: label smoothing of the multiclass cross-entropy.
        proxy_task_weight: mu, the weight of ``L_proxy``; 0 (the default, the paper's method)
            leaves the loss and its gradients exactly as without the term.
    """

    def __init__(
        self,
        task: Task | str = Task.MULTICLASS,
        *,
        align_weight: float = 0.2,
        align_loss: AlignLoss | str = AlignLoss.MSE,
        detach_target: bool = True,
        label_smoothing: float = 0.0,
        proxy_task_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if align_weight < 0:
            msg = f"align_weight must be >= 0, got {align_weight!r}"
            raise ValueError(msg)
        if not proxy_task_weight >= 0:  # also refuses NaN
            msg = (
                f"proxy_task_weight (mu) must be >= 0, got {proxy_task_weight!r}; "
                "0 turns the proxy task loss off"
            )
            raise ValueError(msg)
        self.proxy_task_weight = float(proxy_task_weight)
        self.task = Task(task)
        self.align_weight = align_weight
        self.align_loss = AlignLoss(align_loss)
        self.detach_target = detach_target
        self.label_smoothing = label_smoothing

    def task_loss(
        self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy or BCE-with-logits, in float32.

        Args:
            logits: [B, C] (or [B, 1] for a binary task).
            target: [B] class indices or [B, C] multi-hot labels.
            mask: bool [B], the samples to average over (None: all). A masked mean by
                arithmetic, with no host synchronisation: a zero that keeps the graph when no
                sample is kept; per sample, a multilabel loss is the mean over its classes,
                so that an all-true mask gives the unmasked value.
        """
        logits = logits.float()
        reduction = "mean" if mask is None else "none"
        if self.task is Task.MULTICLASS:
            loss = F.cross_entropy(
                logits, target.long(), label_smoothing=self.label_smoothing, reduction=reduction
            )
        elif self.task is Task.BINARY:
            loss = F.binary_cross_entropy_with_logits(
                logits.squeeze(-1), target.float(), reduction=reduction
            )
        else:
            loss = F.binary_cross_entropy_with_logits(logits, target.float(), reduction=reduction)
        if mask is None:
            return loss
        per_sample = loss.mean(dim=-1) if loss.ndim > 1 else loss  # shape = [B]
        kept = torch.where(mask, per_sample, torch.zeros_like(per_sample))
        return kept.sum() / mask.sum().clamp(min=1)

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
        # the mean over the complete samples by masked arithmetic: no host synchronisation
        # (a zero that keeps the graph when there is none)
        kept = torch.where(complete, per_sample, torch.zeros_like(per_sample))
        return kept.sum() / complete.sum().clamp(min=1)

    def proxy_task(
        self,
        output: CMPTOutput,
        target: torch.Tensor,
        case_logits: Mapping[AvailabilityCase, torch.Tensor],
    ) -> torch.Tensor:
        """``L_proxy``: the mean task loss of the two one-modality cases of complete samples.

        Args:
            output: the model output (its features' masks say which samples are complete).
            target: the targets of the whole batch.
            case_logits: the logits of every sample under each availability case, [B, C]
                each, from one encoding (``CMPTModel.case_logits(output.features)``).

        Returns:
            A scalar; a zero that keeps the graph when the batch has no complete sample.
        """
        f = output.features
        complete = f.image_present & f.text_present  # shape = [B]
        image_only = case_logits[AvailabilityCase.IMAGE_ONLY]  # text replaced by its proxy
        text_only = case_logits[AvailabilityCase.TEXT_ONLY]  # image replaced by its proxy
        if not bool(complete.any()):
            return (image_only.sum() + text_only.sum()) * 0.0
        y = target[complete]
        return 0.5 * (
            self.task_loss(image_only[complete], y) + self.task_loss(text_only[complete], y)
        )

    def forward(
        self,
        output: CMPTOutput,
        target: torch.Tensor,
        case_logits: Mapping[AvailabilityCase, torch.Tensor] | None = None,
    ) -> LossParts:
        """Compute the loss of a model output against the targets.

        Args:
            output: the model output.
            target: the targets.
            case_logits: the per-case logits of the same encoding; needed (and only read)
                when ``proxy_task_weight`` > 0.

        Raises:
            ValueError: when ``proxy_task_weight`` > 0 and ``case_logits`` is None.
        """
        task = self.task_loss(output.logits, target, output.task_mask)
        align = self.alignment(output)
        total = task + self.align_weight * align
        if self.proxy_task_weight == 0:
            return LossParts(total, task, align, torch.zeros_like(task))
        if case_logits is None:
            msg = (
                "proxy_task_weight > 0 needs the case logits of the same encoding: pass "
                "model.case_logits(output.features) as case_logits"
            )
            raise ValueError(msg)
        proxy = self.proxy_task(output, target, case_logits)
        return LossParts(total + self.proxy_task_weight * proxy, task, align, proxy)
