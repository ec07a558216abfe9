import csv
import json
import pickle

import pytest
import torch

from cmpt_lightning.datasets.errors import DatasetNotFoundError
from cmpt_lightning.datasets.food101 import (
    Food101Dataset,
    food101_classes,
    read_food101,
    read_split_file,
    untitled_images,
)
from cmpt_lightning.datasets.records import stratified_split

from .conftest import DATA

FOOD = DATA / "food101"
CLASSES = ["apple_pie", "beef_tartare", "caesar_salad", "donuts"]


def _key(records):
    return [(r.id, r.label, r.text, r.image.relative_to(r.image.parents[3])) for r in records]


@pytest.mark.parametrize("variant", ["header", "noheader", "txt"])
def test_fake_layout_loads_with_sizes_and_labels(variant, preprocess):
    train = Food101Dataset(FOOD / variant, "train", *preprocess)
    test = Food101Dataset(FOOD / variant, "test", *preprocess)
    assert (len(train), len(test)) == (20, 8)
    assert train.classes == CLASSES  # alphabetical: the folders of images/train
    for record in train.records + test.records:
        assert record.label == CLASSES.index(record.id.rsplit("_", 1)[0])
        assert record.image.is_file() and record.image.name == f"{record.id}.jpg"
        assert not record.problems
    sample = train[3]
    assert sample["image"].shape == (3, 32, 32) and sample["text"].dtype == torch.long
    assert sample["label"].dtype == torch.long and sample["label"].ndim == 0
    assert sample["id"] == train.ids[3] and bool(sample["image_present"] & sample["text_present"])


def test_header_and_no_header_and_txt_read_the_same_samples():
    classes = food101_classes(FOOD / "header")
    for split in ("train", "test"):
        header = read_food101(FOOD / "header", split, classes)
        assert _key(header) == _key(read_food101(FOOD / "noheader", split, classes))
        txt = sorted(_key(read_food101(FOOD / "txt", split, classes, "txt")))
        assert txt == sorted(_key(header))
    # the first data row is not taken for a header: apple_pie_0 is there in both copies
    assert "apple_pie_0" in {r.id for r in read_food101(FOOD / "noheader", "train", classes)}


def test_texts_keep_commas_and_quotes():
    records = read_food101(FOOD / "noheader", "train", CLASSES)
    assert all(", " in r.text and '"' in r.text for r in records)


def test_class_index_sets_the_label_order(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({c: i for i, c in enumerate(reversed(CLASSES))}))
    classes = food101_classes(FOOD / "header", path)
    assert classes == list(reversed(CLASSES))
    records = read_food101(FOOD / "header", "train", classes)
    assert all(r.label == 3 - CLASSES.index(r.id.rsplit("_", 1)[0]) for r in records)


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"a": 0, "b": 2}, "0..1 once"),
        (["a", "b"], "must map class names"),
        ({"a": "0"}, "must map"),
    ],
)
def test_bad_class_index_is_refused(tmp_path, mapping, match):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(mapping))
    with pytest.raises(ValueError, match=match):
        food101_classes(FOOD / "header", path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        food101_classes(FOOD / "header", tmp_path / "nope.json")


def test_missing_root_names_root_and_layout(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        Food101Dataset(root, "train", lambda x: x, lambda t: t, (1, 1))
    message = str(info.value)
    assert str(root) in message and "images/train/<class>/<class>_<n>.jpg" in message
    assert "texts/train_titles.csv" in message and "texts_txt" in message
    assert isinstance(info.value, FileNotFoundError)
    assert str(pickle.loads(pickle.dumps(info.value))) == message


def test_missing_text_file_names_it(tmp_path):
    root = tmp_path / "food"
    (root / "images" / "train" / "apple_pie").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"train_titles\.csv"):
        read_food101(root, "train", ["apple_pie"], "csv")
    with pytest.raises(DatasetNotFoundError, match="texts_txt"):
        read_food101(root, "train", ["apple_pie"], "txt")
    with pytest.raises(DatasetNotFoundError, match="images/test"):
        read_food101(root, "test", ["apple_pie"])
    with pytest.raises(ValueError, match="splits"):
        read_food101(root, "val", ["apple_pie"])


def test_unknown_class_and_bad_rows_become_problems(tmp_path):
    root = tmp_path / "food"
    (root / "images" / "train" / "apple_pie").mkdir(parents=True)
    (root / "texts").mkdir()
    with (root / "texts" / "train_titles.csv").open("w", newline="") as file:
        csv.writer(file).writerows(
            [
                ["apple_pie_0.jpg", "pie", "apple_pie"],
                ["pizza_1.jpg", "pizza", "pizza"],
                ["x.jpg", "two"],
            ]
        )
    records = read_food101(root, "train", ["apple_pie"])
    assert [r.problems for r in records] == [
        (),
        ("unknown class 'pizza'",),
        ("expected 3 columns (image file name, text, class), got 2",),
    ]
    assert records[1].source.endswith("train_titles.csv:2")


def test_split_file_is_read_as_stems_and_checked(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["a_1.jpg", "a_2"], "val": ["a_3.jpg"], "test": []}))
    assert read_split_file(path) == {"train": ["a_1", "a_2"], "val": ["a_3"], "test": []}
    path.write_text(json.dumps({"train": ["a_1.jpg"], "val": ["a_1.jpg"]}))
    with pytest.raises(ValueError, match="both 'train' and 'val'"):
        read_split_file(path)


def test_stratified_split_is_seeded_stratified_and_order_free():
    ids = [f"{c}_{i}" for c in "abc" for i in range(20)]
    groups = [i[0] for i in ids]
    kept, held = stratified_split(ids, groups, 0.1, seed=0)
    assert sorted(kept + held) == list(range(60)) and not set(kept) & set(held)
    assert [groups[i] for i in held].count("a") == 2 and len(held) == 6  # 10% of every class
    assert stratified_split(ids, groups, 0.1, seed=0) == (kept, held)
    assert stratified_split(ids, groups, 0.1, seed=1)[1] != held
    order = list(reversed(range(60)))  # the file's order does not matter
    _, held_rev = stratified_split([ids[i] for i in order], [groups[i] for i in order], 0.1)
    assert {ids[order[i]] for i in held_rev} == {ids[i] for i in held}
    # small classes still give one validation sample and keep one training sample
    kept_small, held_small = stratified_split(["x", "y"], [0, 0], 0.01)
    assert len(kept_small) == len(held_small) == 1
    assert stratified_split(["x"], [0], 0.5) == ([0], [])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        stratified_split(ids, groups, 1.0)


def test_images_without_a_row_follow_the_rows_as_image_only_records(tmp_path):
    root = tmp_path / "food"
    pie = root / "images" / "train" / "apple_pie"
    pie.mkdir(parents=True)
    for name in (
        "apple_pie_0.jpg",
        "apple_pie_1.jpg",
        "apple_pie_2.JPG",
        "notes.txt",
        "._apple_pie_3.jpg",
    ):
        (pie / name).write_bytes(b"x")
    (root / "images" / "train" / "pizza").mkdir()
    (root / "images" / "train" / "pizza" / "pizza_0.jpg").write_bytes(b"x")
    (root / "texts").mkdir()
    with (root / "texts" / "train_titles.csv").open("w", newline="") as file:
        csv.writer(file).writerows(
            [["apple_pie_0.jpg", "pie", "apple_pie"], ["apple_pie_1.jpg", " ", "apple_pie"]]
        )
    records = read_food101(root, "train", ["apple_pie"])
    assert [(r.id, r.text, r.label, r.problems) for r in records] == [
        ("apple_pie_0", "pie", 0, ()),
        ("apple_pie_1", " ", 0, ("empty text",)),  # a row with an empty text is still bad
        ("apple_pie_2", None, 0, ()),  # image-only, labelled by its folder
        ("pizza_0", None, None, ("unknown class 'pizza'",)),
    ]
    assert records[2].source == str(pie / "apple_pie_2.JPG")  # named by its own file
    assert untitled_images(records) == 2
    txt = read_food101(FOOD / "txt", "train", CLASSES, "txt")
    assert untitled_images(txt) == 0 and all(r.text for r in txt)
