import json
import logging
import shutil

import pytest

from cmpt_lightning.datamodules.hateful_memes import HatefulMemesDataModule
from cmpt_lightning.datasets.errors import BadSampleError
from cmpt_lightning.datasets.hateful_memes import UnlabelledSplitError
from cmpt_lightning.missing import MissingConfig
from cmpt_lightning.tasks import Task

from .conftest import DATA

MEMES = DATA / "hateful_memes"


def _dm(root=MEMES / "final", **kwargs):
    return HatefulMemesDataModule(root=str(root), batch_size=4, **kwargs)


def _ids(path):
    return [str(json.loads(line)["id"]) for line in path.read_text().splitlines()]


def test_splits_sizes_and_classes():
    dm = _dm()
    assert dm.task is Task.BINARY and dm.num_classes == 2
    assert dm.class_names == ["not hateful", "hateful"]
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 12, "val": 4, "test": 4}
    assert dm.datasets["val"].ids == _ids(MEMES / "final" / "dev_seen.jsonl")
    assert dm.datasets["test"].ids == _ids(MEMES / "final" / "test_seen.jsonl")


@pytest.mark.parametrize("test_split", ["test_seen", "test_unseen", "dev_seen"])
def test_the_test_split_is_an_explicit_choice(test_split):
    dm = _dm(val_split="dev_unseen", test_split=test_split)
    dm.setup("test")
    assert dm.datasets["test"].ids == _ids(MEMES / "final" / f"{test_split}.jsonl")


def test_split_choices_are_checked(caplog):
    with pytest.raises(ValueError, match="test_split must be one of train, dev_seen"):
        _dm(test_split="test")
    with pytest.raises(ValueError, match="val_split cannot be the training split"):
        _dm(val_split="train")
    with caplog.at_level(logging.WARNING):
        _dm(test_split="dev_seen")
    assert "checkpoints are selected on the test split" in caplog.text


def test_first_phase_layout_trains_and_refuses_its_unlabelled_test():
    dm = _dm(MEMES / "phase1")
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (8, 4)
    with pytest.raises(UnlabelledSplitError, match="final \\(phase 2\\) release"):
        dm.setup("test")
    dm.setup("predict")  # prediction needs no labels
    assert len(dm.datasets["predict"]) == 4


@pytest.fixture
def broken(tmp_path):
    """A copy whose test_seen split has one of every bad input."""
    root = tmp_path / "memes"
    shutil.copytree(MEMES / "final", root)
    path = root / "test_seen.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    (root / lines[0]["img"]).write_bytes(b"GIF89a broken")
    lines[1]["text"] = ""
    lines[2]["label"] = "hateful"
    lines[3]["img"] = "img/missing.png"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root, lines


def test_bad_samples_fail_setup_listing_every_file(broken):
    root, lines = broken
    with pytest.raises(BadSampleError) as info:
        _dm(root).setup("test")
    message = str(info.value)
    assert "4 bad sample(s) of 4 in the test split of hateful_memes" in message
    expected = [
        (lines[0]["img"], "unreadable image"),
        ("test_seen.jsonl:2", "empty text"),
        ("test_seen.jsonl:3", "unknown label 'hateful' (expected 0 or 1)"),
        ("img/missing.png", "image file does not exist"),
    ]
    for file, reason in expected:
        assert any(file in line and reason in line for line in message.splitlines()), (
            file,
            message,
        )


def test_skip_leaves_bad_samples_out_and_counts_them(broken, caplog):
    root, lines = broken
    (root / "test_seen.jsonl").write_text(
        "\n".join(json.dumps(line) for line in [*lines[:3], {**lines[3], "img": lines[1]["img"]}])
        + "\n"
    )
    dm = _dm(root, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert dm.datasets["test"].ids == [str(lines[3]["id"])]
    assert "skipped 3 bad sample(s) of 4" in caplog.text
    assert len(dm.bad_samples["test"]) == 3


def test_fit_then_test_on_the_fake_copy(fit_and_test):
    dm = _dm(train_missing=MissingConfig(rate=0.7), eval_missing=MissingConfig(rate=0.7))
    metrics = fit_and_test(dm)
    assert {"test/auroc", "test/acc"} <= set(metrics)
