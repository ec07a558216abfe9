import json
import logging
import shutil

import pytest
import torch

from cmpt_lightning.datamodules.mmimdb import MMIMDbDataModule
from cmpt_lightning.datasets.errors import BadSampleError, DatasetNotFoundError
from cmpt_lightning.datasets.mmimdb import GENRES, movie_id
from cmpt_lightning.missing import MissingConfig, MissingPlan
from cmpt_lightning.tasks import Task

from .conftest import DATA

RAW = DATA / "mmimdb" / "raw"


def _dm(root=RAW, **kwargs):
    return MMIMDbDataModule(root=str(root), batch_size=4, **kwargs)


def test_splits_sizes_and_labels():
    dm = _dm()
    assert dm.task is Task.MULTILABEL and dm.num_classes == 23 and dm.class_names == GENRES
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 12, "val": 4, "test": 4}
    split = json.loads((RAW / "mmimdb" / "split.json").read_text())
    assert dm.datasets["val"].ids == split["dev"]


def test_all_plots_expands_training_and_shares_the_missing_decision_per_movie():
    missing = MissingConfig(rate=0.5, type="both")
    dm = _dm(text_mode="all_plots", train_missing=missing, eval_missing=missing)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) > 12 and all("#" in i for i in train.ids)
    assert len(val) == 4 and not any("#" in i for i in val.ids)  # evaluation stays per movie
    image, text = dm.masks("train")
    movies = [movie_id(i) for i in train.ids]
    for movie in set(movies):
        rows = torch.tensor([m == movie for m in movies])
        assert image[rows].unique().numel() == 1 and text[rows].unique().numel() == 1
    lost = {
        m for m, i, t in zip(movies, image.tolist(), text.tolist(), strict=True) if not (i and t)
    }
    assert len(lost) == 6  # floor(12 movies x 0.5): the rate counts movies
    assert dm.plan_groups("train") == movies  # the protocol ranks the movies


def test_outline_plan_is_the_plain_ranking_of_the_movies():
    dm = _dm()
    dm.setup("fit")
    ids = list(dm.datasets["train"].ids)
    plain = MissingPlan(ids, seed=3, epoch=1).masks(0.5, "both")
    grouped = dm.plan("train", seed=3, epoch=1).masks(0.5, "both")
    assert all(torch.equal(a, b) for a, b in zip(plain, grouped, strict=True))


def test_expand_eval_expands_validation_too():
    dm = _dm(text_mode="all_plots", expand_eval=True)
    dm.setup("validate")
    assert all("#" in i for i in dm.datasets["val"].ids)


def test_hdf5_root_fails_at_setup_with_the_reason():
    with pytest.raises(DatasetNotFoundError, match="HDF5 variant"):
        _dm(DATA / "mmimdb" / "hdf5").setup("fit")


def test_bad_text_mode_is_refused():
    with pytest.raises(
        ValueError, match="text_mode must be one of outline, all_plots; got 'plots'"
    ):
        _dm(text_mode="plots")


@pytest.fixture
def broken(tmp_path):
    """A copy whose test split has one of every bad input."""
    base = tmp_path / "mmimdb"
    shutil.copytree(RAW / "mmimdb", base)
    test = json.loads((base / "split.json").read_text())["test"]
    dataset = base / "dataset"
    (dataset / f"{test[0]}.jpeg").write_bytes(b"\x89PNG not really")
    (dataset / f"{test[1]}.json").write_text(json.dumps({"genres": ["Drama"], "plot": ["  "]}))
    (dataset / f"{test[2]}.json").write_text(json.dumps({"genres": ["Talk-Show"], "plot": ["x"]}))
    (dataset / f"{test[3]}.json").unlink()
    return tmp_path, test


def test_bad_samples_fail_setup_listing_every_file(broken):
    root, test = broken
    with pytest.raises(BadSampleError) as info:
        _dm(root).setup("test")
    message = str(info.value)
    assert "4 bad sample(s) of 4 in the test split of mmimdb" in message
    expected = [
        (f"{test[0]}.jpeg", "unreadable image"),
        (f"{test[1]}.json", "empty text"),
        (f"{test[2]}.json", "none of the 23 benchmark genres"),
        (f"{test[3]}.json", "metadata file does not exist"),
    ]
    for file, reason in expected:
        assert any(file in line and reason in line for line in message.splitlines()), (
            file,
            message,
        )


def test_skip_leaves_bad_samples_out_and_counts_them(broken, caplog):
    root, test = broken
    (root / "mmimdb" / "dataset" / f"{test[3]}.json").write_text(
        json.dumps({"genres": ["War"], "plot": ["p"]})
    )
    dm = _dm(root, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert dm.datasets["test"].ids == [test[3]]
    assert "skipped 3 bad sample(s) of 4" in caplog.text


def test_fit_then_test_on_the_fake_copy(fit_and_test):
    metrics = fit_and_test(_dm(train_missing=MissingConfig(rate=0.7)))
    assert {"test/f1_macro", "test/f1_micro", "test/f1_weighted", "test/f1_samples"} <= set(metrics)
