"""Run a grid of training settings through submitit: SLURM job arrays, local processes, in-process.

Every cell is one job: ``cmpt fit`` of its resolved config, then the one-pass test sweep of the
best checkpoint (see :mod:`cmpt_lightning.sweep.job`). Cells with a ``DONE`` marker are skipped,
so re-running the same command retries exactly the cells that failed or never ran.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .grid import Grid, key_aliases
from .job import FAILED, JOB, CellJob, CellState, write_marker
from .plan import (
    ExecutorKind,
    PlannedCell,
    SweepSettings,
    executor_groups,
    log_folder,
    plan_sweep,
    print_plan,
    require_submitit,
)

__all__ = ["CellFailure", "SweepReport", "launch_sweep"]


#: SLURM states of a job that is still queued or running (re-running the sweep leaves it be).
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")


@dataclass
class CellFailure:
    """A cell whose job failed.

    Attributes:
        cell: the cell's name.
        status: the job's state or exit status.
        error: the exception (its last line).
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


def _last_line(error: BaseException) -> str:
    text = str(error)
    if "----------------------" in text:  # submitit's FailedJobError: the job's traceback
        text = text.split("----------------------")[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _job_state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # the state is informative only (sacct may be missing)
        return "UNKNOWN"


def _previous(state: CellState, settings: SweepSettings) -> str | None:
    """Why a cell that is not DONE is (re)submitted; "active" when its SLURM job still runs."""
    if state.job is None:
        return None
    if state.job.get("executor") == ExecutorKind.SLURM.value and state.failed is None:
        folder = Path(state.job.get("folder", log_folder(settings)))
        job = require_submitit().SlurmJob(folder=folder, job_id=str(state.job.get("job_id")))
        job_state = _job_state(job)
        if job_state.split()[0] in ACTIVE_STATES:
            return "active"
        return f"job {state.job.get('job_id')} ended ({job_state}), log {state.job.get('stderr')}"
    failed = state.failed or {}
    return (
        f"{failed.get('status', 'did not finish')}: {failed.get('error', '?')}, log "
        f"{failed.get('stderr', state.job.get('stderr'))}"
    )


def _check_unchanged(settings: SweepSettings, planned: Sequence[PlannedCell]) -> None:
    """Refuse to mix results: a finished cell must have been run with today's config."""
    changed = [
        p.cell.name
        for p in planned
        if (p.directory / "DONE").is_file()
        and (p.directory / "config.yaml").read_text() != p.config
    ]
    if changed:
        msg = (
            f"finished cells of {settings.out} were run with a different config: "
            f"{', '.join(changed)}; sweep into a new --out directory"
        )
        raise ValueError(msg)


def _prepare(
    settings: SweepSettings, grid: Grid, planned: Sequence[PlannedCell], todo: Sequence[PlannedCell]
) -> None:
    """Write the sweep's manifest and the directories of the cells about to run."""
    settings.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "configs": [str(Path(c).resolve()) for c in settings.configs],
        "grid": grid.axes,
        "varying": grid.varying,
        "seed_keys": grid.seed_keys,
        "aliases": key_aliases(grid.varying),
        "test_rates": settings.test_rates,
        "test_types": settings.test_types,
        "cells": [{"name": p.cell.name, "overrides": p.cell.overrides} for p in planned],
    }
    write_marker(settings.out / "manifest.json", manifest)
    for p in todo:
        p.directory.mkdir(parents=True, exist_ok=True)
        (p.directory / "config.yaml").write_text(p.config)
        write_marker(
            p.directory / "cell.json", {"name": p.cell.name, "overrides": p.cell.overrides}
        )


def _make_executor(settings: SweepSettings, params: dict[str, Any]) -> Any:
    submitit = require_submitit()
    folder = log_folder(settings)
    if settings.kind == ExecutorKind.DEBUG:
        return submitit.DebugExecutor(folder)
    if settings.kind == ExecutorKind.LOCAL:
        executor = submitit.LocalExecutor(folder)
    else:
        try:
            executor = submitit.SlurmExecutor(folder)
        except RuntimeError as err:
            msg = (
                "the slurm executor needs SLURM's srun/sbatch on this machine; use --dry-run "
                "to see the sbatch script, or --executor local"
            )
            raise RuntimeError(msg) from err
    executor.update_parameters(**params)
    return executor


def _outcome(settings: SweepSettings, cell: PlannedCell, job: Any) -> CellFailure | None:
    """Wait for a job; its failure (also written to the cell's FAILED marker), None if it worked."""
    error = job.exception()
    paths = {"stderr": str(job.paths.stderr), "stdout": str(job.paths.stdout)}
    if settings.kind == ExecutorKind.DEBUG:
        paths = {"stderr": "(in process: see the console)", "stdout": ""}
    if error is None and (cell.directory / "DONE").is_file():
        return None
    if error is None:
        status, message = "finished without a DONE marker", "the job returned but wrote no DONE"
    elif isinstance(error, require_submitit().core.utils.FailedJobError):
        status, message = f"exception in the job (state {_job_state(job)})", _last_line(error)
    elif isinstance(error, require_submitit().core.utils.UncompletedJobError):
        status, message = f"did not complete (state {_job_state(job)})", _last_line(error)
    else:  # the debug executor hands over the exception itself
        status, message = "exception in the job", f"{type(error).__name__}: {error}"
    failure = CellFailure(cell.cell.name, status, message, **paths)
    previous = CellState.read(cell.directory).failed or {}
    write_marker(cell.directory / FAILED, {**previous, **asdict(failure)})
    return failure


def _submit(settings: SweepSettings, cells: list[PlannedCell], report: SweepReport) -> None:
    env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    for params, group in executor_groups(settings, cells):
        executor = _make_executor(settings, params)
        size = len(group)
        if settings.kind == ExecutorKind.LOCAL and settings.waits and settings.parallelism:
            size = settings.parallelism
        for start in range(0, len(group), size):
            wave = group[start : start + size]
            for cell in wave:
                (cell.directory / FAILED).unlink(missing_ok=True)
            envs = [env if settings.kind == ExecutorKind.LOCAL else None] * len(wave)
            jobs = executor.map_array(CellJob(), [str(c.directory) for c in wave], envs)
            for cell, job in zip(wave, jobs, strict=True):
                attempt = int((CellState.read(cell.directory).job or {}).get("attempt", 0)) + 1
                write_marker(
                    cell.directory / JOB,
                    {
                        "executor": settings.kind.value,
                        "job_id": job.job_id,
                        "attempt": attempt,
                        "folder": str(job.paths.folder),
                        "stdout": str(job.paths.stdout),
                        "stderr": str(job.paths.stderr),
                    },
                )
                report.submitted[cell.cell.name] = str(job.job_id)
                print(f"submitted {cell.cell.name} (job {job.job_id}, attempt {attempt})")
            if settings.waits:
                _wait(settings, wave, jobs, report)


def _wait(
    settings: SweepSettings, cells: list[PlannedCell], jobs: list[Any], report: SweepReport
) -> None:
    """Wait for a wave of jobs; Ctrl-C stops local ones (SLURM ones keep running)."""
    try:
        for cell, job in zip(cells, jobs, strict=True):
            failure = _outcome(settings, cell, job)
            if failure is None:
                report.succeeded.append(cell.cell.name)
            else:
                report.failures.append(failure)
    except KeyboardInterrupt:
        if settings.kind == ExecutorKind.LOCAL:
            for job in jobs:
                job.cancel(check=False)
        raise


def launch_sweep(settings: SweepSettings) -> SweepReport:
    """Validate the grid, then submit every cell that has not finished (or print, dry run).

    Returns:
        What was skipped, submitted, and (when waiting) what succeeded and failed.
    """
    grid, planned = plan_sweep(settings)
    report = SweepReport(cells=[p.cell.name for p in planned])
    if settings.dry_run:
        print_plan(settings, grid, planned)
        return report
    _check_unchanged(settings, planned)
    todo = []
    for p in planned:
        state = CellState.read(p.directory)
        if state.done is not None:
            report.skipped.append(p.cell.name)
            continue
        previous = _previous(state, settings)
        if previous == "active":
            report.in_progress.append(p.cell.name)
            continue
        if previous is not None:
            print(f"retrying {p.cell.name}: previous attempt {previous}")
        todo.append(p)
    _prepare(settings, grid, planned, todo)
    _submit(settings, todo, report)
    print(report.summary())
    return report
