import csv
import json
import logging
import shutil

import pytest
from lightning.pytorch import Trainer

from cmpt_lightning.datamodules.food101 import Food101DataModule
from cmpt_lightning.datasets.errors import BadSampleError, DatasetNotFoundError
from cmpt_lightning.module import CMPTModule
from cmpt_lightning.tasks import Task

from .conftest import DATA

FOOD = DATA / "food101"


def _dm(root, **kwargs):
    return Food101DataModule(root=str(root), batch_size=4, **{"val_fraction": 0.2, **kwargs})


def test_splits_sizes_and_classes():
    dm = _dm(FOOD / "header")
    assert dm.task is Task.MULTICLASS and dm.num_classes == 4
    assert dm.class_names == ["apple_pie", "beef_tartare", "caesar_salad", "donuts"]
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 16, "val": 4, "test": 8}
    val_classes = sorted(r.label for r in dm.datasets["val"].records)
    assert val_classes == [0, 1, 2, 3]  # stratified: one of the five per class
    assert not set(dm.datasets["train"].ids) & set(dm.datasets["val"].ids)
    dm.setup("predict")
    assert dm.datasets["predict"].ids == dm.datasets["test"].ids


def test_validation_carve_is_seeded():
    def val_ids(seed, variant="header"):
        dm = _dm(FOOD / variant, split_seed=seed)
        dm.setup("fit")
        return dm.datasets["val"].ids

    assert val_ids(0) == val_ids(0) == val_ids(0, "txt") == val_ids(0, "noheader")
    assert any(val_ids(seed) != val_ids(0) for seed in (1, 2, 3))


def test_training_images_use_the_train_transform():
    dm = _dm(FOOD / "header", augment=True)
    dm.setup("fit")
    assert dm.datasets["train"].image_transform is not dm.datasets["val"].image_transform


def test_split_file_replaces_the_splits(tmp_path):
    path = tmp_path / "split.json"
    split = {
        "train": ["apple_pie_0.jpg", "donuts_100.jpg"],
        "val": ["donuts_1.jpg"],
        "test": ["beef_tartare_4.jpg"],
    }
    path.write_text(json.dumps(split))
    dm = _dm(FOOD / "noheader", split_file=str(path))
    dm.setup()
    assert {k: v.ids for k, v in dm.datasets.items()} == {
        "train": ["apple_pie_0", "donuts_100"],
        "val": ["donuts_1"],
        "test": ["beef_tartare_4"],
    }
    path.write_text(json.dumps({"train": ["pizza_1.jpg"], "val": [], "test": []}))
    with pytest.raises(ValueError, match=r"not in the data \(first: \['pizza_1'\]\)"):
        _dm(FOOD / "noheader", split_file=str(path)).setup("fit")


def test_class_index_and_text_source(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"donuts": 0, "caesar_salad": 1, "beef_tartare": 2, "apple_pie": 3}))
    dm = _dm(FOOD / "txt", class_index=str(path), text_source="txt")
    dm.setup("test")
    assert dm.class_names[0] == "donuts"
    assert all(
        r.label == dm.class_names.index(r.id.rsplit("_", 1)[0]) for r in dm.datasets["test"].records
    )


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="val_fraction must be in"):
        _dm(FOOD / "header", val_fraction=1.0)
    with pytest.raises(ValueError, match="on_bad_sample must be one of error, skip; got 'ignore'"):
        _dm(FOOD / "header", on_bad_sample="ignore")
    with pytest.raises(ValueError, match="image_check must be one of none, exists, verify, decode"):
        _dm(FOOD / "header", image_check="full")
    with pytest.raises(ValueError, match="no validation split"):
        _dm(FOOD / "header", val_fraction=0.0).setup("fit")


def test_missing_root_fails_with_the_layout(tmp_path):
    dm = _dm(tmp_path / "food101")
    with pytest.raises(DatasetNotFoundError, match="Expected layout"):
        dm.num_classes  # noqa: B018 (the CLI reads it when it links data.num_classes)


@pytest.fixture
def broken(tmp_path):
    """A copy whose test split has one of every bad input."""
    root = tmp_path / "food"
    shutil.copytree(FOOD / "noheader", root)
    images = root / "images" / "test"
    (images / "apple_pie" / "apple_pie_100.jpg").write_bytes(b"this is not a jpeg")
    (images / "apple_pie" / "apple_pie_101.jpg").write_bytes(b"")
    (images / "donuts" / "donuts_100.jpg").unlink()
    truncated = images / "donuts" / "donuts_101.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    path = root / "texts" / "test_titles.csv"
    rows = list(csv.reader(path.open(newline="")))
    for row in rows:
        if row[0] == "beef_tartare_100.jpg":
            row[1] = "   "
        if row[0] == "caesar_salad_100.jpg":
            row[2] = "pizza"
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    return root


EXPECTED = {
    "apple_pie_100.jpg": "unreadable image",
    "apple_pie_101.jpg": "image file is empty (0 bytes)",
    "donuts_100.jpg": "image file does not exist",
    "test_titles.csv:3": "empty text",
    "test_titles.csv:5": "unknown class 'pizza'",
}


def test_bad_samples_fail_setup_listing_every_file(broken):
    dm = _dm(broken)
    with pytest.raises(BadSampleError) as info:
        dm.setup("test")
    message = str(info.value)
    assert "5 bad sample(s) of 8 in the test split of food101" in message
    for file, reason in EXPECTED.items():
        assert any(file in line and reason in line for line in message.splitlines()), (
            file,
            message,
        )
    assert "donuts_101" not in message  # verify reads headers only: a truncated JPEG passes
    assert "on_bad_sample: skip" in message and "cmpt data check food101" in message


def test_decode_check_also_finds_truncated_images(broken):
    with pytest.raises(BadSampleError, match=r"donuts_101.jpg: unreadable image"):
        _dm(broken, image_check="decode").setup("test")


def test_skip_leaves_bad_samples_out_and_counts_them(broken, caplog):
    dm = _dm(broken, on_bad_sample="skip", image_check="decode")
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert len(dm.datasets["test"]) == 2
    assert len({b.index for b in dm.bad_samples["test"]}) == 6
    assert "skipped 6 bad sample(s) of 8" in caplog.text


def test_unchecked_bad_image_fails_naming_the_file(tmp_path):
    root = tmp_path / "food"
    shutil.copytree(FOOD / "header", root)
    (root / "images" / "test" / "donuts" / "donuts_100.jpg").write_bytes(b"garbage")
    dm = _dm(root, image_check="none")
    dm.setup("test")  # nothing checked: the file fails when read, with its name and the fix
    index = dm.datasets["test"].ids.index("donuts_100")
    with pytest.raises(BadSampleError, match=r"donuts_100.jpg.*image_check: decode"):
        dm.datasets["test"][index]


def test_fit_then_test_on_the_fake_copy(fit_and_test):
    metrics = fit_and_test(_dm(FOOD / "header"))
    assert 0.0 <= metrics["test/acc"] <= 1.0


class _CountingSteps(CMPTModule):
    steps = 0

    def training_step(self, batch, batch_idx):
        type(self).steps += 1
        return super().training_step(batch, batch_idx)


def test_extra_fit_splits_stop_fit_at_setup_on_an_unknown_test_label(tmp_path):
    root = tmp_path / "food"
    shutil.copytree(FOOD / "noheader", root)
    path = root / "texts" / "test_titles.csv"
    rows = list(csv.reader(path.open(newline="")))
    (line,) = [n for n, row in enumerate(rows, start=1) if row[0] == "caesar_salad_100.jpg"]
    rows[line - 1][2] = "pizza"
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    plain = _dm(root, num_workers=0)
    plain.setup("fit")  # train and val are fine, and the test split is not read
    assert "test" not in plain.datasets
    dm = _dm(root, num_workers=0)
    dm.extra_fit_splits = ("test",)
    model = _CountingSteps(clip="cmpt-tiny", num_classes=dm.num_classes)
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        max_steps=1,
        default_root_dir=tmp_path,
    )
    with pytest.raises(BadSampleError, match=rf"test_titles.csv:{line}: unknown class 'pizza'"):
        trainer.fit(model, datamodule=dm)
    assert _CountingSteps.steps == 0 and trainer.global_step == 0
    assert set(dm.datasets) == {"train", "val"}  # built and screened before the test split


def test_extra_fit_splits_must_be_splits():
    dm = _dm(FOOD / "header")
    dm.extra_fit_splits = ("dev",)
    with pytest.raises(ValueError, match=r"extra_fit_splits must name splits of .*\['dev'\]"):
        dm.setup("fit")


def test_images_without_a_title_are_kept_as_image_only_samples(tmp_path, caplog):
    root = tmp_path / "food"
    shutil.copytree(FOOD / "header", root)
    donuts = root / "images" / "train" / "donuts"
    shutil.copy(donuts / "donuts_0.jpg", donuts / "donuts_999.jpg")  # no row in train_titles.csv
    dm = _dm(root, val_fraction=0.0)
    with caplog.at_level(logging.WARNING):
        dm.datasets["train"] = dm.build_split("train")  # val_fraction 0: no val split
    train = dm.datasets["train"]
    assert len(train) == 21 and train.ids[-1] == "donuts_999"
    sample = train[train.ids.index("donuts_999")]
    assert bool(sample["image_present"]) and not bool(sample["text_present"])
    assert int(sample["label"]) == dm.class_names.index("donuts")  # from its class folder
    note = (
        "1 image(s) of the train split have no title (no row in texts/train_titles.csv): kept "
        "as image-only samples (real missingness)"
    )
    assert note in caplog.text
    dm = _dm(root)
    dm.setup("fit")  # carved: the image-only sample is in train or val, counted at setup
    counts = [dm.availability_counts(split) for split in ("train", "val")]
    assert sum(c["image_only"] for c in counts) == 1 and sum(c["total"] for c in counts) == 21
