"""What runs for one cell of a sweep, and the marker files that record how it went.

A cell's directory holds:

- ``config.yaml``: its resolved ``cmpt fit`` config (base + grid values + sweep settings);
- ``cell.json``: its name and grid values;
- ``job.json``: the last submission (executor, job id, attempt, submitit's log paths);
- ``DONE``: written by the job only after fit and the test sweep succeeded, with the path of
  the cell's ``sweep.csv`` and the checkpoint callback's best validation score (``val_score``,
  its ``val_monitor`` and ``val_mode``; absent from markers of cmpt 0.2 and when the run saved
  no ``last.ckpt``), on which ``cmpt study`` selects hyper-parameters; a re-run skips cells
  that have it;
- ``FAILED``: the last failure (status, error, log paths); a re-run retries such cells.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..cli import run_fit

__all__ = [
    "CellState",
    "best_validation",
    "omp_threads",
    "read_marker",
    "run_cell",
    "usable_cpus",
    "write_marker",
]

DONE = "DONE"
FAILED = "FAILED"
JOB = "job.json"
#: The exit status of a local job that submitit's handler requeued on its time-out signal
#: (``submitit.local.local.LOCAL_REQUEUE_RETURN_CODE``): the job starts again, no failure.
LOCAL_REQUEUE = 144


def write_marker(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a JSON marker atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """A JSON marker's content, None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text() or "{}")
    except json.JSONDecodeError:
        return {"error": f"unreadable marker {path}"}
    return data if isinstance(data, dict) else {"value": data}


@dataclass
class CellState:
    """The markers of one cell directory.

    Attributes:
        done: the ``DONE`` marker (None if the cell has not finished).
        failed: the ``FAILED`` marker (None if its last attempt did not fail).
        job: the last submission's ``job.json`` (None if never submitted).
    """

    done: dict[str, Any] | None
    failed: dict[str, Any] | None
    job: dict[str, Any] | None

    @classmethod
    def read(cls, directory: str | Path) -> CellState:
        """Read the markers of ``directory``."""
        directory = Path(directory)
        return cls(
            read_marker(directory / DONE),
            read_marker(directory / FAILED),
            read_marker(directory / JOB),
        )


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and SLURM restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is set to a positive number, else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _job_info() -> dict[str, Any]:
    """Job id, rank and log paths when running inside a submitit job (empty otherwise)."""
    try:
        import submitit

        env = submitit.JobEnvironment()
    except (ImportError, RuntimeError):  # not inside a submitit job (plain call, debug executor)
        return {}
    info: dict[str, Any] = {"job_id": env.job_id, "rank": env.global_rank}
    if "SUBMITIT_FOLDER" in os.environ:
        info.update(stdout=str(env.paths.stdout), stderr=str(env.paths.stderr))
    return info


def resume_point(cell_dir: Path) -> Path | None:
    """The newest checkpoint an earlier attempt of the cell left, to resume from.

    A preempted or failed job that is requeued or retried continues from there instead of
    starting over: Lightning's SLURM checkpoint (``hpc_ckpt_<n>.ckpt``) or the ``last.ckpt`` of
    the checkpoint callback, whichever is newer. None when the cell never saved one.
    """
    candidates = [*cell_dir.rglob("hpc_ckpt_*.ckpt"), *cell_dir.rglob("last.ckpt")]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def best_validation(cell_dir: Path) -> dict[str, Any]:
    """The checkpoint callback's best validation score, from the cell's newest ``last.ckpt``.

    That is the last attempt's, or an earlier one's when the last resumed from a finished fit
    and trained no further (the callback's state survives a resume).

    Args:
        cell_dir: the cell's directory.

    Returns:
        ``{"val_score": ..., "val_monitor": ..., "val_mode": ...}``; empty when no such
        checkpoint exists, it holds no ``ModelCheckpoint`` state with a best score, or it
        cannot be read.
    """
    found = list(cell_dir.rglob("last.ckpt"))
    if not found:
        return {}
    path = max(found, key=lambda p: p.stat().st_mtime)
    try:  # memory-mapped: only the callbacks' small state is read from the file
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError):
        return {}
    for key, state in (checkpoint.get("callbacks") or {}).items():
        score = state.get("best_model_score") if isinstance(state, dict) else None
        if score is None:
            continue
        mode = re.search(r"'mode': '(\w+)'", str(key))
        return {
            "val_score": float(score),
            "val_monitor": state.get("monitor"),
            "val_mode": mode.group(1) if mode else "max",
        }
    return {}


def _fit(config: Path) -> None:
    """``cmpt fit --config CONFIG`` in this process, resuming from the cell's newest checkpoint.

    Resumes from :func:`resume_point` of the cell when an earlier attempt saved a checkpoint.
    """
    checkpoint = resume_point(config.parent)
    try:
        run_fit(config, checkpoint)
    except SystemExit as exit_:  # the config did not parse (the parser printed why), or:
        if isinstance(exit_, SIGTERMException) or exit_.code == LOCAL_REQUEUE:
            raise  # SLURM ends the job (requeue, scancel), or submitit requeued it: no failure
        if exit_.code not in (0, None):
            msg = f"cmpt fit --config {config} exited with status {exit_.code}"
            raise RuntimeError(msg) from exit_


class CellJob:
    """The callable each job runs: :func:`run_cell`, requeued when interrupted.

    On SLURM, Lightning requeues: the job script asks for its requeue signal before the time
    limit and on preemption (:data:`~cmpt_lightning.sweep.plan.REQUEUE_SIGNAL`), on which the
    trainer saves ``hpc_ckpt_<n>.ckpt`` and runs ``scontrol requeue``; the requeued job runs this
    same callable, which resumes from that checkpoint (:func:`resume_point`). The SIGTERM that
    ends the old job is no failure: no ``FAILED`` marker. submitit's handler, on a signal SLURM
    does not send, only acts when a job is interrupted by hand (``job._interrupt()``, local
    time-outs): it asks :meth:`checkpoint` what to resubmit, the same cell, which resumes too.
    """

    def __call__(self, cell_dir: str, env: dict[str, str | None] | None = None) -> str:
        """Run the cell (see :func:`run_cell`)."""
        return run_cell(cell_dir, env)

    def checkpoint(self, cell_dir: str, env: dict[str, str | None] | None = None) -> Any:
        """What submitit resubmits on a time-out: this same cell, which will resume."""
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(), cell_dir, env)


def run_cell(cell_dir: str, env: dict[str, str | None] | None = None) -> str:
    """The job of one cell: fit, test the best checkpoint with the one-pass sweep, mark DONE.

    The cell's ``config.yaml`` sets ``test_after_fit``, the test sweep and the run directory.
    With several ranks (SLURM tasks), every rank runs this; rank 0 writes the markers.

    Args:
        cell_dir: the cell's directory (holds ``config.yaml``).
        env: environment variables to set first (None: unset), e.g. the launcher's
            ``CUDA_VISIBLE_DEVICES``, which submitit's local executor overwrites, and
            ``OMP_NUM_THREADS``, which also sets torch's threads (a local sweep's share of CPUs).

    Returns:
        The path of the cell's ``sweep.csv`` ("" on ranks other than 0).
    """
    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    threads = (env or {}).get("OMP_NUM_THREADS")
    if threads:  # torch was imported (and read the variable) before it was set here
        torch.set_num_threads(int(threads))
    directory = Path(cell_dir)
    info = _job_info()
    rank = int(info.get("rank", 0))
    start = time.time()
    try:
        _fit(directory / "config.yaml")
        if rank != 0:
            return ""
        written = [p for p in directory.rglob("sweep.csv") if p.stat().st_mtime >= start - 1]
        if not written:
            msg = (
                f"fit and test finished but no sweep.csv was written under {directory}; keep "
                "the logger's save_dir unset so that the run directory follows default_root_dir"
            )
            raise RuntimeError(msg)
    except Exception as err:
        if rank == 0:
            failure = {"status": "exception in the job", "error": f"{type(err).__name__}: {err}"}
            failure.update(traceback=traceback.format_exc(limit=-8), finished=_now(), **info)
            write_marker(directory / FAILED, failure)
        raise
    sweep_csv = max(written, key=lambda p: p.stat().st_mtime)
    (directory / FAILED).unlink(missing_ok=True)
    done = {"sweep_csv": str(sweep_csv.relative_to(directory)), "finished": _now()}
    write_marker(directory / DONE, {**done, **best_validation(directory), **info})
    return str(sweep_csv)
