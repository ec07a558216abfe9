import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, DistributedSampler

from cmpt_lightning import CMPTModule, MissingConfig, SweepConfig, SyntheticDataModule
from cmpt_lightning.sweep import select_case_logits

ROOT = Path(__file__).resolve().parents[1]
CELLS = [("text", 0.3), ("image", 0.7), ("both", 0.5), ("both", 1.0), ("text", 0.0)]


def _trainer(tmp_path):
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def _data(**kwargs):
    return SyntheticDataModule(train_size=64, val_size=16, test_size=61, batch_size=16, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained module, so that the three cases really differ."""
    seed_everything(0)
    module = CMPTModule(num_classes=6)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=8,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=tmp_path_factory.mktemp("fit"),
    )
    trainer.fit(module, datamodule=_data(train_missing=MissingConfig(rate=0.5, type="both")))
    return module


def test_sweep_cells_equal_separate_runs_exactly(trained, tmp_path):
    trained.sweep = SweepConfig(rates=[0.0, 0.3, 0.5, 0.7, 1.0], types=["text", "image", "both"])
    _trainer(tmp_path).test(trained, datamodule=_data(), verbose=False)
    cells = {(r["type"], r["rate"]): r for r in trained.sweep_results}
    assert len(cells) == 15
    trained.sweep = None
    for missing_type, rate in CELLS:
        data = _data(eval_missing=MissingConfig(rate=rate, type=missing_type))
        metrics = _trainer(tmp_path).test(trained, datamodule=data, verbose=False)[0]
        cell = cells[(missing_type, rate)]
        assert metrics["test/acc"] == pytest.approx(cell["acc"], abs=0, rel=0), (missing_type, rate)
        for case in ("complete", "image_only", "text_only"):
            assert metrics[f"test/count_{case}"] == cell[f"count_{case}"]
    text_gone = cells[("text", 1.0)]
    assert text_gone["count_image_only"] == 61 and text_gone["count_complete"] == 0


def test_sweep_writes_csv_json_png_with_schema(trained, tmp_path):
    trained.sweep = SweepConfig(rates=[0.0, 1.0], types=["both"])
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.test(trained, datamodule=_data(), verbose=False)
    trained.sweep = None
    with (tmp_path / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["rate"] for r in rows] == ["0.0", "1.0"]
    assert list(rows[0]) == [
        "type",
        "rate",
        "acc",
        "count_complete",
        "count_image_only",
        "count_text_only",
        "count_spared",
    ]
    payload = json.loads((tmp_path / "sweep.json").read_text())
    assert payload["settings"]["seed"] == 0 and payload["main_metric"] == "acc"
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_select_case_logits():
    case_logits = torch.arange(12.0).reshape(4, 3, 1)
    img = torch.tensor([True, True, False, True])
    txt = torch.tensor([True, False, True, True])
    assert select_case_logits(case_logits, img, txt).flatten().tolist() == [0.0, 4.0, 8.0, 9.0]


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"rates": []}, "sweep.rates is empty"),
        ({"types": []}, "sweep.types is empty"),
        ({"rates": [0.5, 1.2]}, r"sweep rate must be in \[0, 1\], got 1.2"),
        ({"types": ["audio"]}, "unknown missing type 'audio'"),
        ({"both_ratio": -0.5}, r"sweep.both_ratio must be in \[0, 1\]"),
    ],
)
def test_bad_sweep_settings_fail_fast(kwargs, error):
    with pytest.raises(ValueError, match=error):
        SweepConfig(**kwargs)


def test_masks_are_worker_and_world_size_independent():
    data = _data(eval_missing=MissingConfig(rate=0.6, type="both", seed=3))
    data.setup("test")
    expected = dict(
        zip(data.datasets["test"].ids, zip(*data.availability("test"), strict=True), strict=True)
    )

    def seen(loader):
        out = {}
        for batch in loader:
            batch = data.apply_missing(batch, "test")
            for i, sid in enumerate(batch["id"]):
                out[sid] = (bool(batch["image_present"][i]), bool(batch["text_present"][i]))
        return out

    dataset = data.datasets["test"]
    as_bool = {k: (bool(a), bool(b)) for k, (a, b) in expected.items()}
    assert seen(DataLoader(dataset, batch_size=7, num_workers=2)) == as_bool
    for world in (2, 3):
        merged = {}
        for rank in range(world):
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=5
            )
            merged.update(seen(DataLoader(dataset, batch_size=5, sampler=sampler)))
        assert merged == as_bool


def test_counts_recorded_and_logged_at_setup(monkeypatch):
    from cmpt_lightning.datamodules import base

    messages = []
    monkeypatch.setattr(base, "rank_zero_info", messages.append)
    data = _data(eval_missing=MissingConfig(rate=0.5, type="text"))
    data.setup("test")
    data.setup("test")  # once per split, not per call
    assert data.counts["test"]["image_only"] == 30 and data.counts["test"]["complete"] == 31
    assert len(messages) == 1 and "test split (rate=0.5, type=text, seed=0)" in messages[0]


def _cmpt(args, cwd):
    cmd = [sys.executable, "-m", "cmpt_lightning", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_ddp_two_processes_equal_one_process(tmp_path):
    """Exact evaluation under DDP (gloo, 2 CPU processes) on a set of odd size."""
    common = [
        "test",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--data.init_args.test_size",
        "45",
        "--data.init_args.batch_size",
        "8",
        "--model.init_args.sweep.rates",
        "[0, 0.3, 0.7, 1]",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.accelerator",
        "cpu",
    ]
    outputs = {}
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        root = tmp_path / f"d{devices}"
        _cmpt(
            [
                *common,
                "--trainer.devices",
                str(devices),
                "--trainer.strategy",
                strategy,
                "--trainer.default_root_dir",
                str(root),
            ],
            cwd=tmp_path,
        )
        (sweep,) = root.rglob("sweep.csv")
        (metrics,) = root.rglob("metrics.csv")
        outputs[devices] = (sweep.read_text(), metrics.read_text())
    assert outputs[1][0] == outputs[2][0]
    single, double = (
        {
            k: v
            for row in csv.DictReader(m.splitlines())
            for k, v in row.items()
            if v and "loss" not in k
        }
        for _, m in (outputs[1], outputs[2])
    )
    assert (
        single == double
        and float(single["test/count_complete"])
        + float(single["test/count_image_only"])
        + float(single["test/count_text_only"])
        == 45
    )
