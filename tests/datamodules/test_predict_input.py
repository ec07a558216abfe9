"""``predict_file`` of every family: new data, ids, rows without inputs, the default warning."""

import csv
import json
import logging

import pytest
from lightning.pytorch import Trainer

from cmpt_lightning.callbacks import PredictionWriter
from cmpt_lightning.datamodules.csv import MultimodalCSVDataModule
from cmpt_lightning.datamodules.food101 import Food101DataModule
from cmpt_lightning.datamodules.hateful_memes import HatefulMemesDataModule
from cmpt_lightning.datamodules.mmimdb import MMIMDbDataModule
from cmpt_lightning.datamodules.synthetic import SyntheticDataModule
from cmpt_lightning.datasets.errors import BadSampleError
from cmpt_lightning.module import CMPTModule

from .conftest import DATA

#: Each family's data module on its fake copy, and two of its images relative to the root.
FAMILIES = {
    "food101": (
        lambda **kw: Food101DataModule(root=str(DATA / "food101" / "header"), **kw),
        ["images/test/donuts/donuts_100.jpg", "images/train/apple_pie/apple_pie_0.jpg"],
    ),
    "mmimdb": (
        lambda **kw: MMIMDbDataModule(root=str(DATA / "mmimdb" / "raw"), **kw),
        ["mmimdb/dataset/0000423.jpeg", "mmimdb/dataset/0000008.jpeg"],
    ),
    "hateful_memes": (
        lambda **kw: HatefulMemesDataModule(root=str(DATA / "hateful_memes" / "final"), **kw),
        ["img/46492.png", "img/50103.png"],
    ),
    "csv": (
        lambda **kw: MultimodalCSVDataModule(root=str(DATA / "csv"), data_file="data.csv", **kw),
        ["images/000.jpg", "images/003.png"],
    ),
}
WRITER = "not predicted: the sample has neither an image nor a text"


def _module(family, **kwargs):
    build, _ = FAMILIES[family]
    return build(batch_size=2, num_workers=0, **kwargs)


def _table(path, header, rows):
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_predicts_a_new_table(family, tmp_path):
    first, second = FAMILIES[family][1]
    rows = [
        ["n1", first, "a photo and its text"],
        ["n2", second, ""],  # image only
        ["n3", "", "a text alone"],  # text only
        ["n4", "", ""],  # an id and nothing else: listed, not predicted
    ]
    path = _table(tmp_path / "new.csv", ["id", "image", "text"], rows)
    dm = _module(family, predict_file=str(path))
    model = CMPTModule(clip="cmpt-tiny", num_classes=dm.num_classes, task=dm.task.value)
    writer = PredictionWriter()
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[writer],
    )
    batches = trainer.predict(model, datamodule=dm)
    assert [i for batch in batches for i in batch["id"]] == ["n1", "n2", "n3"]
    assert dm.without_inputs == ["n4"]
    image, text = dm.real_availability("predict")
    assert (image.tolist(), text.tolist()) == ([True, True, False], [True, False, True])
    assert all(dm.datasets["predict"][i]["label"].min() == -1 for i in range(3))  # no labels
    with writer.path.open() as file:
        written = {row["id"]: row for row in csv.DictReader(file)}
    assert list(written) == ["n1", "n2", "n3", "n4"]
    assert written["n4"]["prediction"] == "" and written["n4"]["note"] == WRITER
    assert written["n1"]["prediction"] != ""


def test_rows_without_an_id_are_named_by_their_line(tmp_path):
    lines = [
        "image,text",  # 1: the header
        "images/000.jpg,a bird",  # 2
        ",",  # 3: a line of separators: a row with neither input, listed
        "   ",  # 4: whitespace only: not a row
        "",  # 5: blank: not a row
        ",a cat on a sofa",  # 6
    ]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    dm = _module("csv", predict_file=str(tmp_path / "new.csv"))
    dm.setup("predict")
    assert dm.datasets["predict"].ids == ["2", "6"]
    assert dm.without_inputs == ["3"]


def test_jsonl_rows_without_an_id_are_named_by_their_line(tmp_path, caplog):
    lines = [{"image": "images/000.jpg", "text": "a bird"}, {}, None, {"text": "a dog"}]
    text = "\n".join("" if line is None else json.dumps(line) for line in lines)
    (tmp_path / "new.jsonl").write_text(text + "\n")
    dm = _module("food101", predict_file=str(tmp_path / "new.jsonl"))
    with pytest.raises(BadSampleError, match=r"images/000.jpg: image file does not exist"):
        dm.setup("predict")  # image paths are relative to the family's root
    dm = _module("csv", predict_file=str(tmp_path / "new.jsonl"))
    with caplog.at_level(logging.WARNING):
        dm.setup("predict")
    assert dm.datasets["predict"].ids == ["1", "4"]
    assert dm.without_inputs == ["2"]
    assert "1 row(s) of" in caplog.text and "['2']" in caplog.text


def test_a_row_with_an_empty_id_is_a_bad_sample_not_a_listed_one(tmp_path):
    rows = [["n1", "", "a text"], ["", "", ""]]
    path = _table(tmp_path / "new.csv", ["id", "image", "text"], rows)
    dm = _module("mmimdb", predict_file=str(path))
    with pytest.raises(BadSampleError, match=r"new.csv:3: empty 'id'"):
        dm.setup("predict")


def test_a_table_of_empty_rows_has_nothing_to_predict(tmp_path):
    (tmp_path / "new.csv").write_text("id,image,text\nn1,,\nn2,,\n")
    dm = _module("food101", predict_file=str(tmp_path / "new.csv"))
    with pytest.raises(ValueError, match="nothing to predict: no row of"):
        dm.setup("predict")


def test_hateful_memes_reads_its_own_jsonl(tmp_path):
    root = DATA / "hateful_memes" / "final"
    dm = _module("hateful_memes", predict_file="test_unseen.jsonl")
    dm.setup("predict")
    ids = [str(json.loads(line)["id"]) for line in (root / "test_unseen.jsonl").open()]
    assert dm.datasets["predict"].ids == ids
    assert dm.datasets["predict"].records[0].image == root / "img" / "46492.png"
    new = [
        {"id": 7, "img": "img/46492.png", "text": "new text"},
        {"id": 8, "img": "img/50103.png"},
        {"id": 9, "text": ""},
    ]
    (tmp_path / "new.jsonl").write_text("\n".join(json.dumps(line) for line in new) + "\n")
    dm = _module("hateful_memes", predict_file=str(tmp_path / "new.jsonl"))
    dm.setup("predict")
    assert dm.datasets["predict"].ids == ["7", "8"] and dm.without_inputs == ["9"]
    assert dm.real_availability("predict")[1].tolist() == [True, False]


@pytest.mark.parametrize(
    ("build", "split"),
    [
        (lambda: _module("food101"), "the test split"),
        (lambda: _module("mmimdb"), "the test split"),
        (lambda: _module("hateful_memes", test_split="test_unseen"), "(test_unseen)"),
        (lambda: _module("csv"), "the test split"),
        (lambda: SyntheticDataModule(test_size=8, batch_size=4), "the test split"),
    ],
)
def test_predict_without_a_file_warns_once_what_it_predicts(build, split, caplog):
    dm = build()
    with caplog.at_level(logging.WARNING):
        dm.setup("predict")
        dm.setup("predict")
    said = [r.getMessage() for r in caplog.records if "no predict_file" in r.getMessage()]
    assert len(said) == 1, said
    assert split in said[0] and "own availability only (no simulated missingness)" in said[0]
    assert dm.predict_file is None and dm.without_inputs == []


def test_data_check_reads_the_predict_file(tmp_path):
    rows = [["n1", "images/test/donuts/donuts_100.jpg", "x"], ["n2", "", ""], ["n3", "no.jpg", ""]]
    path = _table(tmp_path / "new.csv", ["id", "image", "text"], rows)
    report = _module("food101", predict_file=str(path)).inspect()
    (predict,) = [s for s in report.splits if s.split == "predict"]
    assert predict.count == 3
    assert [(b.id, b.reason) for b in predict.bad] == [("n3", "image file does not exist")]
    assert any("['n2']" in w and "not predicted" in w for w in report.warnings)


def test_predict_images_must_stay_inside_the_root(tmp_path):
    rows = [["n1", "../noheader/images/test/donuts/donuts_100.jpg", "x"]]
    path = _table(tmp_path / "new.csv", ["id", "image", "text"], rows)
    dm = _module("food101", predict_file=str(path))
    with pytest.raises(BadSampleError, match="leads outside the data root"):
        dm.setup("predict")
    report = _module("food101", predict_file=str(path)).inspect()
    (predict,) = [s for s in report.splits if s.split == "predict"]
    assert "leads outside the data root" in predict.bad[0].reason
    dm = _module("food101", predict_file=str(path), allow_outside_root=True)
    dm.setup("predict")
    assert dm.datasets["predict"].ids == ["n1"]
