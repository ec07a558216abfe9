import csv
import json
import logging
import shutil

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from cmpt_lightning.datacheck import data_check
from cmpt_lightning.datamodules.csv import MultimodalCSVDataModule
from cmpt_lightning.datasets.errors import BadSampleError, RareClassError
from cmpt_lightning.errors import UserInputError
from cmpt_lightning.missing import MissingConfig
from cmpt_lightning.module import CMPTModule
from cmpt_lightning.tasks import Task
from tests.helpers import cmpt

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


# --- issue 20: rare classes, label kinds, through setup and the command line ----------------------
def _typo_table(root, label_of_typo="bird"):
    """cat and dog, three training rows each, and one training row whose label is a typo."""
    lines = ["text,label,split"]
    lines += [f"a {c} {i},{c},train" for c in ("cat", "dog") for i in range(3)]
    lines.insert(3, f"a typo,{label_of_typo},train")  # line 4 of the file
    lines += ["val cat,cat,val", "val dog,dog,val", "test cat,cat,test", "test dog,dog,test"]
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    return str(root / "t.csv")


def test_a_rare_class_is_a_warning_at_setup_naming_it(tmp_path, caplog):
    path = _typo_table(tmp_path)
    dm = _dm(tmp_path, data_file="t.csv")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.class_names == ["bird", "cat", "dog"]  # kept: a warning, not a refusal
    (record,) = [r for r in caplog.records if "min_class_count" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "1 class(es) seen in fewer than 2 training rows (min_class_count)" in message
    assert f"'bird' (1 row, first at {path}:4)" in message
    assert "rare_classes: error" in message and "rare_classes: ignore" in message
    assert "'cat'" not in message and "'dog'" not in message
    dm.setup("test")  # once per setup of the training split, not again
    assert sum("min_class_count" in r.getMessage() for r in caplog.records) == 1


def test_rare_classes_error_ignore_and_the_minimum(tmp_path, caplog):
    path = _typo_table(tmp_path)
    with pytest.raises(RareClassError, match=rf"'bird' \(1 row, first at {path}:4\)") as info:
        _dm(tmp_path, data_file="t.csv", rare_classes="error").setup("fit")
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)
    with caplog.at_level(logging.WARNING):
        _dm(tmp_path, data_file="t.csv", rare_classes="ignore").setup("fit")
        _dm(tmp_path, data_file="t.csv", min_class_count=1).setup("fit")
    assert "min_class_count" not in caplog.text
    with pytest.raises(RareClassError, match=r"'bird' \(1 row.*'cat' \(3 rows.*'dog' \(3 rows"):
        _dm(tmp_path, data_file="t.csv", min_class_count=4, rare_classes="error").setup("fit")
    # a class of the given classes that no training row holds is rare too
    with pytest.raises(RareClassError, match=r"'fish' \(no training row\)"):
        _dm(
            tmp_path, train_file="t.csv", classes=["bird", "cat", "dog", "fish"], min_class_count=1,
            rare_classes="error", val_fraction=0.0,
        ).setup("fit")  # fmt: skip
    with pytest.raises(ValueError, match="rare_classes must be one of warn, error, ignore"):
        _dm(tmp_path, data_file="t.csv", rare_classes="loud")
    with pytest.raises(ValueError, match="min_class_count must be an integer >= 0"):
        _dm(tmp_path, data_file="t.csv", min_class_count=-1)


def test_the_data_check_reports_rare_classes(tmp_path, capsys):
    _typo_table(tmp_path)
    assert data_check("csv", str(tmp_path), data_file="t.csv") == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "warning: train: 1 class(es) seen in fewer than 2 training rows" in " ".join(out.split())


def _fit(tmp_path, init_args) -> int:
    config = {
        "model": {"class_path": "cmpt_lightning.CMPTModule", "init_args": {"clip": "cmpt-tiny"}},
        "data": {
            "class_path": "cmpt_lightning.MultimodalCSVDataModule",
            "init_args": {"root": str(tmp_path), "batch_size": 4, **init_args},
        },
        "trainer": {
            "max_epochs": 1, "accelerator": "cpu", "default_root_dir": str(tmp_path / "runs"),
        },
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return cmpt(["fit", "--config", str(tmp_path / "config.yaml")])


@pytest.mark.parametrize(
    ("table", "options", "expected"),
    [
        (
            'text,label\n"a cat",cat\n"a dog",dog\n',
            {"rare_classes": "error"},
            "'cat' (1 row, first at {path}:2); 'dog' (1 row, first at {path}:3)",
        ),
        (None, {}, "{path}' line 3: label true is a boolean"),
        ("text,label\ncaf\xe9,cat\nok,dog\n", {}, "{path}' is not UTF-8 text: byte 0xe9"),
    ],
)
def test_a_label_problem_is_one_message_and_exit_2(tmp_path, capsys, table, options, expected):
    name = "t.jsonl" if table is None else "t.csv"
    path = tmp_path / name
    if table is None:
        lines = [{"text": f"t{i}", "label": v} for i, v in enumerate([0, 1, True, False])]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    else:
        path.write_bytes(table.encode("latin-1"))
    assert _fit(tmp_path, {"train_file": name, "val_fraction": 0.0, **options}) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert expected.format(path=path) in " ".join(err.split()), err
