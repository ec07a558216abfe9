"""Run a grid of training settings through submitit: SLURM job arrays, local processes, in-process.

Every cell is one job: ``cmpt fit`` of its resolved config, then the one-pass test sweep of the
best checkpoint (see :mod:`cmpt_lightning.sweep.job`). Cells with a ``DONE`` marker are skipped,
so re-running the same command retries exactly the cells that failed or never ran.

Local and debug cells run as a pool: at most :attr:`~SweepSettings.cells_at_once` at a time, the
next one started as soon as one ends, with a progress line (cells done / running / failed /
queued and the elapsed time) whenever it changes. SLURM cells are submitted as job arrays at
once (``--slurm.array_parallelism`` limits them), and only waited for with ``--wait``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
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
from .results import CellFailure, SweepReport

__all__ = ["CellFailure", "SweepReport", "launch_sweep"]


#: SLURM states of a job that is still queued or running (re-running the sweep leaves it be).
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")


def _exception_line(text: str) -> str | None:
    """The ``SomeError: message`` line that ends the last traceback in ``text`` (None: none).

    That is the first unindented line after the last ``Traceback`` header: its frames are
    indented, and whatever the job printed after it (warnings, log lines) is not the error.
    """
    start = text.rfind("Traceback (most recent call last):")
    if start < 0:
        return None
    after = text[start:].splitlines()[1:]
    return next((line.strip() for line in after if line.strip() and not line[0].isspace()), None)


def _error_message(error: BaseException, marker: dict[str, Any] | None) -> str:
    """The job's real error: its own ``FAILED`` marker's, else its last traceback's last line.

    Args:
        error: submitit's exception for the job (its text holds the job's traceback or stderr).
        marker: the ``FAILED`` marker the job wrote in this attempt (None when it wrote none,
            e.g. killed, or the config did not parse before the job could write it).
    """
    if marker and marker.get("error"):
        return str(marker["error"])
    text = str(error)
    found = _exception_line(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return found or (lines[-1] if lines else type(error).__name__)


def _job_state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # the state is informative only (sacct may be missing)
        return "UNKNOWN"


def _previous(state: CellState, settings: SweepSettings) -> str | None:
    """Why a cell that is not DONE is (re)submitted; "active" when its SLURM job still runs.

    A SLURM job is asked even when the cell has a ``FAILED`` marker: a requeued job (preempted,
    or at its time limit) may have left one of an interrupted attempt, and still run.
    """
    if state.job is None:
        return None
    if state.job.get("executor") == ExecutorKind.SLURM.value:
        folder = Path(state.job.get("folder", log_folder(settings)))
        job = require_submitit().SlurmJob(folder=folder, job_id=str(state.job.get("job_id")))
        job_state = _job_state(job)
        if job_state.split()[0] in ACTIVE_STATES:
            return "active"
        if state.failed is None:
            job_id = state.job.get("job_id")
            return f"job {job_id} ended ({job_state}), log {state.job.get('stderr')}"
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
    marker = CellState.read(cell.directory).failed  # the job's own, of this attempt
    if error is None:
        status, message = "finished without a DONE marker", "the job returned but wrote no DONE"
    elif isinstance(error, require_submitit().core.utils.FailedJobError):
        status = f"exception in the job (state {_job_state(job)})"
        message = _error_message(error, marker)
    elif isinstance(error, require_submitit().core.utils.UncompletedJobError):
        status = f"did not complete (state {_job_state(job)})"
        message = _error_message(error, marker)
    else:  # the debug executor hands over the exception itself
        status, message = "exception in the job", f"{type(error).__name__}: {error}"
    failure = CellFailure(cell.cell.name, status, message, **paths)
    write_marker(cell.directory / FAILED, {**(marker or {}), **asdict(failure)})
    return failure


def _cell_env(settings: SweepSettings) -> dict[str, str | None] | None:
    """What a local cell's process sets first: the launcher's GPUs, its share of the CPUs."""
    if settings.kind != ExecutorKind.LOCAL:
        return None
    threads = str(settings.threads_per_cell)
    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def _record(settings: SweepSettings, cell: PlannedCell, job: Any, report: SweepReport) -> None:
    """Write the cell's ``job.json`` (the attempt's number and logs) and report the submission."""
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
    print(f"submitted {cell.cell.name} (job {job.job_id}, attempt {attempt})", flush=True)


def _start(settings: SweepSettings, executor: Any, cell: PlannedCell, report: SweepReport) -> Any:
    """Submit one cell (its last ``FAILED`` marker removed first); its job."""
    (cell.directory / FAILED).unlink(missing_ok=True)
    job = executor.submit(CellJob(), str(cell.directory), _cell_env(settings))
    _record(settings, cell, job, report)
    return job


class _Progress:
    """The progress line: cells done / running / failed / queued and the time since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last: tuple[int, int, int, int] | None = None

    def show(self, report: SweepReport, running: int, queued: int) -> None:
        """Print the counts when they changed since the last line."""
        counts = (len(report.succeeded), running, len(report.failures), queued)
        if counts == self.last:
            return
        self.last = counts
        seconds = int(time.monotonic() - self.start)
        clock = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        done, failed = counts[0], counts[2]
        print(
            f"[{clock}] {done} done, {running} running, {failed} failed, {queued} queued",
            flush=True,
        )


def _pool(
    settings: SweepSettings,
    queue: list[tuple[Any, PlannedCell]],
    running: list[tuple[PlannedCell, Any]],
    report: SweepReport,
) -> None:
    """Run the queued cells, the ``running`` ones too, and wait for them; Ctrl-C stops local ones.

    At most ``cells_at_once`` run at a time, the next one started as soon as one ends.

    Args:
        settings: the sweep.
        queue: (executor, cell) pairs still to submit, in order.
        running: (cell, job) pairs already submitted (a SLURM array).
        report: gets the submissions, successes and failures.
    """
    limit = settings.cells_at_once or len(queue) + len(running)
    slurm = settings.kind == ExecutorKind.SLURM
    progress = _Progress()
    try:
        while queue or running:
            while queue and len(running) < limit:
                executor, cell = queue.pop(0)
                running.append((cell, _start(settings, executor, cell, report)))
            pending = sum(slurm and _job_state(j).startswith("PENDING") for _, j in running)
            progress.show(report, len(running) - pending, len(queue) + pending)
            # a debug job runs in _outcome (its done() would run it, and open pdb on an error)
            ended = [(c, j) for c, j in running if settings.kind == ExecutorKind.DEBUG or j.done()]
            for cell, job in ended:
                failure = _outcome(settings, cell, job)
                if failure is None:
                    report.succeeded.append(cell.cell.name)
                else:
                    report.failures.append(failure)
            running[:] = [(c, j) for c, j in running if all(j is not e for _, e in ended)]
            if not ended:
                time.sleep(15.0 if slurm else 0.5)
        progress.show(report, 0, 0)
    except KeyboardInterrupt:
        if settings.kind == ExecutorKind.LOCAL:
            for _, job in running:
                job.cancel(check=False)
            print(
                f"interrupted: {len(running)} running cell(s) stopped, {len(queue)} not "
                "started; re-run the same command to run them",
                flush=True,
            )
        raise


def _submit(settings: SweepSettings, cells: list[PlannedCell], report: SweepReport) -> None:
    """Submit the cells (SLURM: a job array per group of equal resources) and wait if asked."""
    groups = [(_make_executor(settings, p), g) for p, g in executor_groups(settings, cells)]
    if settings.kind != ExecutorKind.SLURM:
        queue = [(executor, cell) for executor, group in groups for cell in group]
        if not settings.waits:  # start them all: they run on their own
            for executor, cell in queue:
                _start(settings, executor, cell, report)
            return
        at_once = min(settings.cells_at_once or len(queue), len(queue))
        threads = settings.threads_per_cell
        each = f", {threads} torch thread(s) each" if threads else ""
        print(f"running {len(queue)} cell(s), {at_once} at a time{each}", flush=True)
        _pool(settings, queue, [], report)
        return
    running: list[tuple[PlannedCell, Any]] = []
    for executor, group in groups:
        for cell in group:
            (cell.directory / FAILED).unlink(missing_ok=True)
        jobs = executor.map_array(CellJob(), [str(c.directory) for c in group], [None] * len(group))
        for cell, job in zip(group, jobs, strict=True):
            _record(settings, cell, job, report)
            running.append((cell, job))
    if settings.waits:
        _pool(settings, [], running, report)


def launch_sweep(
    settings: SweepSettings,
    grid: Grid | None = None,
    on_start: Callable[[Grid], None] | None = None,
) -> SweepReport:
    """Validate the grid, then submit every cell that has not finished (or print, dry run).

    A dry run, an invalid grid and a refused re-run (a finished cell with another config) write
    nothing into ``settings.out``.

    Args:
        settings: the sweep.
        grid: the grid itself (e.g. a study's, built in code); None: read ``settings.grid``.
        on_start: called with the grid once every check has passed, just before the sweep's
            own files are written and its cells submitted (e.g. to keep the grid it runs).

    Returns:
        What was skipped, submitted, and (when waiting) what succeeded and failed.
    """
    grid, planned = plan_sweep(settings, grid)
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
    if on_start is not None:
        on_start(grid)
    _prepare(settings, grid, planned, todo)
    _submit(settings, todo, report)
    print(report.summary())
    return report
