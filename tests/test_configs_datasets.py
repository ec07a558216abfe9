"""The shipped dataset configs parse, and run end to end on the fake copies with the tiny model."""

from pathlib import Path

import pytest
import yaml

from cmpt_lightning.main import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

CONFIGS = {
    "food101": DATA / "food101" / "noheader",
    "mmimdb": DATA / "mmimdb" / "raw",
    "hateful_memes": DATA / "hateful_memes" / "final",
}


def _printed(path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(path), "--print_config"])
    assert info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_holds_the_real_run_settings(name, capsys, tmp_path):
    printed = _printed(ROOT / "configs" / f"{name}.yaml", capsys)
    (tmp_path / "saved.yaml").write_text(printed)
    assert _printed(tmp_path / "saved.yaml", capsys) == printed  # a saved config reloads as is
    config = yaml.safe_load(printed)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    trainer = config["trainer"]
    assert (model["clip"], model["pretrained"], model["lora_rank"]) == ("ViT-B-16", "openai", 1)
    assert model["align_weight"] == 0.2
    assert (trainer["precision"], trainer["accelerator"]) == ("bf16-mixed", "gpu")
    for phase in ("train_missing", "eval_missing"):
        assert (data[phase]["rate"], data[phase]["type"]) == (0.7, "both")
    assert "clip_model" not in data and "num_classes" not in model  # linked, never typed twice
    assert config["test_after_fit"] is True


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_fits_then_tests_on_the_fake_copy(name, tmp_path, capsys):
    fake = [
        "--config", str(ROOT / "configs" / f"{name}.yaml"),
        "--model.init_args.clip", "cmpt-tiny",
        "--model.init_args.pretrained", "null",
        "--data.init_args.root", str(CONFIGS[name]),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "4",
        "--trainer.fast_dev_run", "true",
        "--trainer.accelerator", "cpu",
        "--trainer.precision", "32-true",
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    main(["fit", *fake])
    assert "test/score" in capsys.readouterr().out  # test_after_fit ran the test split
    main(["test", *fake])
    assert "test/score" in capsys.readouterr().out
