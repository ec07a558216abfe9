import json
import shutil

import pytest
import torch

from cmpt_lightning.datasets.errors import DatasetNotFoundError
from cmpt_lightning.datasets.mmimdb import GENRES, MMIMDbDataset, find_mmimdb, read_mmimdb

from .conftest import DATA

IMDB = DATA / "mmimdb"
BASE = IMDB / "raw" / "mmimdb"


def _meta(movie):
    return json.loads((BASE / "dataset" / f"{movie}.json").read_text())


def test_genres_keep_the_benchmark_order():
    assert len(GENRES) == 23
    assert GENRES[:5] == ["Drama", "Comedy", "Romance", "Thriller", "Crime"]
    assert GENRES[-3:] == ["Sport", "Short", "Film-Noir"]


def test_fake_layout_loads_with_sizes_and_multi_hot_labels(preprocess):
    split = json.loads((BASE / "split.json").read_text())
    for name, size in (("train", 12), ("dev", 4), ("test", 4)):
        dataset = MMIMDbDataset(IMDB / "raw", name, *preprocess)
        assert len(dataset) == size and dataset.ids == split[name]
    sample = dataset[0]
    genres = _meta(dataset.ids[0])["genres"]
    expected = torch.tensor([float(g in genres) for g in GENRES])
    assert sample["label"].dtype == torch.float32 and torch.equal(sample["label"], expected)


def test_ignored_genres_do_not_count():
    records = read_mmimdb(IMDB / "raw", "train")
    extra = [r for r in records if set(_meta(r.id)["genres"]) - set(GENRES)]
    assert extra, "the fake data should hold genres outside the 23"
    for record in extra:
        named = {GENRES[i] for i in record.label}
        assert named == set(_meta(record.id)["genres"]) & set(GENRES)


def test_text_is_the_outline_else_the_first_plot():
    for record in read_mmimdb(IMDB / "raw", "train"):
        meta = _meta(record.id)
        assert record.text == meta.get("plot outline", meta["plot"][0])


def test_all_plots_gives_one_sample_per_plot():
    records = read_mmimdb(IMDB / "raw", "train", "all_plots")
    movies = read_mmimdb(IMDB / "raw", "train")
    assert len(records) == sum(len(_meta(m.id)["plot"]) for m in movies) > len(movies)
    first = [r for r in records if r.id.startswith(movies[0].id + "#")]
    assert [r.text for r in first] == _meta(movies[0].id)["plot"]
    assert [r.id for r in first] == [f"{movies[0].id}#{k}" for k in range(len(first))]


def test_root_may_be_the_mmimdb_folder_itself():
    assert find_mmimdb(IMDB / "raw") == BASE
    assert find_mmimdb(BASE) == BASE


def test_hdf5_variant_is_refused_with_the_reason():
    with pytest.raises(DatasetNotFoundError) as info:
        read_mmimdb(IMDB / "hdf5", "train")
    message = str(info.value)
    assert (
        "HDF5 variant" in message and "multimodal_imdb.hdf5" in message and "no raw text" in message
    )
    assert "mmimdb/split.json" in message  # and the layout it needs
    with pytest.raises(DatasetNotFoundError, match="HDF5 variant"):
        read_mmimdb(IMDB / "hdf5" / "multimodal_imdb.hdf5", "train")


def test_missing_root_or_split_file_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere") as info:
        read_mmimdb(tmp_path / "nowhere", "train")
    assert "Expected layout" in str(info.value) and "HDF5" not in str(info.value)
    (tmp_path / "mmimdb" / "dataset").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"split\.json' does not exist"):
        read_mmimdb(tmp_path, "train")


def test_integer_ids_and_broken_split_json(tmp_path):
    root = tmp_path / "mmimdb"
    shutil.copytree(BASE, root)
    split = json.loads((root / "split.json").read_text())
    split["train"] = [int(m) for m in split["train"]]
    (root / "split.json").write_text(json.dumps(split))
    assert [r.id for r in read_mmimdb(root, "train")] == json.loads(
        (BASE / "split.json").read_text()
    )["train"]
    (root / "split.json").write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="no list 'dev'"):
        read_mmimdb(root, "dev")
    (root / "split.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_mmimdb(root, "dev")


def test_bad_metadata_become_problems(tmp_path):
    root = tmp_path / "mmimdb"
    shutil.copytree(BASE, root)
    train = json.loads((root / "split.json").read_text())["train"]
    (root / "dataset" / f"{train[0]}.json").unlink()
    (root / "dataset" / f"{train[1]}.json").write_text("{not json")
    (root / "dataset" / f"{train[2]}.json").write_text(
        json.dumps({"genres": ["News"], "plot": ["x"]})
    )
    (root / "dataset" / f"{train[3]}.json").write_text(
        json.dumps({"genres": ["Drama"], "plot": []})
    )
    records = read_mmimdb(root, "train")
    assert records[0].problems == ("metadata file does not exist",)
    assert "not valid JSON" in records[1].problems[0]
    assert records[2].problems == ("none of the 23 benchmark genres (genres: ['News'])",)
    assert records[3].text == "" and records[3].label == (0,)
