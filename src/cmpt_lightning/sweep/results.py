"""A sweep's records: what a launch did, and what ``cmpt sweep collect`` aggregates.

:class:`SweepReport` (with its :class:`CellFailure` list) is returned by ``cmpt sweep run``;
:class:`SweepResults` by ``cmpt sweep collect``, and read by the plots too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CellFailure", "SweepReport", "SweepResults"]


@dataclass
class CellFailure:
    """A cell whose job failed.

    Attributes:
        cell: the cell's name.
        status: the job's state or exit status.
        error: the job's exception, ``SomeError: message``: as the job recorded it in the cell's
            ``FAILED`` marker, else the last line of the last traceback in submitit's text.
        stderr: submitit's stderr log of the job.
        stdout: submitit's stdout log of the job.
    """

    cell: str
    status: str
    error: str
    stderr: str = ""
    stdout: str = ""

    def __str__(self) -> str:
        return (
            f"FAILED {self.cell}: {self.status}: {self.error}\n"
            f"    stderr: {self.stderr or '-'}\n    stdout: {self.stdout or '-'}"
        )


@dataclass
class SweepReport:
    """What a launch did.

    Attributes:
        cells: all cell names, in grid order.
        skipped: cells already finished (``DONE``), not run again.
        in_progress: SLURM cells still queued or running from an earlier launch, left alone.
        submitted: cells submitted now, with their job ids.
        succeeded: submitted cells that finished (only known when waiting).
        failures: submitted cells that failed (only known when waiting).
    """

    cells: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)
    submitted: dict[str, str] = field(default_factory=dict)
    succeeded: list[str] = field(default_factory=list)
    failures: list[CellFailure] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the console."""
        lines = [
            f"{len(self.cells)} cell(s): {len(self.skipped)} already finished, "
            f"{len(self.in_progress)} still queued/running, {len(self.submitted)} submitted, "
            f"{len(self.succeeded)} succeeded, {len(self.failures)} failed"
        ]
        lines += [str(f) for f in self.failures]
        if self.failures:
            lines.append("re-run the same command to retry the failed cells")
        return "\n".join(lines)


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
