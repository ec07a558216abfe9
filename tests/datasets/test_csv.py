import json

import pytest
import torch

from cmpt_lightning.datasets.csv import (
    Columns,
    MultimodalCSVDataset,
    read_records,
    table_labels,
    table_splits,
)
from cmpt_lightning.datasets.errors import DatasetNotFoundError
from cmpt_lightning.datasets.labels import infer_classes

from .conftest import DATA

OWN = DATA / "csv"
CLASSES = ["bird", "cat", "dog"]


def test_csv_with_split_column_and_names(preprocess):
    dataset = MultimodalCSVDataset(OWN, "data.csv", *preprocess, classes=CLASSES, splits=["train"])
    assert len(dataset) == 12 and dataset.ids[:2] == ["s000", "s001"]
    assert [r.label for r in dataset.records[:5]] == [0, 0, 0, 0, 1]
    no_image = dataset[dataset.ids.index("s001")]
    assert not no_image["image_present"] and no_image["text_present"]
    assert torch.count_nonzero(no_image["image"]) == 0
    no_text = dataset[dataset.ids.index("s003")]
    assert no_text["image_present"] and not no_text["text_present"]
    image, text = dataset.availability()
    assert (int((~image).sum()), int((~text).sum())) == (3, 2)  # real missingness, kept
    assert table_splits(OWN, "data.csv") == {"train", "val", "test"}


def test_jsonl_multilabel_without_id_column(preprocess):
    dataset = MultimodalCSVDataset(
        OWN, "multilabel/train.jsonl", *preprocess, classes=CLASSES, task="multilabel"
    )
    assert dataset.ids == [str(i) for i in range(8)]  # the row's position is the id
    assert dataset.records[1].label == (1, 2) and dataset.records[2].text is None
    assert torch.equal(dataset[1]["label"], torch.tensor([0.0, 1.0, 1.0]))


def test_predict_table_needs_no_labels(preprocess):
    dataset = MultimodalCSVDataset(OWN, "predict.csv", *preprocess, classes=CLASSES, labelled=False)
    assert dataset.ids == ["p0", "p1", "p2", "p3"] and dataset[0]["label"].item() == -1
    with pytest.raises(ValueError, match=r"no label column 'label'.*predict_file"):
        read_records(OWN, "predict.csv", classes=CLASSES)


@pytest.mark.parametrize(
    ("labels", "task", "classes"),
    [
        (["cat", "dog", "cat", "bird"], "multiclass", ["bird", "cat", "dog"]),
        (["0", "2", 1], "multiclass", ["0", "1", "2"]),
        ([1, 1], "binary", ["0", "1"]),
        (["no", "yes"], "binary", ["no", "yes"]),
        (['["a", "c"]', "b|a", ["d"]], "multilabel", ["a", "b", "c", "d"]),
    ],
)
def test_infer_classes(labels, task, classes):
    assert infer_classes(labels, task) == classes


@pytest.mark.parametrize(
    ("labels", "task", "match"),
    [
        (["a", "b", "c"], "binary", "needs 2 classes"),
        ([0, 3], "binary", "must be 0 or 1"),
        (["a", "a"], "multiclass", "at least 2 classes"),
        (["", None], "multiclass", "no labels found"),
    ],
)
def test_infer_classes_refuses(labels, task, match):
    with pytest.raises(ValueError, match=match):
        infer_classes(labels, task)


def test_labels_by_name_index_or_list_and_their_problems(tmp_path):
    (tmp_path / "t.tsv").write_text(
        "image\ttext\tlabel\n\tcat text\tcat\n\tby index\t2\n\tunknown\tfish\n\tno label\t\n"
    )
    records = read_records(tmp_path, "t.tsv", classes=CLASSES)
    assert [r.label for r in records] == [1, 2, None, None]
    assert records[2].problems == ("unknown label 'fish' (classes: ['bird', 'cat', 'dog'])",)
    assert records[3].problems == ("missing label",)
    assert records[2].source.endswith("t.tsv:4")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"text": "x", "label": ["cat", "bird"]})
        + "\n"
        + json.dumps({"text": "y", "label": []})
        + "\n"
    )
    multi = read_records(tmp_path, "m.jsonl", classes=CLASSES, task="multilabel")
    assert [r.label for r in multi] == [(0, 1), ()]


def test_custom_columns_and_json_list(tmp_path):
    rows = [{"uid": 7, "picture": None, "caption": "a cat", "y": "cat", "part": "Validation"}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    columns = Columns(image="picture", text="caption", label="y", id="uid", split="part")
    (record,) = read_records(tmp_path, "t.json", classes=CLASSES, columns=columns, splits=["val"])
    assert (record.id, record.image, record.text, record.label) == ("7", None, "a cat", 1)
    assert table_labels(tmp_path, "t.json", columns) == ["cat"]


def test_table_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"nope\.csv") as info:
        read_records(OWN, "nope.csv", classes=CLASSES)
    assert "Expected layout" in str(info.value)
    (tmp_path / "t.csv").write_text("path,caption,label\nx.png,hi,cat\n")
    with pytest.raises(ValueError, match="neither the image column 'image' nor the text column"):
        read_records(tmp_path, "t.csv", classes=CLASSES)
    (tmp_path / "s.csv").write_text("text,label,split\nhi,cat,holdout\n")
    with pytest.raises(ValueError, match=r"split column 'split': 'holdout' on line\(s\) \[2\]"):
        read_records(tmp_path, "s.csv", classes=CLASSES, splits=["train"])
    with pytest.raises(ValueError, match="no split column 'fold'"):
        read_records(
            tmp_path, "s.csv", classes=CLASSES, columns=Columns(split="fold"), splits=["train"]
        )
    (tmp_path / "t.parquet").write_text("")
    with pytest.raises(ValueError, match=r"unknown table format '\.parquet'"):
        read_records(tmp_path, "t.parquet", classes=CLASSES)
