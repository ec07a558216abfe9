"""Errors that reach the command line as one message (issue 20, items 4, 6, 10 and 11).

Each runs the real CLI: exit status 2, one message naming the file, key or value, no traceback,
and ``CMPT_DEBUG=1`` gives the traceback back.
"""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cmpt_lightning.cli_errors import condense, describe, is_user_error, unwrap_worker_error
from cmpt_lightning.datasets.errors import BadSampleError, DatasetNotFoundError
from tests.helpers import cmpt

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DEMO = str(ROOT / "configs" / "demo_random.yaml")


def _one_message(err: str) -> str:
    """The message of a user error on stderr (asserting there is just one, and no traceback)."""
    assert "Traceback" not in err and "Original Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


# --- item 4: the chain as Python prints it, and never a bare number ----------------------------


def _load(path: Path):
    return json.loads(path.read_text())


def test_a_json_error_names_the_file_and_position_not_the_stopiteration_behind_it(tmp_path):
    path = tmp_path / "table.json"
    path.write_text('[{"a": 1},\n]')  # a trailing comma: JSONDecodeError from StopIteration(11)
    with pytest.raises(json.JSONDecodeError) as info:
        _load(path)
    assert isinstance(info.value.__context__, StopIteration)  # what condense used to print
    for message in (condense(info.value), describe(info.value)):
        assert message.startswith(str(path)), message
        assert "line 2 column 1" in message, message
    assert is_user_error(info.value)  # a broken file on disk: one message, exit 2
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads("[1,]")  # no file: a bug's traceback stays
    assert not is_user_error(info.value)


def test_condense_follows_the_cause_and_not_a_suppressed_context():
    try:
        try:
            {}["label"]
        except KeyError as inner:
            msg = "the outer explanation"
            raise ValueError(msg) from inner
    except ValueError as err:
        caused = err
    assert describe(caused) == "the outer explanation"
    try:
        try:
            raise StopIteration(1198)
        except StopIteration:
            msg = "label"
            raise KeyError(msg) from None
    except KeyError as err:
        suppressed = err
    assert describe(suppressed) == "KeyError: 'label'"  # never `1198`
    assert condense(suppressed) == "KeyError: 'label'"


def test_a_broken_class_index_names_the_file_and_line(tmp_path, capsys):
    index = tmp_path / "classes.json"
    index.write_text('{"apple_pie": 0,\n "pizza": 1,\n}')
    code = cmpt(["fit", "--config", str(ROOT / "configs" / "food101.yaml"),
                 "--model.init_args.clip", "cmpt-tiny", "--model.init_args.pretrained", "null",
                 "--data.init_args.root", str(DATA / "food101" / "header"),
                 "--data.init_args.class_index", str(index),
                 "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true",
                 "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert "classes.json" in message and "line 3" in message, message


def test_a_cut_cache_manifest_names_the_file_and_position(tmp_path, capsys):
    pytest.importorskip("litdata")
    root, out = DATA / "mmimdb" / "raw", tmp_path / "cache"
    args = ["data", "cache", "mmimdb", "--root", str(root), "--out", str(out),
            "--clip_model", "cmpt-tiny", "--workers", "1", "--progress", "false"]  # fmt: skip
    assert cmpt(args) == 0
    manifest = out / "manifest.json"
    text = manifest.read_text()
    cut = next(n for n in range(100, len(text)) if text[n - 1] == ":")  # `"key":` then nothing
    manifest.write_text(text[:cut])
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(manifest.read_text())
    assert isinstance(info.value.__context__, StopIteration)  # the `error: 131` case
    capsys.readouterr()
    code = cmpt(["fit", "--config", str(ROOT / "configs" / "mmimdb.yaml"),
                 "--model.init_args.clip", "cmpt-tiny", "--model.init_args.pretrained", "null",
                 "--data.init_args.root", "unused", "--data.init_args.cache", str(out),
                 "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true",
                 "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert "manifest.json" in message and "line" in message and "column" in message, message


# --- item 6: an error met in a DataLoader worker ------------------------------------------------


def _cut_jpeg(path: Path) -> None:
    """A JPEG cut mid-stream: its header and structure pass `verify`, its pixels do not load."""
    pixels = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10])
    with Image.open(path) as image:
        image.verify()  # passes: only loading finds it


def _csv_with_cut_jpeg(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DATA / "csv", root)
    _cut_jpeg(root / "images" / "000.jpg")
    config = {
        "model": {"class_path": "cmpt_lightning.CMPTModule", "init_args": {"clip": "cmpt-tiny"}},
        "data": {
            "class_path": "cmpt_lightning.MultimodalCSVDataModule",
            "init_args": {"root": str(root), "data_file": "data.csv", "batch_size": 4,
                          "num_workers": 1, "image_check": "verify"},
        },
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "default_root_dir": str(tmp_path),
                    "enable_progress_bar": False, "enable_model_summary": False},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_bad_sample_met_by_a_dataloader_worker_is_one_message(tmp_path, capsys, monkeypatch):
    config = _csv_with_cut_jpeg(tmp_path)
    code = cmpt(["fit", "--config", str(config)])
    err = capsys.readouterr().err
    message = _one_message(err)
    assert code == 2
    assert "Caught" not in err and "worker" not in err, err
    assert "000.jpg" in message and "truncated" in message, message
    monkeypatch.setenv("CMPT_DEBUG", "1")
    with pytest.raises(BadSampleError, match="in DataLoader worker process 0"):
        cmpt(["fit", "--config", str(config)])


def _worker_text(error: BaseException) -> tuple[str, type]:
    """What torch's ExceptionWrapper makes of ``error`` raised in worker 0."""
    from torch.utils.data._utils import ExceptionWrapper

    try:
        raise error
    except Exception:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        wrapper.reraise()
    except Exception as reraised:
        return str(reraised), type(reraised)
    msg = "reraise did not raise"
    raise AssertionError(msg)


def test_a_worker_error_torch_could_not_rebuild_is_still_a_user_error():
    error = DatasetNotFoundError("Food-101", "/data", "/data/images", "images/<class>/*.jpg")
    text, kind = _worker_text(error)
    assert kind is RuntimeError  # four arguments: torch falls back to a RuntimeError
    assert is_user_error(kind(text))
    assert unwrap_worker_error(text) == str(error)
    assert describe(kind(text)) == str(error)
    text, kind = _worker_text(ValueError("a bug"))
    assert not is_user_error(RuntimeError(text))  # a bug keeps its traceback


# --- item 10: --ckpt_path that is not a checkpoint ----------------------------------------------


def _test(ckpt: Path, tmp_path: Path) -> list[str]:
    return ["test", "--config", DEMO, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(tmp_path / "run")]  # fmt: skip


def test_a_missing_checkpoint_names_the_path_and_the_checkpoints_near_it(tmp_path, capsys):
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("best-epoch=1.ckpt", "last.ckpt"):
        (folder / name).write_bytes(b"")
    missing = tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "best.ckpt"
    code = cmpt(_test(missing, tmp_path))
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert str(missing) in message, message
    assert "version_0/checkpoints/best-epoch=1.ckpt" in message and "last.ckpt" in message


def _plain_state_dict(path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)


def _truncated_checkpoint(path: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(1000)}, "epoch": 0}, path)
    path.write_bytes(path.read_bytes()[:-200])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("not a checkpoint\n"), "is not a checkpoint"),
        (_truncated_checkpoint, "is not a checkpoint"),
        (_plain_state_dict, "not a Lightning checkpoint"),
    ],
    ids=["text file", "truncated", "plain state_dict"],
)
def test_a_file_that_is_not_a_checkpoint_is_one_message(make, expected, tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    make(ckpt)
    code = cmpt(_test(ckpt, tmp_path))
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert str(ckpt) in message and expected in message, message


def test_a_missing_checkpoint_traceback_is_behind_cmpt_debug(tmp_path, monkeypatch):
    from cmpt_lightning.checkpoint_io import CheckpointNotFoundError

    monkeypatch.setenv("CMPT_DEBUG", "1")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):
        cmpt(_test(tmp_path / "absent.ckpt", tmp_path))


# --- item 11: did you mean ---------------------------------------------------------------------


def test_a_misspelt_data_module_names_the_closest_and_the_known_ones(tmp_path, capsys):
    code = cmpt(["fit", "--config", DEMO, "--data", "Food101DataModul"])
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert "did you mean Food101DataModule?" in message, message
    for known in ("MultimodalCSVDataModule", "MMIMDbDataModule", "WorldDataModule"):
        assert known in message, message
    assert "not accessible" not in message


def test_every_listed_data_module_is_accepted_by_its_short_name(capsys):
    assert cmpt(["fit", "--data", "WorldDataModule", "--print_config"]) == 0
    assert "class_path: cmpt_lightning.WorldDataModule" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "line", "shown", "closest"),
    [
        ("trainer:\n  max_epoch: 3\n", 2, "trainer.max_epoch", "trainer.max_epochs"),
        ("trainer.max_epoch: 3\n", 1, "trainer.max_epoch", "trainer.max_epochs"),
        (
            "data:\n  init_args:\n    eval_missing:\n      rat: 0.3\n",
            4,
            "data.init_args.eval_missing.rat",
            "data.init_args.eval_missing.rate",
        ),
        ("model:\n  init_args:\n    lora_rnk: 2\n", 3, "lora_rnk", "model.init_args.lora_rank"),
    ],
)
def test_a_misspelt_key_in_a_second_config_names_the_file_line_and_closest_key(
    text, line, shown, closest, tmp_path, capsys
):
    second = tmp_path / "mine.yaml"
    second.write_text(text)
    code = cmpt(["fit", "--config", DEMO, "--config", str(second)])
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert f"{second}, line {line}:" in message, message
    assert shown in message and f"did you mean {closest}?" in message, message


def test_a_misspelt_flag_names_the_closest_flag(capsys):
    code = cmpt(["fit", "--config", DEMO, "--trainer.max_epochz", "3"])
    message = _one_message(capsys.readouterr().err)
    assert code == 2
    assert "did you mean --trainer.max_epochs?" in message, message
