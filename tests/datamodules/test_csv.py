import csv
import logging
import shutil

import pytest
import torch
from lightning.pytorch import Trainer

from cmpt_lightning.datamodules.csv import MultimodalCSVDataModule
from cmpt_lightning.datasets.errors import BadSampleError
from cmpt_lightning.missing import MissingConfig
from cmpt_lightning.module import CMPTModule
from cmpt_lightning.tasks import Task

from .conftest import DATA

OWN = DATA / "csv"
MISSING = MissingConfig(rate=0.7, type="both")


def _dm(root=OWN, **kwargs):
    return MultimodalCSVDataModule(root=str(root), batch_size=4, **kwargs)


def _multilabel(**kwargs):
    files = {f"{s}_file": f"multilabel/{s}.jsonl" for s in ("train", "val", "test")}
    return _dm(task="multilabel", **{**files, **kwargs})


def test_one_file_with_a_split_column():
    dm = _dm(data_file="data.csv")
    assert dm.task is Task.MULTICLASS and dm.class_names == ["bird", "cat", "dog"]
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 12, "val": 3, "test": 3}
    counts = dm.availability_counts("train")
    expected = {"complete": 7, "image_only": 2, "text_only": 3, "neither": 0, "total": 12}
    assert {k: counts[k] for k in expected} == expected


def test_simulated_missingness_never_removes_the_only_modality():
    dm = _dm(data_file="data.csv", train_missing=MISSING)
    dm.setup("fit")
    image, text = dm.availability("train")
    has_image, has_text = dm.real_availability("train")
    assert not bool((~image & ~text).any())
    assert not bool((image & ~has_image).any() or (text & ~has_text).any())
    counts = dm.availability_counts("train")
    assert counts["neither"] == 0 and counts["complete"] < 7  # it does remove modalities


def test_separate_files_multilabel():
    dm = _multilabel()
    assert dm.task is Task.MULTILABEL and dm.num_classes == 3
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 8, "val": 3, "test": 3}
    assert dm.datasets["train"][1]["label"].tolist() == [0.0, 1.0, 1.0]


def test_validation_is_carved_when_the_data_has_none(tmp_path):
    rows = list(csv.DictReader((OWN / "data.csv").open()))
    with (tmp_path / "all.csv").open("w", newline="") as file:
        writer = csv.DictWriter(
            file, fieldnames=["id", "image", "text", "label"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows({**r, "image": str(OWN / r["image"]) if r["image"] else ""} for r in rows)
    outside = {"allow_outside_root": True}  # the images stay in the fake copy
    dm = _dm(tmp_path, data_file="all.csv", val_fraction=0.2, split_seed=3, **outside)
    dm.setup("fit")
    val = dm.datasets["val"]
    assert len(dm.datasets["train"]) + len(val) == 18
    assert sorted(r.label for r in val.records) == [0, 1, 2]  # stratified: one per class
    again = _dm(tmp_path, data_file="all.csv", val_fraction=0.2, split_seed=3, **outside)
    again.setup("fit")
    assert again.datasets["val"].ids == val.ids  # seeded
    with pytest.raises(ValueError, match="no test split: give test_file"):
        dm.setup("test")


def test_predict_file_without_labels_reports_rows_without_inputs(caplog):
    dm = _dm(data_file="data.csv", predict_file="predict.csv")
    with caplog.at_level(logging.WARNING):
        dm.setup("predict")
    assert dm.datasets["predict"].ids == ["p0", "p1", "p2"]
    assert dm.without_inputs == ["p3"] and "p3" in caplog.text
    assert dm.datasets["predict"][0]["label"].item() == -1


def test_predict_only_needs_the_classes():
    with pytest.raises(ValueError, match="pass classes"):
        _dm(predict_file="predict.csv").num_classes  # noqa: B018 (the CLI link reads it)
    dm = _dm(predict_file="predict.csv", classes=["bird", "cat", "dog"])
    dm.setup("predict")
    assert dm.num_classes == 3 and len(dm.datasets["predict"]) == 3


def test_binary_task_with_given_classes(tmp_path):
    (tmp_path / "b.csv").write_text(
        "text,label,split\nyes,good,train\nno,bad,train\nhm,good,val\nbad,bad,test\n"
    )
    dm = _dm(tmp_path, data_file="b.csv", task="binary", classes=["bad", "good"])
    dm.setup()
    assert dm.num_classes == 2 and [r.label for r in dm.datasets["train"].records] == [1, 0]
    assert dm.datasets["train"][0]["label"].dtype == torch.long


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="not both"):
        _dm(data_file="data.csv", train_file="data.csv")
    with pytest.raises(ValueError, match="no data: give data_file"):
        _dm()
    with pytest.raises(ValueError, match="task must be one of multiclass, multilabel, binary"):
        _dm(data_file="data.csv", task="regression")


@pytest.fixture
def broken(tmp_path):
    """A copy whose test rows have one of every bad input."""
    root = tmp_path / "own"
    shutil.copytree(OWN, root)
    rows = list(csv.DictReader((root / "data.csv").open()))
    test = [r for r in rows if r["split"] == "test"]
    (root / test[0]["image"]).write_bytes(b"corrupt")
    test[1].update(image="", text="  ")
    test[2].update(label="fish")
    rows.append(
        {"id": "s100", "image": "images/missing.jpg", "text": "t", "label": "cat", "split": "test"}
    )
    with (root / "data.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, test


def test_bad_samples_fail_setup_listing_every_file(broken):
    root, test = broken
    with pytest.raises(BadSampleError) as info:
        _dm(root, data_file="data.csv").setup("test")
    message = str(info.value)
    assert "4 bad sample(s) of 4 in the test split of csv" in message
    expected = [
        (test[0]["image"], "unreadable image"),
        ("data.csv:18", "neither image nor text"),
        ("data.csv:19", "unknown label 'fish'"),
        ("images/missing.jpg", "image file does not exist"),
    ]
    for file, reason in expected:
        assert any(file in line and reason in line for line in message.splitlines()), (
            file,
            message,
        )


def test_skip_leaves_bad_samples_out_and_counts_them(broken, caplog, tmp_path):
    root, _ = broken
    rows = list(csv.DictReader((root / "data.csv").open()))
    rows.append({"id": "s101", "image": "", "text": "fine", "label": "dog", "split": "test"})
    with (root / "data.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dm = _dm(root, data_file="data.csv", on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert dm.datasets["test"].ids == ["s101"]
    assert "skipped 4 bad sample(s) of 5" in caplog.text


def test_fit_then_test_on_the_fake_copy(fit_and_test):
    metrics = fit_and_test(_dm(data_file="data.csv", train_missing=MISSING, eval_missing=MISSING))
    assert "test/acc" in metrics
    metrics = fit_and_test(_multilabel(train_missing=MISSING))
    assert "test/f1_macro" in metrics


def test_predict_runs_on_a_table_without_labels(tmp_path):
    dm = _dm(data_file="data.csv", predict_file="predict.csv")
    model = CMPTModule(clip="cmpt-tiny", num_classes=dm.num_classes, task=dm.task.value)
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    (batch,) = trainer.predict(model, datamodule=dm)
    assert batch["id"] == ["p0", "p1", "p2"]
    assert batch["image_present"].tolist() == [True, False, True]
    assert batch["text_present"].tolist() == [True, True, False]
