import json
import shutil

import pytest
import torch

from cmpt_lightning.datasets.errors import DatasetNotFoundError
from cmpt_lightning.datasets.hateful_memes import (
    HatefulMemesDataset,
    UnlabelledSplitError,
    find_hateful_memes,
    read_hateful_memes,
    split_file,
)

from .conftest import DATA

MEMES = DATA / "hateful_memes"
FINAL = MEMES / "final"
PHASE1 = MEMES / "phase1"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_final_layout_loads_with_sizes_ids_and_labels(preprocess):
    sizes = {"train": 12, "dev_seen": 4, "dev_unseen": 4, "test_seen": 4, "test_unseen": 4}
    for split, size in sizes.items():
        dataset = HatefulMemesDataset(FINAL, split, *preprocess)
        lines = _lines(FINAL / f"{split}.jsonl")
        assert len(dataset) == size
        assert dataset.ids == [str(line["id"]) for line in lines]  # int or string ids, as strings
        assert [r.label for r in dataset.records] == [line["label"] for line in lines]
    assert {type(line["id"]) for line in _lines(FINAL / "train.jsonl")} == {int, str}
    sample = dataset[1]
    assert sample["label"].dtype == torch.long and sample["label"].ndim == 0
    assert sample["id"] == _lines(FINAL / "test_unseen.jsonl")[1]["id"]  # a string id


def test_image_paths_come_from_the_img_field():
    for record in read_hateful_memes(FINAL, "train"):
        assert record.image.is_file() and record.image.parent.name == "img"


def test_first_phase_data_mirror_maps_dev_and_test():
    assert find_hateful_memes(PHASE1) == PHASE1 / "data"
    assert find_hateful_memes(PHASE1 / "data") == PHASE1 / "data"
    assert split_file(PHASE1 / "data", "dev_seen").name == "dev.jsonl"
    assert split_file(PHASE1 / "data", "test_seen").name == "test.jsonl"
    assert len(read_hateful_memes(PHASE1, "dev_seen")) == 4
    with pytest.raises(DatasetNotFoundError, match=r"dev_unseen\.jsonl"):
        read_hateful_memes(PHASE1, "dev_unseen")


def test_unlabelled_split_says_where_labelled_copies_come_from():
    with pytest.raises(UnlabelledSplitError) as info:
        read_hateful_memes(PHASE1, "test_seen")
    message = str(info.value)
    assert "test.jsonl" in message and "has no labels" in message
    assert "final (phase 2) release" in message and "test_split: dev_seen" in message
    records = read_hateful_memes(PHASE1, "test_seen", labelled=False)
    assert len(records) == 4 and all(r.label is None for r in records)


def test_unlabelled_samples_have_target_minus_one(preprocess):
    dataset = HatefulMemesDataset(PHASE1, "test_seen", *preprocess, labelled=False)
    assert dataset[0]["label"].item() == -1


def test_missing_root_names_root_and_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        read_hateful_memes(tmp_path / "memes", "train")
    message = str(info.value)
    assert "memes" in message and "img/<id>.png" in message and "dev_seen.jsonl" in message
    assert "data/ mirror" in message


def test_bad_lines_become_problems(tmp_path):
    root = tmp_path / "memes"
    shutil.copytree(FINAL, root)
    lines = [
        json.dumps({"id": 1, "img": "img/01235.png", "label": 2, "text": "x"}),
        json.dumps({"img": "img/01235.png", "label": 0, "text": "x"}),
        "{broken",
        json.dumps({"id": 3, "img": "img/01235.png", "label": 1, "text": "y"}),
    ]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    records = read_hateful_memes(root, "train")
    assert records[0].problems == ("unknown label 2 (expected 0 or 1)",)
    assert records[1].problems == ("no id",) and records[1].id == "01235"
    assert records[2].problems == (
        "not a JSON object: Expecting property name enclosed in double quotes at column 2",
    )
    assert records[2].source.endswith("train.jsonl:3") and not records[2].parsed
    assert records[3].problems == () and records[3].label == 1
