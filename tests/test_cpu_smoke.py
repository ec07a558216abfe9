"""configs/cpu_smoke.yaml runs any shipped config on a CPU with the tiny towers, in a few steps."""

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from cmpt_lightning.datamodules.base import CMPTDataModule
from cmpt_lightning.main import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SMOKE = ROOT / "configs" / "cpu_smoke.yaml"
SHIPPED = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p != SMOKE)

FAKE_ROOTS = {
    "food101": DATA / "food101" / "header",
    "mmimdb": DATA / "mmimdb" / "raw",
    "hateful_memes": DATA / "hateful_memes" / "final",
}
#: What the override sets under data.init_args and model.init_args.
SMOKE_DATA = {"batch_size": 4, "num_workers": 0, "pin_memory": False}
SMOKE_MODEL = {"clip": "cmpt-tiny", "pretrained": None}


def _printed(capsys, *configs):
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    with pytest.raises(SystemExit) as info:
        main([*args, "--print_config"])
    assert info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_the_override_only_sets_what_every_data_module_has():
    smoke = yaml.safe_load(SMOKE.read_text())
    assert "class_path" not in smoke["data"] and "class_path" not in smoke["model"]
    shared = set(inspect.signature(CMPTDataModule.__init__).parameters)
    assert set(smoke["data"]["init_args"]) <= shared - {"self", "clip_model", "pretrained"}
    assert smoke["data"]["init_args"] == SMOKE_DATA
    assert smoke["model"]["init_args"] == SMOKE_MODEL


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_parses_with_and_without_the_override(config, capsys):
    alone = _printed(capsys, config)
    smoke = _printed(capsys, config, SMOKE)
    # the first config's classes stay, and so does everything the override does not set
    assert smoke["data"]["class_path"] == alone["data"]["class_path"]
    assert smoke["model"]["class_path"] == alone["model"]["class_path"]
    data, model = smoke["data"]["init_args"], smoke["model"]["init_args"]
    assert {k: data[k] for k in SMOKE_DATA} == SMOKE_DATA
    assert {k: model[k] for k in SMOKE_MODEL} == SMOKE_MODEL
    for key, value in alone["data"]["init_args"].items():
        if key not in SMOKE_DATA:
            assert data[key] == value, key
    for key, value in alone["model"]["init_args"].items():
        if key not in SMOKE_MODEL:
            assert model[key] == value, key
    trainer = smoke["trainer"]
    assert (trainer["accelerator"], trainer["devices"], trainer["strategy"]) == ("cpu", 1, "auto")
    assert (trainer["precision"], trainer["max_epochs"]) == ("32-true", 1)
    for stage in ("train", "val", "test"):
        assert trainer[f"limit_{stage}_batches"] == 2
    assert smoke["test_after_fit"] == alone["test_after_fit"]


@pytest.mark.parametrize("name", sorted(FAKE_ROOTS))
def test_smoke_run_of_a_real_config_trains_and_tests(name, tmp_path, capsys):
    main(
        [
            "fit",
            "--config", str(ROOT / "configs" / f"{name}.yaml"),
            "--config", str(SMOKE),
            "--data.init_args.root", str(FAKE_ROOTS[name]),
            "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    assert "test/score" in capsys.readouterr().out  # the best checkpoint was tested
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (0, 2)  # one epoch of 2 batches
    assert last["hyper_parameters"]["clip"] == "cmpt-tiny"
