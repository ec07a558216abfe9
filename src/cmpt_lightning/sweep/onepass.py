"""The one-pass sweep over test-time missing rates and types.

A proxy never influences the real tokens, so one encoding of a test sample with both modalities
gives its logits under all three availability cases (complete, text missing, image missing).
Every (rate, type) cell is then a per-sample choice among the three, made with the same masks a
run configured with that cell would use (a pure function of seed and sample id), so each cell's
metrics equal that run's exactly.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..metrics import compute_metrics
from ..missing import MissingPlan, availability_counts, combine_availability
from ..models.head import AvailabilityCase
from ..tasks import Task

__all__ = ["CASE_ORDER", "evaluate_cells", "select_case_logits", "write_sweep"]

#: Order of the availability cases along dimension 1 of the stacked case logits.
CASE_ORDER = (AvailabilityCase.COMPLETE, AvailabilityCase.IMAGE_ONLY, AvailabilityCase.TEXT_ONLY)


def select_case_logits(
    case_logits: torch.Tensor, image_present: torch.Tensor, text_present: torch.Tensor
) -> torch.Tensor:
    """Per sample, the logits of its availability case.

    Args:
        case_logits: [N, 3, C] in :data:`CASE_ORDER`.
        image_present: bool [N].
        text_present: bool [N] (no sample may lack both).

    Returns:
        [N, C].
    """
    case = torch.where(image_present & text_present, 0, torch.where(image_present, 1, 2))
    rows = torch.arange(case_logits.shape[0], device=case_logits.device)
    return case_logits[rows, case.to(case_logits.device)]


def evaluate_cells(
    task: Task | str,
    num_classes: int,
    case_logits: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    real_image: torch.Tensor,
    real_text: torch.Tensor,
    plan: MissingPlan,
    rates: Sequence[float],
    types: Sequence[str],
    both_ratio: float,
) -> list[dict[str, Any]]:
    """Metrics of every (type, rate) cell.

    Args:
        task: the task.
        num_classes: number of classes.
        case_logits: [N, 3, C] logits of the evaluated samples in :data:`CASE_ORDER`.
        labels: [N] or [N, C] targets.
        index: [N] positions of the evaluated samples in the split (the plan's order).
        real_image: bool [N], the data has the image.
        real_text: bool [N], the data has the text.
        plan: the protocol's ranking of the whole split.
        rates: missing rates.
        types: missing types.
        both_ratio: with ``both``, the fraction of missing samples that lose the image.

    Returns:
        One dict per cell: ``type``, ``rate``, the task's metrics, ``count_<case>`` per
        availability case and ``count_spared`` (samples whose only modality was kept).
    """
    rows: list[dict[str, Any]] = []
    index = index.long().cpu()
    for missing_type in types:
        for rate in rates:
            keep_img, keep_txt = plan.masks(rate, missing_type, both_ratio=both_ratio)
            img, txt, spared = combine_availability(
                real_image.cpu(), real_text.cpu(), keep_img[index], keep_txt[index]
            )
            logits = select_case_logits(case_logits, img, txt)
            row: dict[str, Any] = {"type": missing_type, "rate": rate}
            row.update(compute_metrics(task, logits, labels, num_classes))
            counts = availability_counts(img, txt)
            row.update({f"count_{case.value}": counts[case.value] for case in CASE_ORDER})
            row["count_spared"] = int(spared.sum())
            rows.append(row)
    return rows


def _print_table(rows: list[dict[str, Any]], metrics: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="One-pass sweep: test metrics per missing type and rate")
    for column in ["type", "rate", *metrics, "complete", "image_only", "text_only"]:
        table.add_column(column, justify="right")
    for row in rows:
        values = [f"{row[m]:.4f}" if not math.isnan(row[m]) else "nan" for m in metrics]
        counts = [str(row[f"count_{c.value}"]) for c in CASE_ORDER]
        table.add_row(row["type"], f"{row['rate']:g}", *values, *counts)
    Console().print(table)


def _plot(rows: list[dict[str, Any]], metric: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for missing_type in dict.fromkeys(r["type"] for r in rows):
        cells = [r for r in rows if r["type"] == missing_type]
        ax.plot(
            [r["rate"] for r in cells], [r[metric] for r in cells], marker="o", label=missing_type
        )
    ax.set_xlabel("test missing rate")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against missing rate, per missing type")
    ax.grid(alpha=0.3)
    ax.legend(title="missing")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_sweep(
    rows: list[dict[str, Any]],
    directory: str | Path,
    *,
    main_metric: str,
    settings: dict[str, Any] | None = None,
    console: bool = True,
) -> dict[str, Path]:
    """Write ``sweep.csv`` (one row per cell), ``sweep.json`` and, with matplotlib, ``sweep.png``.

    Args:
        rows: the cells from :func:`evaluate_cells`.
        directory: the run directory.
        main_metric: the metric plotted against the rate.
        settings: protocol settings recorded in ``sweep.json`` (seed, both_ratio, ...).
        console: also print a rich table.

    Returns:
        The paths written, by kind (``csv``, ``json``, ``png``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"csv": directory / "sweep.csv", "json": directory / "sweep.json"}
    fields = list(rows[0])
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"settings": settings or {}, "main_metric": main_metric, "cells": rows}
    paths["json"].write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    if _plot(rows, main_metric, directory / "sweep.png"):
        paths["png"] = directory / "sweep.png"
    if console:
        metrics = [k for k in fields if k not in ("type", "rate") and not k.startswith("count_")]
        _print_table(rows, metrics)
    return paths
