"""``FileDataModule.inspect()``: what ``cmpt data check`` reports, on the fake copies."""

import inspect
import shutil

import pytest

from cmpt_lightning.datamodules.base import CMPTDataModule
from cmpt_lightning.datamodules.files import FileDataModule
from cmpt_lightning.datamodules.registry import FAMILIES
from cmpt_lightning.datasets.checks import CheckReport
from cmpt_lightning.datasets.errors import DatasetNotFoundError

from .conftest import DATA


@pytest.fixture(autouse=True)
def no_preprocessing(monkeypatch):
    """inspect() must need neither a tokenizer nor the model's preprocessing."""

    def refuse(*args, **kwargs):
        msg = "inspect() asked for the model's preprocessing"
        raise AssertionError(msg)

    for name in ("tokenizer", "image_transform", "image_size"):
        monkeypatch.setattr(CMPTDataModule, name, refuse)


def _inspect(family, root, **options):
    report = FAMILIES[family](root=str(root), **options).inspect()
    assert isinstance(report, CheckReport)
    return report


def _bad(report):
    return [b for s in report.splits for b in s.bad]


def test_registry_names_every_family_in_order():
    assert list(FAMILIES) == ["food101", "mmimdb", "hateful_memes", "csv"]
    for name, cls in FAMILIES.items():
        assert issubclass(cls, FileDataModule)
        assert cls.family == name == cls.dataset_class.family  # the name screen() tells users


@pytest.mark.parametrize("family", ["food101", "mmimdb", "hateful_memes"])
def test_construction_reads_nothing(family, tmp_path):
    module = FAMILIES[family](root=str(tmp_path / "not-there"))
    assert module.root == tmp_path / "not-there"
    with pytest.raises(DatasetNotFoundError):
        module.inspect()


def test_options_are_the_constructor_arguments():
    """A data check's options: every family's and FileDataModule's, none of the shared ones."""
    shared = set(inspect.signature(CMPTDataModule.__init__).parameters)
    base = set(inspect.signature(FileDataModule.__init__).parameters) - {"self", "kwargs"}
    assert base == {
        "root", "image_check", "check_threads", "on_bad_sample", "allow_outside_root",
        "cache", "cache_order",  # reading a cache instead: not data check options
    }  # fmt: skip
    for cls in FAMILIES.values():
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert "root" in own and not own & (shared - {"self", "kwargs"})
        assert not own & {"image_check", "check_threads", "on_bad_sample", "allow_outside_root"}


def test_food101_splits_class_count_and_unused_images(tmp_path):
    root = tmp_path / "food"
    shutil.copytree(DATA / "food101" / "header", root)
    donuts = root / "images" / "train" / "donuts"
    shutil.copy(donuts / "donuts_0.jpg", donuts / "donuts_999.jpg")  # an image without a row
    report = _inspect("food101", root)
    assert [(s.split, s.file, s.official) for s in report.splits] == [
        ("train", "images/train", 67972),
        ("test", "images/test", 22716),
    ]
    assert all("the official split has" in s.warning and s.count > 0 for s in report.splits)
    assert "4 classes, the full dataset has 101" in report.warnings
    assert (
        "1 image(s) of the train split have no title (no row in texts/train_titles.csv): kept "
        "as image-only samples (real missingness)"
    ) in report.warnings
    assert report.splits[0].count == 21  # 20 rows and the image-only sample
    assert not _bad(report)


def test_food101_text_source_is_the_modules_option():
    report = _inspect("food101", DATA / "food101" / "txt", text_source="txt")
    assert [s.official for s in report.splits] == [67972, 22716] and not _bad(report)
    with pytest.raises(ValueError, match="text_source must be one of auto, csv, txt; got 'xml'"):
        FAMILIES["food101"](root="x", text_source="xml")


def test_food101_names_every_offending_file(tmp_path):
    root = tmp_path / "food"
    shutil.copytree(DATA / "food101" / "header", root)
    broken = [
        root / "images" / "train" / "donuts" / "donuts_0.jpg",
        root / "images" / "test" / "apple_pie" / "apple_pie_100.jpg",
    ]
    for path in broken:
        path.write_bytes(b"broken")
    truncated = root / "images" / "test" / "donuts" / "donuts_101.jpg"
    truncated.write_bytes(truncated.read_bytes()[:150])
    found = {b.file: b.reason for b in _bad(_inspect("food101", root, image_check="decode"))}
    assert sorted(found) == sorted(str(p) for p in [*broken, truncated])
    assert all(reason.startswith("unreadable image") for reason in found.values())
    assert not _bad(_inspect("food101", root, image_check="exists"))  # the module's own check


def test_mmimdb_official_sizes_only_for_outline():
    report = _inspect("mmimdb", DATA / "mmimdb" / "raw")
    assert [(s.split, s.file, s.official) for s in report.splits] == [
        ("train", "split.json", 15552),
        ("dev", "split.json", 2608),
        ("test", "split.json", 7799),
    ]
    assert [s.count for s in report.splits] == [12, 4, 4] and not _bad(report)
    plots = _inspect("mmimdb", DATA / "mmimdb" / "raw", text_mode="all_plots")
    assert all(s.official is None and not s.warning for s in plots.splits)
    assert plots.splits[0].count > 12


def test_mmimdb_hdf5_is_an_error_with_the_reason():
    with pytest.raises(DatasetNotFoundError, match="HDF5 variant"):
        _inspect("mmimdb", DATA / "mmimdb" / "hdf5")


def test_hateful_memes_every_split_file():
    report = _inspect("hateful_memes", DATA / "hateful_memes" / "final")
    assert [s.split for s in report.splits] == [
        "train", "dev_seen", "dev_unseen", "test_seen", "test_unseen"
    ]  # fmt: skip
    assert report.splits[-1].official == 2000 and not report.warnings and not _bad(report)


def test_hateful_memes_unlabelled_split_and_missing_file_are_warnings():
    report = _inspect("hateful_memes", DATA / "hateful_memes" / "phase1")
    assert "dev_unseen: no file (dev_unseen.jsonl)" in report.warnings
    splits = {s.split: s for s in report.splits}
    assert splits["test_seen"].file == "test.jsonl" and "no labels" in splits["test_seen"].warning
    assert splits["dev_seen"].file == "dev.jsonl" and not _bad(report)


def test_csv_splits_predict_rows_and_inferred_classes():
    report = _inspect("csv", DATA / "csv", data_file="data.csv", predict_file="predict.csv")
    assert [(s.split, s.file, s.official) for s in report.splits] == [
        ("train", "data.csv", None),
        ("val", "data.csv", None),
        ("test", "data.csv", None),
        ("predict", "predict.csv", None),
    ]
    assert [s.count for s in report.splits] == [12, 3, 3, 4]
    assert report.info == ["3 classes, from the train labels: ['bird', 'cat', 'dog']"]
    assert report.warnings == ["predict: rows ['p3'] have no image and no text: not predicted"]
    assert not _bad(report)


def test_csv_reads_with_the_modules_options(tmp_path):
    report = _inspect(
        "csv",
        DATA / "csv",
        train_file="multilabel/train.jsonl",
        val_file="multilabel/val.jsonl",
        task="multilabel",
        image_check="decode",
    )
    assert [s.split for s in report.splits] == ["train", "val"] and not _bad(report)
    assert report.info[0].startswith("3 classes, from the train labels")
    given = _inspect("csv", DATA / "csv", data_file="data.csv", classes=["bird", "cat"])
    assert not given.info
    assert {b.reason for b in _bad(given)} == {"unknown label 'dog' (classes: ['bird', 'cat'])"}
    (tmp_path / "t.csv").write_text("picture,caption,label\nx.jpg,hi,a\n")
    with pytest.raises(ValueError, match="neither the image column 'image' nor the text column"):
        _inspect("csv", tmp_path, train_file="t.csv", classes=["a", "b"])
    columns = {"image_column": "picture", "text_column": "caption", "image_check": "none"}
    found = _inspect("csv", tmp_path, train_file="t.csv", classes=["a", "b"], **columns)
    assert found.splits[0].count == 1 and not _bad(found)
