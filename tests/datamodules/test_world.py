"""The world's data module, the shipped pretrained tiny towers, and the demo built on them."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from cmpt_lightning import WorldDataModule
from cmpt_lightning.datasets.errors import DataValueError
from cmpt_lightning.missing import MissingConfig
from cmpt_lightning.models.clip import PACKAGE_WEIGHTS, WEIGHTS_DIR, build_clip
from cmpt_lightning.models.errors import PretrainedWeightsError
from cmpt_lightning.tasks import Task

WEIGHTS = WEIGHTS_DIR / PACKAGE_WEIGHTS["cmpt-tiny"]["world"]


@pytest.mark.parametrize(
    ("task", "kind", "classes"),
    [("objects", Task.MULTICLASS, 24), ("tags", Task.MULTILABEL, 18), ("claims", Task.BINARY, 2)],
)
def test_each_task_is_a_data_module_with_the_missing_protocol(task, kind, classes):
    dm = WorldDataModule(
        task=task,
        train_size=12,
        val_size=6,
        test_size=10,
        batch_size=5,
        eval_missing=MissingConfig(rate=0.6, type="both"),
    )
    assert dm.task is kind and dm.num_classes == classes == len(dm.class_names)
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert sum(len(b["id"]) for b in batches) == 10
    batch = dm.apply_missing(batches[0], "test")
    assert batch["image"].shape == (5, 3, 32, 32)
    counts = dm.availability_counts("test")
    assert counts["complete"] == 4 and counts["image_only"] + counts["text_only"] == 6
    assert dm.ceilings()["both"] > max(dm.ceilings()["image"], dm.ceilings()["text"])


def test_samples_are_generated_once_and_are_the_same_again():
    dm = WorldDataModule(train_size=4, val_size=2, test_size=2)
    first = dm.build_split("test")
    again = dm.build_split("test")
    assert first[1] is first[1]  # memoized within a dataset
    torch.testing.assert_close(first[1]["image"], again[1]["image"])
    assert torch.equal(first[1]["text"], again[1]["text"]) and first[1]["id"] == again[1]["id"]
    assert dm.build_split("predict")[0]["id"] == first[0]["id"]


def test_augmented_training_samples_are_not_memoized():
    dm = WorldDataModule(train_size=4, val_size=2, test_size=2, augment=True)
    assert not dm.build_split("train").memoize
    assert dm.build_split("val").memoize


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"task": "scenes"}, "task"),
        ({"train_size": 0}, "train_size"),
        ({"greyscale": 1.5}, "greyscale"),
        ({"claim_attributes": ("material",)}, "claim_attributes"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises((DataValueError, ValueError), match=field):
        WorldDataModule(**kwargs)


def test_the_world_weights_load_through_the_pretrained_tag_path():
    cfg = open_clip.get_pretrained_cfg("cmpt-tiny", "world")
    assert Path(cfg["file"]) == WEIGHTS and WEIGHTS.is_file()
    assert "world" in open_clip.list_pretrained_tags_by_model("cmpt-tiny")
    model = build_clip("cmpt-tiny", "world")
    stored = load_file(str(WEIGHTS))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, stored[name].float(), rtol=0, atol=0, msg=name)
    random = build_clip("cmpt-tiny")
    assert not torch.equal(random.visual.conv1.weight, model.visual.conv1.weight)


def test_a_missing_package_weights_file_is_one_clear_error(monkeypatch, tmp_path):
    cfg = open_clip.pretrained._PRETRAINED["cmpt-tiny"]["world"]
    monkeypatch.setitem(cfg, "file", str(tmp_path / "gone.safetensors"))
    with pytest.raises(PretrainedWeightsError, match=r"gone\.safetensors"):
        build_clip("cmpt-tiny", "world")


def test_the_shipped_weights_have_the_reported_held_out_recall(pretrain_script):
    """The shipped report's recall is that of the shipped file, on the script's own held-out
    pairs (the towers are aligned: far above chance)."""
    report = json.loads(WEIGHTS.with_suffix(".json").read_text())
    script = pretrain_script
    config = script.PretrainConfig(**report["config"])
    measured = script.evaluate(build_clip("cmpt-tiny", "world"), script.World(config.seed), config)
    for direction, stored in report["recall"].items():
        for k, value in stored.items():
            assert measured[direction][k] == pytest.approx(value, abs=0.003), (direction, k)
            assert value > 10 * report["chance"][k], (direction, k)
