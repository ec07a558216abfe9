"""The prediction tasks the package supports and what each implies."""

from __future__ import annotations

from .choices import Choice

__all__ = ["Task"]


class Task(Choice):
    """The kind of labels: one class, several classes, or a yes/no decision."""

    MULTICLASS = "multiclass"
    MULTILABEL = "multilabel"
    BINARY = "binary"

    def num_outputs(self, num_classes: int) -> int:
        """Number of logits the classifier produces for ``num_classes`` classes."""
        if num_classes < 1:
            msg = f"num_classes must be >= 1, got {num_classes!r}"
            raise ValueError(msg)
        if self is Task.BINARY:
            if num_classes not in (1, 2):
                msg = f"a binary task has 1 or 2 classes, got num_classes={num_classes!r}"
                raise ValueError(msg)
            return 1
        if self is Task.MULTICLASS and num_classes < 2:
            msg = f"a multiclass task needs num_classes >= 2, got {num_classes!r}"
            raise ValueError(msg)
        return num_classes

    @property
    def main_metric(self) -> str:
        """The metric used for model selection: acc, f1_macro or auroc."""
        return {Task.MULTICLASS: "acc", Task.MULTILABEL: "f1_macro", Task.BINARY: "auroc"}[self]
