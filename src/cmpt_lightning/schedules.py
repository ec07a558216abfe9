"""Learning-rate schedules: the default of :class:`~cmpt_lightning.module.CMPTModule`."""

from __future__ import annotations

import math

__all__ = ["WarmupCosine"]


class WarmupCosine:
    """Linear warm-up over ``warmup_steps`` then cosine decay to zero at ``total_steps``.

    A factor of the base learning rate, for ``torch.optim.lr_scheduler.LambdaLR``.

    Args:
        warmup_steps: steps of linear warm-up (negative counts as 0).
        total_steps: the step at which the factor reaches zero (at least 1).
    """

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)

    def __call__(self, step: int) -> float:
        """The learning-rate factor at ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
