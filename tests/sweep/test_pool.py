"""`cmpt sweep run`'s pool: cells at once, threads per cell, the progress line, the reported error.

The pool is driven with fake submitit jobs on a fake clock; the local executor itself runs in
test_launch.py's end-to-end sweep.
"""

import json
from pathlib import Path

import pytest
import submitit
import yaml

from cmpt_lightning.sweep import job as job_module
from cmpt_lightning.sweep import launch, plan
from cmpt_lightning.sweep.grid import expand_grid, load_grid
from cmpt_lightning.sweep.launch import launch_sweep
from cmpt_lightning.sweep.plan import SweepSettings
from tests.sweep.test_launch import DEMO


class Clock:
    """The pool's time: ``time.sleep`` advances it instead of waiting."""

    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds):
        self.now += seconds

    def monotonic(self):
        return self.now


class FakeJob:
    """A local job that ends ``duration`` seconds after it starts, writing its markers."""

    def __init__(self, executor, cell_dir, env):
        self.executor, self.cell_dir, self.env = executor, Path(cell_dir), env
        self.job_id = str(len(executor.started))
        self.start = executor.clock.now
        self.duration, self.error = executor.plan[self.cell_dir.name]
        self.paths = submitit.core.utils.JobPaths(executor.folder, self.job_id)
        self.cancelled = False

    def done(self):
        if self.executor.interrupt_at is not None and self.executor.clock.now >= (
            self.executor.interrupt_at
        ):
            raise KeyboardInterrupt
        return self.executor.clock.now >= self.start + self.duration

    def exception(self):
        if self.error is None:
            job_module.write_marker(self.cell_dir / "DONE", {"sweep_csv": "sweep.csv"})
            return None
        return self.error

    def cancel(self, check=True):
        self.cancelled = True

    @property
    def state(self):
        return "FINISHED"


class FakeExecutor:
    def __init__(self, folder, clock, plan, interrupt_at=None):
        self.folder, self.clock, self.plan = Path(folder), clock, plan
        self.interrupt_at = interrupt_at
        self.started = []

    def update_parameters(self, **params):
        self.params = params

    def submit(self, fn, cell_dir, env):
        job = FakeJob(self, cell_dir, env)
        self.started.append(job)
        return job


def _settings(tmp_path, rates, **kwargs):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"data.init_args.train_missing.rate": rates}))
    return SweepSettings(configs=[DEMO], grid=grid, out=tmp_path / "s", **kwargs)


@pytest.fixture
def fake_local(monkeypatch, tmp_path):
    """Run local sweeps on FakeExecutor: returns a function (settings, durations) -> executor."""
    clock = Clock()
    monkeypatch.setattr(launch.time, "sleep", clock.sleep)
    monkeypatch.setattr(launch.time, "monotonic", clock.monotonic)

    def run(settings, durations, interrupt_at=None):
        names = [cell.name for cell in expand_grid(load_grid(settings.grid))]
        cells = {n: (d, None) for n, d in zip(names, durations, strict=True)}
        run.executor = FakeExecutor(tmp_path / "logs", clock, cells, interrupt_at)
        monkeypatch.setattr(launch, "_make_executor", lambda s, p: run.executor)
        run.executor.report = launch_sweep(settings)
        return run.executor

    return run


def test_the_next_cell_starts_as_soon_as_one_ends(tmp_path, fake_local, capsys):
    settings = _settings(tmp_path, [0.1, 0.3, 0.5, 0.7, 0.9], parallelism=2)
    executor = fake_local(settings, durations=[10, 2, 2, 2, 2])
    starts = [job.start for job in executor.started]
    assert starts == [0, 0, 2, 4, 6]  # waves of 2 would start them at 0, 0, 10, 10, 12
    assert len(executor.report.succeeded) == 5 and not executor.report.failures
    out = capsys.readouterr().out
    assert "running 5 cell(s), 2 at a time" in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert lines[0] == "[0:00:00] 0 done, 2 running, 0 failed, 3 queued"
    assert lines[1] == "[0:00:02] 1 done, 2 running, 0 failed, 2 queued"
    assert lines[-1] == "[0:00:10] 5 done, 0 running, 0 failed, 0 queued"
    assert len(lines) == len(set(lines))  # printed only when it changes


def test_local_cells_get_their_share_of_the_cpus(tmp_path, fake_local, monkeypatch, capsys):
    monkeypatch.setattr(plan, "usable_cpus", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    settings = _settings(tmp_path, [0.1, 0.3, 0.5, 0.7, 0.9, 0.95], parallelism=4)
    executor = fake_local(settings, [1] * 6)
    assert [job.start for job in executor.started] == [0, 0, 0, 0, 1, 1]
    assert {job.env["OMP_NUM_THREADS"] for job in executor.started} == {"4"}  # 16 CPUs // 4
    assert "running 6 cell(s), 4 at a time, 4 torch thread(s) each" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("cpus", "omp", "parallelism", "cells", "threads"),
    [
        (2, None, None, 2, 1),  # a cell per CPU
        (1, None, None, 1, 1),
        (16, None, None, 8, 2),  # at most 8 cells: the other CPUs become threads
        (64, None, None, 8, 8),
        (16, "4", None, 4, 4),  # OMP_NUM_THREADS decides the threads, so the cells
        (16, None, 3, 3, 5),  # --parallelism decides the cells, so the threads
        (2, None, 4, 4, 1),  # more cells than CPUs asked for: one thread each
    ],
)
def test_default_cells_and_threads(monkeypatch, cpus, omp, parallelism, cells, threads):
    monkeypatch.setattr(plan, "usable_cpus", lambda: cpus)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    settings = SweepSettings(configs=[DEMO], grid="g.yaml", out="o", parallelism=parallelism)
    assert (settings.cells_at_once, settings.threads_per_cell) == (cells, threads)
    for kind, at_once in (("debug", 1), ("slurm", None)):
        other = SweepSettings(configs=[DEMO], grid="g.yaml", out="o", executor=kind)
        assert (other.cells_at_once, other.threads_per_cell) == (at_once, None)


def test_run_cell_sets_torch_threads(tmp_path, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(job_module, "_fit", lambda config: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # undone after the test
    with pytest.raises(RuntimeError, match=r"no sweep\.csv"):
        job_module.run_cell(str(tmp_path), {"OMP_NUM_THREADS": "3"})
    assert seen[0] == 3


def test_ctrl_c_stops_the_running_cells_and_starts_no_more(tmp_path, fake_local, capsys):
    settings = _settings(tmp_path, [0.1, 0.3, 0.5, 0.7], parallelism=2)
    with pytest.raises(KeyboardInterrupt):
        fake_local(settings, durations=[1, 5, 5, 5], interrupt_at=3)
    out = capsys.readouterr().out
    assert "interrupted: 2 running cell(s) stopped, 1 not started" in out
    executor = fake_local.executor
    assert len(executor.started) == 3
    assert [job.cancelled for job in executor.started] == [False, True, True]
    assert not (settings.out / "train_missing.rate=0.7" / "job.json").exists()


TRACEBACK = """submitit ERROR (2024-01-01 00:00:00,000) - Submitted job triggered an exception
Traceback (most recent call last):
  File "/x/submitit/core/_submit.py", line 11, in <module>
    submitit_main()
  File "/x/cmpt_lightning/sweep/job.py", line 180, in run_cell
    _fit(directory / "config.yaml")
ValueError: Invalid learning rate: -1.0
/x/lightning/pytorch/trainer/connectors/logger_connector.py:76: DeprecationWarning: the
  metric's logging is deprecated
  warnings.warn(
"""


def _failed_cell(tmp_path, error, marker=None):
    from cmpt_lightning.sweep.plan import PlannedCell

    directory = tmp_path / "cell"
    directory.mkdir()
    if marker is not None:
        job_module.write_marker(directory / "FAILED", marker)
    cell = PlannedCell(
        cell=type("Cell", (), {"name": "cell"})(),
        directory=directory,
        config="",
        devices=1,
        nodes=1,
        accelerator="cpu",
    )
    executor = FakeExecutor(tmp_path / "logs", Clock(), {"cell": (0, error)})
    return cell, executor.submit(None, directory, None)


@pytest.mark.parametrize(
    "error",
    [
        submitit.core.utils.UncompletedJobError(
            "Job 12 (task: 0) has not produced any output (state: FINISHED)\n"
            f"Error stream produced:\n{'-' * 40}\n{TRACEBACK}"
        ),
        submitit.core.utils.FailedJobError(
            f"Job (task=0) failed during processing with trace:\n{'-' * 22}\n{TRACEBACK}"
            f"{'-' * 22}\nYou can check full logs with 'job.stderr(0)'"
        ),
    ],
    ids=["uncompleted", "failed"],
)
def test_the_error_is_the_last_exception_not_a_later_warning(tmp_path, error):
    settings = _settings(tmp_path, [0.1], executor="local")
    cell, job = _failed_cell(tmp_path, error)
    failure = launch._outcome(settings, cell, job)
    assert failure.error == "ValueError: Invalid learning rate: -1.0"
    assert failure.stderr == str(job.paths.stderr)
    assert f"stderr: {job.paths.stderr}" in str(failure)
    marker = json.loads((cell.directory / "FAILED").read_text())
    assert marker["error"] == failure.error


def test_the_jobs_own_failed_marker_is_preferred(tmp_path):
    settings = _settings(tmp_path, [0.1], executor="local")
    error = submitit.core.utils.FailedJobError(f"trace:\n{'-' * 22}\n{TRACEBACK}{'-' * 22}\n")
    written = {"error": "RuntimeError: the real one", "traceback": "Traceback ...", "rank": 0}
    cell, job = _failed_cell(tmp_path, error, marker=written)
    failure = launch._outcome(settings, cell, job)
    assert failure.error == "RuntimeError: the real one"
    marker = json.loads((cell.directory / "FAILED").read_text())
    assert marker["traceback"] == "Traceback ..." and marker["error"] == failure.error


def test_without_a_traceback_the_last_line_is_reported():
    assert launch._exception_line("just\nwarnings\n") is None
    error = RuntimeError("killed\nDeprecationWarning: x")
    assert launch._error_message(error, None) == "DeprecationWarning: x"
