"""The world's data module, the shipped pretrained tiny towers, and the demo built on them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from cmpt_lightning import WorldDataModule
from cmpt_lightning.datasets.errors import DataValueError
from cmpt_lightning.datasets.sample_memo import ENTRY_OVERHEAD, SampleMemo, sample_memo
from cmpt_lightning.datasets.world import World
from cmpt_lightning.datasets.world_tasks import WorldObjectsDataset
from cmpt_lightning.missing import MissingConfig
from cmpt_lightning.models import build_image_transform
from cmpt_lightning.models.clip import PACKAGE_WEIGHTS, WEIGHTS_DIR, build_clip
from cmpt_lightning.models.errors import PretrainedWeightsError
from cmpt_lightning.tasks import Task

WEIGHTS = WEIGHTS_DIR / PACKAGE_WEIGHTS["cmpt-tiny"]["world"]


@pytest.mark.parametrize(
    ("task", "kind", "classes"),
    [
        ("objects", Task.MULTICLASS, 24),
        ("tags", Task.MULTILABEL, 18),
        ("claims", Task.BINARY, 2),
        ("scenes", Task.MULTICLASS, 32),
    ],
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
    assert first[1]["image"] is first[1]["image"]  # memoized within a dataset
    torch.testing.assert_close(first[1]["image"], again[1]["image"])
    assert torch.equal(first[1]["text"], again[1]["text"]) and first[1]["id"] == again[1]["id"]
    assert dm.build_split("predict")[0]["id"] == first[0]["id"]


def test_augmented_training_samples_are_not_memoized():
    dm = WorldDataModule(train_size=4, val_size=2, test_size=2, augment=True)
    assert not dm.build_split("train").memoize
    assert dm.build_split("val").memoize


def _fields(sample):
    return [sample[k] for k in ("image", "text", "label", "index")] + [sample["id"]]


def _same(a, b):
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(_fields(a), _fields(b), strict=True)
    )


def test_a_later_data_module_takes_its_samples_from_the_memo_bit_for_bit(monkeypatch):
    sample_memo().clear()
    sizes = {"train_size": 6, "val_size": 2, "test_size": 5, "batch_size": 5}
    plain = WorldDataModule(memo_mb=0, **sizes).build_split("test")  # no memo at all
    reference = [plain[i] for i in range(5)]
    assert len(sample_memo()) == 0
    first = WorldDataModule(**sizes)
    first.setup("test")
    cold = next(iter(first.test_dataloader()))
    assert len(sample_memo()) == 5

    def made(*args, **kwargs):
        msg = "a memoized sample was made again"
        raise AssertionError(msg)

    monkeypatch.setattr(World, "draw", made)
    monkeypatch.setattr(World, "describe", made)  # a warm run writes no caption either
    again = WorldDataModule(**sizes)
    again.setup("test")
    warm = next(iter(again.test_dataloader()))
    warm_samples = [again.datasets["test"][i] for i in range(5)]
    assert all(_same(a, b) for a, b in zip(reference, warm_samples, strict=True))
    for key in ("image", "text", "label"):
        assert torch.equal(cold[key], warm[key])
    seeded = WorldDataModule(seed=1, **sizes).build_split("test")  # another world: made anew
    with pytest.raises(AssertionError, match="made again"):
        seeded[0]


def test_datasets_without_a_memo_key_share_nothing_and_still_pickle(tokenizer):
    args = (3, "val", build_image_transform("cmpt-tiny"), tokenizer, (32, 32))
    a = WorldObjectsDataset(*args, memoize=True)
    b = WorldObjectsDataset(*args, memoize=True)
    assert a.memo_entry(0) != b.memo_entry(0)
    a[0]
    assert a.memo_entry(0) in sample_memo() and b.memo_entry(0) not in sample_memo()
    copy = pickle.loads(pickle.dumps(a))  # what a spawned DataLoader worker receives
    assert _same(copy[0], a[0])


def test_the_memo_keeps_the_most_recent_samples_within_its_budget():
    def sample(i):
        return {"image": torch.full((4,), i, dtype=torch.float32), "id": "x"}  # 16 + 1 bytes

    size = ENTRY_OVERHEAD + 17
    memo = SampleMemo(3 * size)
    for i in range(4):
        memo.put(i, sample(i))
    assert len(memo) == 3 and memo.nbytes == 3 * size and 0 not in memo
    memo.get(1)  # now the most recent: 2 goes next
    memo.put(4, sample(4))
    assert sorted(memo._entries) == [1, 3, 4] and memo.get(2) is None
    got = memo.get(3)
    got["image"] = None  # a hit is a new dict: the stored sample is unchanged
    assert torch.equal(memo.get(3)["image"], sample(3)["image"])
    memo.put(5, {"image": torch.zeros(3 * size)})  # larger than the whole budget: not kept
    assert 5 not in memo and len(memo) == 3
    memo.resize(size)
    assert list(memo._entries) == [3] and memo.nbytes == size
    memo.resize(0)
    assert len(memo) == 0 and memo.nbytes == 0
    with pytest.raises(DataValueError, match="max_bytes"):
        memo.resize(-1)


def test_loader_workers_make_the_same_batches():
    sample_memo().clear()
    dm = WorldDataModule(train_size=4, val_size=2, test_size=6, batch_size=3, num_workers=1)
    dm.setup("test")
    in_worker = [b["image"] for b in dm.test_dataloader()]
    assert len(sample_memo()) == 0  # the worker filled its own memo
    data = dm.datasets["test"]
    here = [torch.stack([data[i]["image"] for i in range(k, k + 3)]) for k in (0, 3)]
    assert len(in_worker) == 2 and all(map(torch.equal, in_worker, here))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"task": "nope"}, "task"),
        ({"memo_mb": -1}, "memo_mb"),
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


@pytest.mark.parametrize("tag", ["world", "world2"])
def test_the_shipped_weights_have_the_reported_held_out_recall(pretrain_script, tag):
    """The shipped report's recall is that of the shipped file, on the script's own held-out
    pairs (the towers are aligned: far above chance), and the script's preset of that tag is
    the report's configuration (so ``--preset <tag>`` reruns exactly that pretraining)."""
    weights = WEIGHTS_DIR / PACKAGE_WEIGHTS["cmpt-tiny"][tag]
    report = json.loads(weights.with_suffix(".json").read_text())
    script = pretrain_script
    config = script.PretrainConfig(**report["config"])
    assert script.PRESETS[tag] == config
    measured = script.evaluate(build_clip("cmpt-tiny", tag), script.World(config.seed), config)
    for direction, stored in report["recall"].items():
        for k, value in stored.items():
            assert measured[direction][k] == pytest.approx(value, abs=0.003), (direction, k)
            assert value > 10 * report["chance"][k], (direction, k)
    if tag == "world2":  # 4x the steps: recall@1 at three quarters of the Bayes ceiling or more
        for direction, ceiling in report["ceiling"].items():
            assert report["recall"][direction]["r1"] > 0.75 * ceiling["r1"], direction
