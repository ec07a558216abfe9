"""`cmpt sweep`: slurm dry run, skip/retry bookkeeping, a local end-to-end sweep with collect."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from cmpt_lightning.sweep import job as job_module
from cmpt_lightning.sweep.launch import launch_sweep
from cmpt_lightning.sweep.plan import SweepSettings, parse_minutes
from tests.helpers import cmpt as main

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo_random.yaml")
RATE = "data.init_args.train_missing.rate"
#: fixed overrides that keep a cell to a few seconds of CPU
SMALL = {
    "trainer.max_epochs": [1],
    "trainer.enable_progress_bar": [False],
    "trainer.enable_model_summary": [False],
    "data.init_args.train_size": [48],
    "data.init_args.val_size": [24],
    "data.init_args.test_size": [24],
    "data.init_args.batch_size": [12],
}
TEST_SWEEP = ["--test_rates", "[0, 0.5, 1]", "--test_types", "[text, both]"]


def _grid(tmp_path, axes, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**axes, **SMALL}, sort_keys=False))
    return str(path)


def _args(grid, out, *extra):
    return [
        "sweep",
        "run",
        "--config",
        DEMO,
        "--grid",
        grid,
        "--out",
        str(out),
        *TEST_SWEEP,
        *extra,
    ]


@pytest.mark.parametrize(
    ("value", "minutes"), [(90, 90), ("90", 90), ("4:00:00", 240), ("1-12", 2160), ("0:0:30", 1)]
)
def test_time_limits(value, minutes):
    assert parse_minutes(value) == minutes


@pytest.mark.parametrize("value", ["soon", "0", "1:2:3:4", True])
def test_bad_time_limits(value):
    with pytest.raises(ValueError, match="time limit"):
        parse_minutes(value)


SBATCH_LINES = [
    "#SBATCH --partition=gpu",
    "#SBATCH --account=proj",
    "#SBATCH --gpus-per-node=2",
    "#SBATCH --ntasks-per-node=2",  # one task per trainer device, as Lightning needs
    "#SBATCH --cpus-per-task=6",
    "#SBATCH --mem=64G",
    "#SBATCH --time=120",
    "#SBATCH --array=0-3%2",  # 4 cells, 2 at a time
    "#SBATCH --constraint=a100",
    "#SBATCH --signal=USR1@90",  # Lightning's requeue signal (see test_requeue.py)
    "#SBATCH --requeue",
    "source .venv/bin/activate",
    "submitit.core._submit",
]


def test_slurm_dry_run_prints_the_sbatch_with_the_requested_resources(tmp_path, capsys):
    grid = _grid(tmp_path, {RATE: [0.3, 0.7], "seed_everything": [0, 1], "trainer.devices": [2]})
    out = tmp_path / "sweep"
    code = main(
        [
            *_args(grid, out, "--executor", "slurm", "--dry_run"),
            *("--slurm.partition", "gpu", "--slurm.account", "proj", "--slurm.gpus_per_node", "2"),
            *("--slurm.cpus_per_task", "6", "--slurm.mem", "64G", "--time", "2:00:00"),
            *("--slurm.array_parallelism", "2", "--slurm.extra", "{constraint: a100}"),
            *("--slurm.setup+", "source .venv/bin/activate"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    for line in SBATCH_LINES:
        assert line in text, line
    assert "train_missing.rate=0.7__seed_everything=1" in text
    assert not out.exists()  # nothing submitted, nothing written


def test_the_spellings_of_0_1_still_work_with_a_warning(tmp_path, capsys):
    grid = _grid(tmp_path, {RATE: [0.3, 0.7], "seed_everything": [0, 1], "trainer.devices": [2]})
    args = ["sweep", "--config", DEMO, "--grid", grid, "--out", str(tmp_path / "s")]
    with pytest.warns(FutureWarning, match="deprecated") as caught:
        code = main(
            [
                *args,
                *("--test-rates", "0", "0.5", "1", "--test-types", "text", "both"),
                *("--executor", "slurm", "--dry-run", "--slurm.partition", "gpu"),
                *("--slurm.account", "proj", "--slurm.gpus-per-node", "2"),
                *("--slurm.cpus-per-task", "6", "--slurm.mem", "64G", "--time", "2:00:00"),
                *("--slurm.array-parallelism", "2", "--slurm.extra", "constraint=a100"),
                *("--slurm.setup", "source .venv/bin/activate"),
            ]
        )
    assert code == 0
    text = capsys.readouterr().out
    for line in SBATCH_LINES:
        assert line in text, line
    assert "test grid rates [0.0, 0.5, 1.0] types ['text', 'both']" in text
    said = " ".join(str(w.message) for w in caught)
    for new in ("--dry_run", "--test_rates '[a, b]'", "--slurm.gpus_per_node", "--slurm.extra '{"):
        assert new in said, new


def test_slurm_tasks_must_match_the_trainer_devices(tmp_path, capsys):
    grid = _grid(tmp_path, {RATE: [0.3], "trainer.devices": [2]})
    code = main([*_args(grid, tmp_path / "o", "--executor", "slurm", "--dry_run"),
                 "--slurm.tasks_per_node", "1"])  # fmt: skip
    assert code == 2
    assert "does not match trainer.devices 2" in capsys.readouterr().err


@pytest.fixture
def fake_fit(monkeypatch):
    """Replace the training by a sweep.csv writer; cells whose config says so fail once."""
    calls = []

    def fit(config: Path) -> None:
        cell = config.parent
        calls.append(cell.name)
        seed = yaml.safe_load(config.read_text())["seed_everything"]
        if seed == 1 and calls.count(cell.name) == 1:
            msg = "transient trouble"
            raise RuntimeError(msg)
        run = cell / "lightning_logs" / "version_0"
        run.mkdir(parents=True, exist_ok=True)
        (run / "sweep.csv").write_text("type,rate,acc,count_complete\ntext,0.0,0.5,4\n")

    monkeypatch.setattr(job_module, "_fit", fit)
    return calls


def test_rerun_skips_finished_cells_and_retries_failed_ones(tmp_path, fake_fit, capsys):
    grid = _grid(tmp_path, {RATE: [0.3, 0.7], "seed_everything": [0, 1]})
    settings = SweepSettings(configs=[DEMO], grid=grid, out=tmp_path / "s", executor="debug")
    first = launch_sweep(settings)
    failed = sorted(f.cell for f in first.failures)
    assert failed == ["train_missing.rate=0.3__seed_everything=1",
                      "train_missing.rate=0.7__seed_everything=1"]  # fmt: skip
    assert "RuntimeError: transient trouble" in first.failures[0].error
    out = capsys.readouterr().out
    assert "FAILED train_missing.rate=0.3__seed_everything=1" in out
    progress = re.findall(r"^\[\d+:\d\d:\d\d\] (.*)$", out, re.MULTILINE)  # one cell at a time
    assert progress[0] == "0 done, 1 running, 0 failed, 3 queued"
    assert progress[-1] == "2 done, 0 running, 2 failed, 0 queued"
    marker = json.loads((tmp_path / "s" / failed[0] / "FAILED").read_text())
    assert "transient trouble" in marker["error"]
    assert not (tmp_path / "s" / failed[0] / "DONE").exists()

    second = launch_sweep(settings)
    assert sorted(second.succeeded) == failed and not second.failures
    assert len(second.skipped) == 2
    assert "retrying train_missing.rate=0.3__seed_everything=1" in capsys.readouterr().out
    assert len(fake_fit) == 6  # 4 first, then only the 2 failed ones
    assert not (tmp_path / "s" / failed[0] / "FAILED").exists()
    job = json.loads((tmp_path / "s" / failed[0] / "job.json").read_text())
    assert job["attempt"] == 2

    third = launch_sweep(settings)
    assert len(third.skipped) == 4 and not third.submitted and len(fake_fit) == 6


def test_a_finished_cell_with_another_config_is_refused(tmp_path, fake_fit):
    grid = _grid(tmp_path, {RATE: [0.3, 0.7]})
    settings = SweepSettings(configs=[DEMO], grid=grid, out=tmp_path / "s", executor="debug")
    launch_sweep(settings)
    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(grid).read_text().replace("max_epochs:\n- 1", "max_epochs:\n- 2"))
    settings.grid = changed
    files = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="different config"):
        launch_sweep(settings)
    settings.dry_run = True  # a dry run of the changed grid: printed, nothing written
    launch_sweep(settings)
    assert {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()} == files


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A real 2 x 2 sweep (train rate x seed) with the local executor: one subprocess per cell."""
    tmp = tmp_path_factory.mktemp("local")
    grid = _grid(tmp, {RATE: [0.3, 0.7], "seed_everything": [0, 1]})
    out = tmp / "sweep"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # the cells' processes share two cores
        code = main(_args(grid, out, "--executor", "local", "--parallelism", "2"))
    return grid, out, code


def test_local_sweep_fits_and_tests_every_cell(local_sweep):
    _, out, code = local_sweep
    assert code == 0
    cells = sorted(p for p in out.iterdir() if (p / "cell.json").exists())
    assert len(cells) == 4
    for cell in cells:
        done = json.loads((cell / "DONE").read_text())
        with (cell / done["sweep_csv"]).open() as f:
            rows = list(csv.DictReader(f))
        assert [(r["type"], float(r["rate"])) for r in rows] == [
            ("text", 0.0), ("text", 0.5), ("text", 1.0), ("both", 0.0), ("both", 0.5), ("both", 1.0)
        ]  # fmt: skip
        config = yaml.safe_load((cell / "config.yaml").read_text())
        assert config["trainer"]["default_root_dir"] == str(cell)
        assert list(cell.rglob("best-*.ckpt"))
        assert Path(done["stderr"]).is_file()  # submitit's log of the job


def test_local_sweep_rerun_skips_finished_cells(local_sweep, capsys):
    grid, out, _ = local_sweep
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")}
    logs = sorted((out / "logs").iterdir())
    assert main(_args(grid, out, "--executor", "local")) == 0
    assert "4 already finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")} == before  # nothing re-trained
    assert sorted((out / "logs").iterdir()) == logs  # nothing submitted


def test_local_sweep_collects_mean_and_std_over_seeds(local_sweep, capsys):
    _, out, _ = local_sweep
    assert main(["sweep", "collect", str(out)]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 6  # train rates x (test type, test rate)
    assert list(rows[0])[:6] == [
        "train_missing.rate", "test_type", "test_rate", "n_seeds", "acc_mean", "acc_std"
    ]  # fmt: skip
    assert {r["n_seeds"] for r in rows} == {"2"}
    assert {r["train_missing.rate"] for r in rows} == {"0.3", "0.7"}
    assert "± " in (out / "results.md").read_text()
    for name in ("heatmap.png", "curves.png"):
        assert (out / name).stat().st_size > 1000
    assert "results.csv" in capsys.readouterr().out


def test_local_failure_is_reported_with_its_log(tmp_path, capsys):
    grid = _grid(tmp_path, {"model.init_args.optimizer.init_args.lr": [-1.0]})
    out = tmp_path / "sweep"
    assert main(_args(grid, out, "--executor", "local")) == 1
    text = capsys.readouterr().out
    assert "FAILED default" in text and "Invalid learning rate" in text
    marker = json.loads((out / "default" / "FAILED").read_text())
    assert "Invalid learning rate" in Path(marker["stderr"]).read_text()  # the log it names
    assert f"stderr: {marker['stderr']}" in text
    assert not (out / "default" / "DONE").exists()


def test_a_retried_cell_resumes_from_its_newest_checkpoint(tmp_path):
    import os
    import time

    from cmpt_lightning.sweep.job import resume_point

    assert resume_point(tmp_path) is None
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    assert resume_point(tmp_path) == last
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"x")
    later = time.time() + 5
    os.utime(hpc, (later, later))
    assert resume_point(tmp_path) == hpc


def test_cell_job_resubmits_itself_on_timeout(tmp_path):
    from cmpt_lightning.sweep.job import CellJob

    delayed = CellJob().checkpoint(str(tmp_path), None)
    assert isinstance(delayed.function, CellJob)
    assert delayed.args == (str(tmp_path), None)
