import shutil
from pathlib import Path

import pytest

from cmpt_lightning.datacheck import data_check
from tests.helpers import cmpt as main

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize(
    ("family", "root", "options", "official"),
    [
        ("food101", "food101/header", {}, "67,972"),
        ("food101", "food101/txt", {"text_source": "txt"}, "22,716"),
        ("mmimdb", "mmimdb/raw", {}, "15,552"),
        ("hateful_memes", "hateful_memes/final", {}, "2,000"),
        ("csv", "csv", {"data_file": "data.csv", "predict_file": "predict.csv"}, "-"),
    ],
)
def test_fake_copies_pass_with_count_warnings(family, root, options, official, capsys):
    assert data_check(family, str(DATA / root), **options) == 0
    out = capsys.readouterr().out
    assert "split" in out and official in out and "0 bad sample(s)" in out
    if family != "csv":
        assert "the official split has" in out  # a subset is a warning, not an error


def test_unlabelled_split_is_a_warning(capsys):
    assert data_check("hateful_memes", str(DATA / "hateful_memes" / "phase1")) == 0
    out = capsys.readouterr().out
    assert "test_seen: no labels" in out and "dev_unseen: no file" in out


def test_errors_name_every_offending_file_and_exit_1(tmp_path, capsys):
    root = tmp_path / "food"
    shutil.copytree(DATA / "food101" / "header", root)
    bad = [
        root / "images" / "train" / "donuts" / "donuts_0.jpg",
        root / "images" / "train" / "donuts" / "donuts_3.jpg",
        root / "images" / "test" / "apple_pie" / "apple_pie_100.jpg",
    ]
    for path in bad:
        path.write_bytes(b"broken")
    truncated = root / "images" / "test" / "donuts" / "donuts_101.jpg"
    truncated.write_bytes(truncated.read_bytes()[:150])
    assert data_check("food101", str(root), image_check="decode") == 1
    out = capsys.readouterr().out
    for path in [*bad, truncated]:
        assert any(path.name in line and "unreadable image" in line for line in out.splitlines())
    assert "4 problem(s)" in out and "4 bad sample(s)" in out


def test_missing_data_is_an_error_with_the_layout(tmp_path, capsys):
    assert data_check("mmimdb", str(DATA / "mmimdb" / "hdf5")) == 1
    assert "HDF5 variant" in capsys.readouterr().out
    assert data_check("food101", str(tmp_path / "nothing")) == 1
    out = capsys.readouterr().out
    assert "error: UPMC Food-101 not found" in out and "texts/train_titles.csv" in out


def test_options_must_fit_the_family():
    with pytest.raises(ValueError, match="do not apply to mmimdb"):
        data_check("mmimdb", str(DATA / "mmimdb" / "raw"), text_source="csv")
    with pytest.raises(ValueError, match="unknown dataset family 'imagenet'"):
        data_check("imagenet", "x")


def test_the_command_line_takes_each_family_options_from_its_data_module(capsys):
    root = str(DATA / "csv")
    assert main(["data", "check", "csv", "--root", root, "--train_file", "multilabel/train.jsonl",
                 "--task", "multilabel", "--image_check", "decode"]) == 0  # fmt: skip
    assert "3 classes" in capsys.readouterr().out
    mmimdb = str(DATA / "mmimdb" / "raw")
    assert main(["data", "check", "mmimdb", "--root", mmimdb, "--text_mode", "all_plots"]) == 0
    capsys.readouterr()
    # an option of another family is refused by the parser, naming it
    assert main(["data", "check", "mmimdb", "--root", root, "--data_file", "data.csv"]) == 2
    assert "data_file" in capsys.readouterr().err
    assert main(["data", "check", "cifar", "--root", root]) == 2
    assert "cifar" in capsys.readouterr().err


def test_each_family_has_generated_help(capsys):
    assert main(["data", "check", "food101", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--root", "--image_check", "--text_source", "--val_fraction"):
        assert option in text, option
    assert "--batch_size" not in text  # training settings are not check options


def test_the_0_1_classes_spelling_still_works(capsys):
    root = str(DATA / "csv")
    with pytest.warns(FutureWarning, match="--classes with several values"):
        code = main(["data", "check", "csv", "--root", root, "--data_file", "data.csv",
                     "--classes", "bird", "cat", "dog", "--image_check", "exists"])  # fmt: skip
    assert code == 0
    assert "0 bad sample(s)" in capsys.readouterr().out
