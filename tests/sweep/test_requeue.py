"""SLURM requeue: the job script's ``--signal`` is the one the cell's trainer saves and requeues on.

Without SLURM: the dry run gives the sbatch text; the cell then runs in process with SLURM's
variables set and submitit's own signal handlers installed first, as in a real SLURM job, and
gets the signal the sbatch names in the middle of its fit.
"""

import re
import signal

import pytest
import submitit
import torch
import yaml
from lightning.pytorch.trainer.connectors import signal_connector
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cmpt_lightning.sweep.job import CellJob
from cmpt_lightning.sweep.launch import launch_sweep
from cmpt_lightning.sweep.plan import SweepSettings
from tests.helpers import cmpt as main
from tests.sweep.test_launch import DEMO, RATE, SMALL

GRID = {RATE: [0.3], **SMALL}
SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NAME": "cmpt-sweep",
    "SLURM_NODELIST": "localhost",
    "SLURM_LOCALID": "0",
    "SLURM_PROCID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NTASKS_PER_NODE": "1",
}
HANDLED = (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture
def keep_signal_handlers():
    before = {s: signal.getsignal(s) for s in HANDLED}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def _sbatch_signal(tmp_path, capsys, *extra):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    args = ["sweep", "run", "--config", DEMO, "--grid", grid, "--out", tmp_path / "dry"]
    code = main([*args, "--executor", "slurm", "--dry_run", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_sbatch_asks_for_the_signal_the_cell_requeues_on(
    tmp_path, capsys, monkeypatch, keep_signal_handlers
):
    code, text, _ = _sbatch_signal(tmp_path, capsys)
    assert code == 0
    (name, delay), *more = re.findall(r"^#SBATCH --signal=(\w+)@(\d+)$", text, re.MULTILINE)
    assert not more and delay == "90"
    assert re.search(r"^#SBATCH --requeue$", text, re.MULTILINE)
    sent = signal.Signals[f"SIG{name}"]

    # the job as submitit runs it on SLURM: its handlers first, then the cell's trainer
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    paths = submitit.core.utils.JobPaths(tmp_path / "logs", "4242")
    delayed = submitit.helpers.DelayedSubmission(CellJob(), str(tmp_path), None)
    submitit.slurm.slurm.SlurmJobEnvironment()._handle_signals(paths, delayed)
    submitits = signal.getsignal(signal.SIGUSR2)
    assert getattr(submitits, "__self__", None).__class__.__name__ == "SignalHandler"
    assert sent != signal.SIGUSR2  # submitit's handler never gets the sbatch's signal

    requeued = []
    monkeypatch.setattr(signal_connector, "call", lambda cmd, **kw: requeued.append(cmd) or 0)
    kill = {"class_path": "tests.helpers.KillAtStep", "init_args": {"step": 2}}
    kill["init_args"]["signal_name"] = sent.name  # the sbatch's signal, at the 3rd step
    grid = tmp_path / "kill.yaml"
    grid.write_text(yaml.safe_dump({**GRID, "trainer.callbacks": [[kill]]}))
    out = tmp_path / "sweep"
    report = launch_sweep(
        SweepSettings(
            configs=[DEMO],
            grid=grid,
            out=out,
            executor="debug",
            test_rates=[0.0],
            test_types=["both"],
        )
    )

    assert report.succeeded == ["default"] and not report.failures  # the fit went on
    assert requeued == [["scontrol", "requeue", "4242"]]  # Lightning requeued, once
    (hpc,) = (out / "default").rglob("hpc_ckpt_*.ckpt")  # and saved where the cell resumes
    assert torch.load(hpc, weights_only=True)["global_step"] == 2
    assert signal.getsignal(signal.SIGUSR2) is submitits


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--slurm.extra", "{signal: USR2@60}"], "--slurm.extra sets 'signal'"),
        (["--slurm.job_name", "interactive"], "job_name is 'interactive'"),
        (["--slurm.signal_delay_s", "0"], "signal_delay_s is 0"),
    ],
)
def test_a_setting_that_breaks_the_requeue_is_refused(tmp_path, capsys, extra, match):
    code, _, err = _sbatch_signal(tmp_path, capsys, *extra)
    assert code == 2
    assert match in err and "SIGUSR1" in err


def test_the_signal_delay_is_an_option(tmp_path, capsys):
    code, text, _ = _sbatch_signal(tmp_path, capsys, "--slurm.signal_delay_s", "300")
    assert code == 0 and "#SBATCH --signal=USR1@300" in text


def test_submitits_handler_on_the_same_signal_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(submitit.JobEnvironment, "USR_SIG", "USR1")  # SUBMITIT_PREEMPT_SIGNAL
    code, _, err = _sbatch_signal(tmp_path, capsys)
    assert code == 2 and "SUBMITIT_PREEMPT_SIGNAL is USR1" in err


@pytest.mark.parametrize(
    "exit_",
    [
        SIGTERMException(),  # what the trainer raises once SLURM stops the old job
        SystemExit(submitit.local.local.LOCAL_REQUEUE_RETURN_CODE),  # a local job requeued
    ],
    ids=["sigterm", "local-requeue"],
)
def test_the_exit_that_ends_a_requeued_job_is_no_failure(tmp_path, monkeypatch, exit_):
    from cmpt_lightning.sweep import job as job_module

    def fit(config, checkpoint):
        raise exit_

    monkeypatch.setattr(job_module, "run_fit", fit)
    with pytest.raises(SystemExit) as raised:
        job_module.run_cell(str(tmp_path))
    assert raised.value is exit_  # the process exits with it: submitit/SLURM take it from there
    assert not (tmp_path / "FAILED").exists() and not (tmp_path / "DONE").exists()


class RequeuedJob:
    """submitit's SlurmJob of a cell that SLURM requeued (sacct says so)."""

    def __init__(self, folder, job_id):
        self.job_id = job_id

    state = "REQUEUED"


def test_a_requeued_cell_is_left_alone_despite_an_old_failed_marker(tmp_path, monkeypatch, capsys):
    from cmpt_lightning.sweep.job import write_marker

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    settings = SweepSettings(configs=[DEMO], grid=grid, out=tmp_path / "s", executor="slurm")
    cell = settings.out / "default"
    cell.mkdir(parents=True)
    write_marker(cell / "job.json", {"executor": "slurm", "job_id": "77_0", "attempt": 1})
    write_marker(cell / "FAILED", {"status": "exception in the job", "error": "interrupted"})
    monkeypatch.setattr(submitit, "SlurmJob", RequeuedJob)
    report = launch_sweep(settings)
    assert report.in_progress == ["default"] and not report.submitted
    assert "retrying" not in capsys.readouterr().out
