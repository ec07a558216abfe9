"""Faults a user meets, each as the verifier found it (issue 13); all must fail without the fix.

Here: bad input on the command line (one message naming the key and the value, exit status 2, no
traceback), options that survive ``--ckpt_path``, and a sweep cell killed mid-training and
retried. Checkpoint faults (last = final epoch, read-only folder, full disk) are in
``tests/test_checkpoints.py``; bad data files in ``tests/datasets/``.
"""

import csv
import json
from pathlib import Path

import pytest
import yaml

from cmpt_lightning.sweep.launch import launch_sweep
from cmpt_lightning.sweep.plan import SweepSettings
from tests.helpers import cmpt

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo_random.yaml")
SMALL = {
    "data.init_args.train_size": 48,
    "data.init_args.val_size": 16,
    "data.init_args.test_size": 24,
    "data.init_args.batch_size": 12,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
}


def _flags(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in (f"--{k}", json.dumps(v))]


@pytest.mark.parametrize(
    ("args", "key", "value"),
    [
        (["--data.init_args.eval_missing.rate", "1.5"], "data.init_args.eval_missing.rate", "1.5"),
        (["--data.init_args.train_missing.type", "audio"], "train_missing.type", "'audio'"),
        (["--data.init_args.train_missing.both_ratio", "2"], "train_missing.both_ratio", "2"),
        (["--model.init_args.test_grid.rates", "[0, 1.5]"], "test_grid.rates", "1.5"),
        (["--model.init_args.sweep.rates", "[0, 1.5]"], "sweep.rates", "1.5"),
        (["--data.init_args.eval_missing.rate", "abc"], "eval_missing.rate", "'abc'"),
        (["--model.init_args.lora_rank", "-1"], "model.init_args.lora_rank", "-1"),
        (["--model.init_args.fusion", "magic"], "model.init_args.fusion", "'magic'"),
        (["--data.init_args.batch_size", "0"], "data.init_args.batch_size", "0"),
        (["--trainer.accelerator", "gpu"], "", "gpu"),
    ],
)
def test_a_bad_value_is_one_message_naming_the_key(args, key, value, tmp_path, capsys):
    code = cmpt(["fit", "--config", DEMO, *args, "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert "Traceback" not in err and len(lines) < 15, err
    assert key in lines[0] and value in lines[0], lines[0]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_the_full_report_is_behind_cmpt_debug(monkeypatch, tmp_path):
    monkeypatch.setenv("CMPT_DEBUG", "1")
    with pytest.raises(ValueError, match="missing rate must be in"):
        cmpt(["fit", "--config", DEMO, "--data.init_args.eval_missing.rate", "1.5"])


def test_options_survive_ckpt_path(tmp_path, capsys):
    """The test grid and the optimizer given in a second config file survive a resume and a
    test from a checkpoint (Lightning rebuilds the model from the checkpoint's hparams)."""
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "model:\n  init_args:\n    test_grid: {rates: [0, 0.5, 1], types: [both]}\n"
        "    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.02}}\n"
    )
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["--config", DEMO, "--config", str(extra), *_flags(SMALL), "--test_after_fit", "false"]
    assert (
        cmpt(["fit", *base, "--trainer.max_epochs", "1", "--trainer.default_root_dir", first]) == 0
    )
    last = next(first.rglob("last.ckpt"))
    resumed = ["--trainer.max_epochs", "2", "--trainer.default_root_dir", str(second)]
    assert cmpt(["fit", *base, *resumed, "--ckpt_path", str(last)]) == 0
    saved = [yaml.safe_load(next(d.rglob("config.yaml")).read_text()) for d in (first, second)]
    for config in saved:
        for key in ("ckpt_path", "trainer"):
            config.pop(key)
    assert saved[0] == saved[1]  # the resumed run's config equals the original's
    assert saved[1]["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.02
    test_dir = tmp_path / "test"
    args = ["test", *base, "--trainer.default_root_dir", str(test_dir), "--ckpt_path", str(last)]
    assert cmpt(args) == 0
    with next(test_dir.rglob("sweep.csv")).open() as f:
        assert [float(r["rate"]) for r in csv.DictReader(f)] == [0.0, 0.5, 1.0]


def test_a_killed_sweep_cell_retried_ends_like_an_uninterrupted_one(tmp_path, monkeypatch):
    """SIGKILL in epoch 2 of 3; the retry resumes from last.ckpt and ends DONE with results equal
    to those of a cell that was never killed."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    marker = tmp_path / "kill_marker"
    kill = {
        "class_path": "tests.helpers.KillOnce",
        "init_args": {"step": 5, "marker": str(marker)},
    }
    grid = tmp_path / "grid.yaml"
    axes = {**{k: [v] for k, v in SMALL.items()}, "trainer.max_epochs": [3]}
    axes["trainer.callbacks"] = [[kill]]
    grid.write_text(yaml.safe_dump(axes))
    results = {}
    for name, killed in (("uninterrupted", False), ("killed", True)):
        if not killed:
            marker.write_text("never kill\n")
        else:
            marker.unlink()
        settings = SweepSettings(
            configs=[DEMO],
            grid=grid,
            out=tmp_path / name,
            executor="local" if killed else "debug",  # a SIGKILL needs its own process
            test_rates=[0.0, 0.5, 1.0],
            test_types=["both"],
        )
        report = launch_sweep(settings)
        if killed:
            assert marker.read_text() == "killed\n" and len(report.failures) == 1
            report = launch_sweep(settings)  # the retry, as re-running the command does
        assert report.succeeded == ["default"] and not report.failures
        cell = tmp_path / name / "default"
        done = json.loads((cell / "DONE").read_text())
        results[name] = (cell / done["sweep_csv"]).read_text()
    killed, uninterrupted = (list(csv.DictReader(results[k].splitlines())) for k in results)
    assert [list(row) for row in killed] == [list(row) for row in uninterrupted]
    for got, want in zip(killed, uninterrupted, strict=True):
        for key, value in want.items():
            if key.startswith("proxy_") and value != "nan":
                # means of float distances: the cell's own process and the in-process run use
                # different thread counts, which move their last bits (accuracies are exact)
                assert float(got[key]) == pytest.approx(float(value), rel=1e-5), key
            else:
                assert got[key] == value, key


def _csv_run(tmp_path, edit) -> tuple[int, str]:
    """`cmpt fit` on a copy of the fake CSV data, after ``edit(root)`` breaks it."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(ROOT / "tests" / "data" / "csv", root)
    edit(root)
    config = {
        "model": {"class_path": "cmpt_lightning.CMPTModule", "init_args": {"clip": "cmpt-tiny"}},
        "data": {
            "class_path": "cmpt_lightning.MultimodalCSVDataModule",
            "init_args": {"root": str(root), "data_file": "data.csv", "batch_size": 4},
        },
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "default_root_dir": str(tmp_path)},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return cmpt(["fit", "--config", str(path)]), str(root / "data.csv")


def _edit_lines(root, change) -> None:
    lines = (root / "data.csv").read_text().splitlines()
    (root / "data.csv").write_text("\n".join(change(lines)) + "\n")


@pytest.mark.parametrize(
    ("case", "edit", "expected"),
    [
        (
            "missing label column",
            lambda root: _edit_lines(
                root, lambda ls: [",".join(x.split(",")[:3] + x.split(",")[4:]) for x in ls]
            ),
            "no label column 'label'",
        ),
        (
            "NaN label",
            lambda root: _edit_lines(
                root, lambda ls: [ls[0], ls[1].replace(",bird,", ",nan,"), *ls[2:]]
            ),
            "data.csv:2",
        ),
        (
            "unreadable image",
            lambda root: (root / "images" / "000.jpg").write_bytes(b"not an image"),
            "000.jpg: unreadable image",
        ),
    ],
)
def test_a_data_problem_is_one_short_message_naming_the_file(
    case, edit, expected, tmp_path, capsys
):
    code, _ = _csv_run(tmp_path, edit)
    err = capsys.readouterr().err
    assert code == 2, case
    assert "Traceback" not in err and len(err.strip().splitlines()) < 15, err
    assert expected in err, err
