import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, DistributedSampler

from cmpt_lightning import (
    CMPTModule,
    MissingConfig,
    MultimodalCSVDataModule,
    SyntheticDataModule,
    TestGrid,
)
from cmpt_lightning.evaluation import evaluate_cells, one_pass, select_case_logits
from cmpt_lightning.missing import MissingPlan

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


def test_test_grid_cells_equal_separate_runs_exactly(trained, tmp_path):
    trained.test_grid = TestGrid(rates=[0.0, 0.3, 0.5, 0.7, 1.0], types=["text", "image", "both"])
    _trainer(tmp_path).test(trained, datamodule=_data(), verbose=False)
    cells = {(r["type"], r["rate"]): r for r in trained.test_grid_results}
    assert len(cells) == 15
    trained.test_grid = None
    for missing_type, rate in CELLS:
        data = _data(eval_missing=MissingConfig(rate=rate, type=missing_type))
        metrics = _trainer(tmp_path).test(trained, datamodule=data, verbose=False)[0]
        cell = cells[(missing_type, rate)]
        assert metrics["test/acc"] == pytest.approx(cell["acc"], abs=0, rel=0), (missing_type, rate)
        for case in ("complete", "image_only", "text_only"):
            assert metrics[f"test/count_{case}"] == cell[f"count_{case}"]
    text_gone = cells[("text", 1.0)]
    assert text_gone["count_image_only"] == 61 and text_gone["count_complete"] == 0


def test_test_grid_writes_csv_json_png_with_schema(trained, tmp_path):
    trained.test_grid = TestGrid(rates=[0.0, 1.0], types=["both"])
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.test(trained, datamodule=_data(), verbose=False)
    trained.test_grid = None
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
        "proxy_cos_text",  # the proxy diagnostics of method cmpt (absent for baselines)
        "proxy_mse_text",
        "proxy_r1_text",
        "count_proxy_text",
        "proxy_cos_image",
        "proxy_mse_image",
        "proxy_r1_image",
        "count_proxy_image",
    ]
    payload = json.loads((tmp_path / "sweep.json").read_text())
    assert payload["settings"]["seed"] == 0 and payload["main_metric"] == "acc"
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def _skipping_copy(module):
    """The same weights, with the towers skipping absent inputs at evaluation."""
    skipping = CMPTModule(num_classes=module.num_classes, skip_absent_eval=True)
    skipping.load_state_dict(module.state_dict())
    assert skipping.hparams.skip_absent_eval and not module.hparams.skip_absent_eval
    return skipping


@pytest.mark.parametrize("batch_size", [3, 1])
def test_skipping_absent_towers_predicts_the_same(tmp_path, batch_size):
    """A predict file with each case: mixed in one batch, or one case per batch (batches where
    a tower has no row to encode)."""
    seed_everything(0)
    default = CMPTModule(num_classes=3)
    with torch.no_grad():  # adapters and gate that matter, as after training
        for name, p in default.named_parameters():
            if "lora_B" in name or "gate.weight" in name:
                p.normal_(0, 0.1)
    skipping = _skipping_copy(default)
    data = MultimodalCSVDataModule(
        ROOT / "tests" / "data" / "csv", "data.csv", predict_file="predict.csv",
        batch_size=batch_size, num_workers=0,
    )  # fmt: skip
    runs = [_trainer(tmp_path).predict(m, datamodule=data) for m in (default, skipping)]
    expected, got = (
        {k: torch.cat([b[k] for b in run]) for k in ("logits", "probs")} for run in runs
    )
    for key in ("logits", "probs"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-6)
    image = torch.cat([b["image_present"] for b in runs[1]]).tolist()
    text = torch.cat([b["text_present"] for b in runs[1]]).tolist()
    assert (image, text) == ([True, False, True], [True, True, False])  # p0, p1, p2


#: cells with every availability case (both 0.5), and with a tower that has zero rows to encode
SKIP_CELLS = [("both", 0.5), ("image", 1.0), ("text", 1.0)]


@pytest.mark.parametrize("missing_type,rate", SKIP_CELLS)
def test_skipping_absent_towers_tests_the_same(trained, tmp_path, missing_type, rate):
    data = _data(eval_missing=MissingConfig(rate=rate, type=missing_type))
    runs = [
        _trainer(tmp_path).test(m, datamodule=data, verbose=False)[0]
        for m in (trained, _skipping_copy(trained))
    ]
    assert runs[0].keys() == runs[1].keys() and "test/loss" in runs[0]
    for key, value in runs[0].items():
        assert runs[1][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    complete = runs[0]["test/count_complete"]
    assert (0 < complete < 61) if missing_type == "both" else complete == 0


def test_skipping_absent_towers_in_the_one_pass_gives_the_same_case_logits(trained):
    skipping = _skipping_copy(trained).eval()
    trained.eval()
    gen = torch.Generator().manual_seed(0)
    T, F = True, False
    batch = {
        "image": torch.randn(5, 3, 32, 32, generator=gen),
        "text": torch.randint(1, 400, (5, 12), generator=gen),
        # what the data has: sample 1 lacks its image, sample 3 its text
        "image_available": torch.tensor([T, F, T, T, T]),
        "text_available": torch.tensor([T, T, T, F, T]),
        # the configured cell also drops the text of sample 2 and the image of sample 4
        "image_present": torch.tensor([T, F, T, T, F]),
        "text_present": torch.tensor([T, T, F, F, T]),
    }
    with torch.no_grad():
        expected, extra = one_pass(trained.model, batch)
        got, got_extra = one_pass(skipping.model, batch)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_extra["case_logits"], extra["case_logits"], atol=1e-6, rtol=1e-6)


def test_select_case_logits():
    case_logits = torch.arange(12.0).reshape(4, 3, 1)
    img = torch.tensor([True, True, False, True])
    txt = torch.tensor([True, False, True, True])
    assert select_case_logits(case_logits, img, txt).flatten().tolist() == [0.0, 4.0, 8.0, 9.0]
    with pytest.raises(ValueError, match="sample 2 has neither an image nor a text"):
        select_case_logits(case_logits, img, txt & torch.tensor([True, True, False, True]))


def test_test_grid_refuses_a_data_module_that_cannot_rank_its_splits(trained, tmp_path):
    message = r"a test grid needs a data module that ranks its splits .* got object"
    with pytest.raises(TypeError, match=message):
        TestGrid(rates=[0.5]).evaluate({}, object(), task="multiclass", num_classes=6)
    data = _data()
    data.setup("test")
    trained.test_grid = TestGrid(rates=[0.5], types=["text"])
    try:
        with pytest.raises(TypeError, match="test_grid to null"):  # loaders without their module
            _trainer(tmp_path).test(trained, dataloaders=data.test_dataloader(), verbose=False)
    finally:
        trained.test_grid = None


def test_evaluate_cells_counts_groups_of_a_grouped_plan():
    ids = [f"m{i // 3}#{i % 3}" for i in range(12)]  # 4 groups of 3 samples
    plan = MissingPlan(ids, seed=1, groups=[i.split("#")[0] for i in ids])
    case_logits = torch.zeros(12, 3, 2)
    ones = torch.ones(12, dtype=torch.bool)
    labels = torch.zeros(12, dtype=torch.long)
    rates, types = [0.5], ["text"]
    (row,) = evaluate_cells(
        "multiclass", 2, case_logits, labels, torch.arange(12), ones, ones, plan, rates, types, 0.5
    )
    assert row["count_image_only"] == 6 and row["count_complete"] == 6  # 2 of 4 groups


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"rates": []}, "test_grid.rates is empty"),
        ({"types": []}, "test_grid.types is empty"),
        ({"rates": [0.5, 1.2]}, r"test_grid rate must be in \[0, 1\], got 1.2"),
        ({"types": ["audio"]}, "unknown missing type 'audio'"),
        ({"both_ratio": -0.5}, r"test_grid.both_ratio must be in \[0, 1\]"),
    ],
)
def test_bad_test_grid_settings_fail_fast(kwargs, error):
    with pytest.raises(ValueError, match=error):
        TestGrid(**kwargs)


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


def test_cli_test_grid_and_its_deprecated_spelling(tmp_path):
    from cmpt_lightning.main import main

    common = ["test", "--config", str(ROOT / "configs" / "demo_random.yaml")]
    common += ["--data.init_args.test_size", "64", "--trainer.fast_dev_run", "true"]
    common += ["--trainer.enable_progress_bar", "false"]
    new, old = tmp_path / "new", tmp_path / "old"
    main([*common, "--model.init_args.test_grid.rates", "[0, 1]", *_root(new)])
    with pytest.deprecated_call(match="model.init_args.sweep is deprecated"):
        main([*common, "--model.init_args.sweep.rates", "[0, 1]", *_root(old)])
    rows = (new / "sweep.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("type,rate,acc,count_complete")
    assert (old / "sweep.csv").read_text() == (new / "sweep.csv").read_text()


def _root(path):
    return ["--trainer.default_root_dir", str(path)]


def _cmpt(args, cwd):
    cmd = [sys.executable, "-m", "cmpt_lightning", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _assert_equal_but_proxy_close(rows, others):
    assert len(rows) == len(others)
    for row, other in zip(rows, others, strict=True):
        assert row.keys() == other.keys()
        for key, value in row.items():
            if "proxy_" in key and "count_" not in key:
                assert float(other[key]) == pytest.approx(float(value), rel=1e-4, nan_ok=True), key
            else:
                assert other[key] == value, key


def test_ddp_two_processes_equal_one_process(tmp_path):
    """Exact evaluation under DDP (gloo, 2 CPU processes) on a set of odd size."""
    common = [
        "test",
        "--config",
        str(ROOT / "configs" / "demo_random.yaml"),
        "--data.init_args.test_size",
        "45",
        "--data.init_args.batch_size",
        "8",
        "--model.init_args.test_grid.rates",
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
        (cells,) = root.rglob("sweep.csv")
        (metrics,) = root.rglob("metrics.csv")
        outputs[devices] = (cells.read_text(), metrics.read_text())
    # the proxy diagnostics are means of float embeddings, which other batch compositions
    # change in the last bits: equal to a tolerance; everything else exactly
    rows = [list(csv.DictReader(o[0].splitlines())) for o in (outputs[1], outputs[2])]
    _assert_equal_but_proxy_close(*rows)
    single, double = (
        {
            k: v
            for row in csv.DictReader(m.splitlines())
            for k, v in row.items()
            if v and "loss" not in k
        }
        for _, m in (outputs[1], outputs[2])
    )
    _assert_equal_but_proxy_close([single], [double])
    assert (
        single.keys() == double.keys()
        and float(single["test/count_complete"])
        + float(single["test/count_image_only"])
        + float(single["test/count_text_only"])
        == 45
    )
