"""What ``cmpt sweep collect`` aggregates: :class:`SweepResults` (read by the plots too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SweepResults"]


@dataclass
class SweepResults:
    """What :func:`collect_sweep` found and wrote.

    Attributes:
        rows: one dict per train cell x test cell (the rows of ``results.csv``).
        train_columns: the columns naming the train cell (aliases of the varying non-seed keys).
        metrics: the metrics, in the order of the cells' ``sweep.csv``.
        main_metric: the metric of the plots.
        missing: cells of the grid without results (not finished).
        paths: the files written, by kind (``csv``, ``md``, ``heatmap``, ``curves``).
    """

    rows: list[dict[str, Any]]
    train_columns: list[str]
    metrics: list[str]
    main_metric: str
    missing: list[str]
    paths: dict[str, Path]
