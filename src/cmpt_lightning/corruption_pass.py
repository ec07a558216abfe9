"""The test grid's corruption axis: one more pass over the test set per corruption.

After the clean test epoch, :func:`with_corruptions` runs the test loader again for each of
``TestGrid.corruptions`` (:mod:`.corruptions`), in eval mode and without gradients, on the
module's device and under the trainer's precision, through the same batch hooks as the test
loop (the data module's simulated missingness, device copy and normalisation). The one-pass
case logits (:func:`~.evaluation.one_pass`) of the corrupted inputs give three rows per
corruption, encoded as the clean grid encodes the availability cases: ``(both, 0.0)``
complete, ``(text, 1.0)`` image only, ``(image, 1.0)`` text only. Every row gets the columns
``corruption`` (the kind; ``none`` on the clean rows) and ``level`` (0.0 on the clean rows),
after ``type`` and ``rate``; the corrupted rows leave the proxy diagnostics NaN (their
``count_proxy_*`` 0).

Only the test samples the clean pass evaluated are used (so a ``limit_test_batches`` or
``fast_dev_run`` run compares like with like). Under DDP the passes run on rank zero only,
over the whole test set (no collective is involved), which also writes ``sweep.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule

from .corruptions import Corruption, corrupt_batch
from .datasets.images import defer_normalization, image_normalization
from .evaluation import TestGrid, evaluate_cells, one_pass
from .metrics import EvalCollector
from .models.cmpt import CMPTModel
from .tasks import Task

__all__ = ["CORRUPTION_CELLS", "corrupted_pass", "pixel_normalization", "with_corruptions"]

#: The (test type, test rate) cells of each corruption, and the availability case each encodes.
CORRUPTION_CELLS = {
    ("both", 0.0): "complete",
    ("text", 1.0): "image_only",
    ("image", 1.0): "text_only",
}

#: open_clip's default normalisation (``OPENAI_DATASET_MEAN`` / ``_STD``), the last fallback.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def pixel_normalization(datamodule: object, model: CMPTModel) -> tuple[tuple[float, ...], ...]:
    """``(mean, std)`` the test images were normalised with.

    The data module's transform's ``Normalize`` (what made the test batches) when it has one,
    else the model's open_clip preprocessing (``visual.preprocess_cfg``), else open_clip's
    default.
    """
    transform = getattr(datamodule, "image_transform", None)
    norm = image_normalization(defer_normalization(transform())) if callable(transform) else None
    if norm is not None:
        return tuple(norm.mean), tuple(norm.std)
    cfg = getattr(model.clip.visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", _OPENAI_MEAN)), tuple(cfg.get("std", _OPENAI_STD))


def corrupted_pass(
    module: LightningModule,
    corruption: Corruption,
    *,
    seed: int,
    index: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, torch.Tensor]:
    """The one-pass results of the test samples ``index`` on inputs with ``corruption``.

    Args:
        module: the tested :class:`~cmpt_lightning.module.CMPTModule` (attached to a trainer
            with a data module).
        corruption: the corruption.
        seed: the protocol seed (seeds each sample's corruption with its index).
        index: the test samples to evaluate (those of the clean pass); the loader stops once
            it has seen them all.
        mean: the images' normalisation mean.
        std: the images' normalisation std.

    Returns:
        ``index``, ``label``, ``case_logits``, ``image_available``, ``text_available`` of those
        samples, ordered by index, on the CPU.
    """
    trainer = module.trainer
    datamodule: Any = getattr(trainer, "datamodule", None)
    model = cast("CMPTModel", module.model)
    needed = set(index.long().tolist())
    collector = EvalCollector()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), trainer.precision_plugin.test_step_context():
            for raw in datamodule.test_dataloader():
                batch = module._on_before_batch_transfer(raw, 0)
                batch = module._apply_batch_transfer_handler(batch, module.device, 0)
                batch = corrupt_batch(batch, corruption, seed=seed, mean=mean, std=std)
                _, extra = one_pass(model, batch)
                collector.update(index=batch["index"], label=batch["label"], **extra)
                needed.difference_update(batch["index"].long().tolist())
                if not needed:
                    break
    finally:
        module.train(was_training)
    data = collector.compute()
    keep = torch.isin(data["index"].long(), index.long().cpu())
    return {name: value[keep] for name, value in data.items()}


def _tagged(row: dict[str, Any], kind: str, level: float) -> dict[str, Any]:
    """``row`` with ``corruption`` and ``level`` after ``type`` and ``rate``."""
    head = {"type": row["type"], "rate": row["rate"], "corruption": kind, "level": level}
    return {**head, **{k: v for k, v in row.items() if k not in head}}


def _unmeasured(key: str) -> float | int:
    """A clean row's column a corrupted row lacks (the proxy diagnostics): none measured."""
    return 0 if key.startswith("count_") else math.nan


def with_corruptions(
    module: LightningModule,
    grid: TestGrid,
    data: dict[str, torch.Tensor],
    cells: list[dict[str, Any]],
    settings: dict[str, Any],
    thresholds: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """The test grid's rows: the clean ``cells``, then three rows per corruption of ``grid``.

    Args:
        module: the tested :class:`~cmpt_lightning.module.CMPTModule`.
        grid: the test grid (``cells`` unchanged when it has no corruptions).
        data: the clean pass's gathered results (its ``index`` picks the samples).
        cells: the clean cells (:meth:`TestGrid.evaluate`).
        settings: their protocol settings (``seed``, ``both_ratio``); ``corruptions`` (the
            specs) is added to it.
        thresholds: tuned multi-label thresholds, as for the clean cells.

    Returns:
        The rows for :func:`~.evaluation.write_sweep`: with corruptions, every row has
        ``corruption`` and ``level``; on ranks other than zero, only the clean rows.
    """
    if not grid.corruptions:
        return cells
    rows = [_tagged(row, "none", 0.0) for row in cells]
    settings["corruptions"] = list(grid.corruptions)  # recorded in sweep.json
    if not module.trainer.is_global_zero:
        return rows
    datamodule: Any = getattr(module.trainer, "datamodule", None)  # checked by grid.evaluate
    model = cast("CMPTModel", module.model)
    task, num_classes = cast("Task", module.task), int(cast("int", module.num_classes))
    mean, std = pixel_normalization(datamodule, model)
    seed, keys = int(settings["seed"]), list(rows[0])
    plan = datamodule.plan("test", seed)
    added = []
    for spec in grid.corruptions:
        corruption = Corruption.parse(spec)
        out = corrupted_pass(module, corruption, seed=seed, index=data["index"], mean=mean, std=std)
        for missing_type, rate in CORRUPTION_CELLS:
            (row,) = evaluate_cells(
                task,
                num_classes,
                out["case_logits"],
                out["label"],
                out["index"],
                out["image_available"].bool(),
                out["text_available"].bool(),
                plan,
                [rate],
                [missing_type],
                settings["both_ratio"],
                thresholds=thresholds,
            )
            row = _tagged(row, corruption.kind.value, corruption.level)
            added.append({key: row.get(key, _unmeasured(key)) for key in keys})
    _print_rows(added, task.main_metric)
    return rows + added


def _print_rows(rows: list[dict[str, Any]], metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Test-time corruptions: test {metric} per availability case")
    for column in ("corruption", "level", *CORRUPTION_CELLS.values()):
        table.add_column(column, justify="right")
    by_spec: dict[tuple[str, float], dict[str, str]] = {}
    for row in rows:
        values = by_spec.setdefault((row["corruption"], row["level"]), {})
        values[CORRUPTION_CELLS[(row["type"], row["rate"])]] = f"{row[metric]:.4f}"
    for (kind, level), values in by_spec.items():
        table.add_row(kind, f"{level:g}", *(values.get(c, "") for c in CORRUPTION_CELLS.values()))
    Console().print(table)
