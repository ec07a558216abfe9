"""Faults around a cache: an --out that would swallow the raw data, a chunk that is gone.

Every case ends as one message naming the files and the fix, exit status 2, no traceback, and
nothing lost: ``cmpt data cache`` deletes only the files a cache build wrote.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from lightning.pytorch import Callback

pytest.importorskip("litdata")

from cmpt_lightning.datamodules.cache_writer import write_cache
from cmpt_lightning.datamodules.registry import FAMILIES
from cmpt_lightning.datasets.cache_files import CacheChunkError
from cmpt_lightning.errors import UserInputError
from tests.helpers import cmpt
from tests.test_cache import FAKE, _dm

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder):
    """Every file under ``folder`` (links followed) by its path, with a digest of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_message(err, prog):
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len([line for line in lines if ": error: " in line]) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return err


def _raw_dm(root):
    return FAMILIES["food101"](root=str(root), clip_model="cmpt-tiny", val_fraction=0.2)


def _cache_args(root, out, *more):
    return ["data", "cache", "food101", "--root", str(root), "--out", str(out),
            "--clip_model", "cmpt-tiny", "--val_fraction", "0.2", "--workers", "1",
            "--progress", "false", *more]  # fmt: skip


@pytest.fixture
def raw(tmp_path):
    """A copy of the fake Food-101 (its root) under ``tmp_path / "data"``."""
    root = tmp_path / "data" / "food101"
    shutil.copytree(FAKE["food101"][0], root)
    return root


@pytest.mark.parametrize("where", ["root", "inside", "above", "link_to_root", "link_above"])
def test_an_out_at_inside_or_above_the_root_is_refused_and_the_data_survives(
    where, raw, tmp_path, capsys
):
    before = _snapshot(raw)
    assert len(before) == 30
    out = {
        "root": raw,
        "inside": raw / "images",
        "above": tmp_path,
        "link_to_root": tmp_path / "link",
        "link_above": tmp_path / "link",
    }[where]
    if where.startswith("link"):
        out.symlink_to(raw if where == "link_to_root" else raw.parent, target_is_directory=True)
    code = cmpt(_cache_args(raw, out, "--overwrite", "true"))
    err = _one_message(capsys.readouterr().err, "cmpt data cache food101")
    assert code == 2
    assert repr(str(out)) in err and repr(str(raw)) in err and "Give an --out outside" in err
    assert _snapshot(raw) == before  # all 30 raw files, unchanged


def test_a_folder_without_a_manifest_is_refused_even_with_overwrite(raw, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(raw / "texts", other / "texts")
    (other / "notes.txt").write_text("mine")
    before = _snapshot(other)
    assert cmpt(_cache_args(raw, other, "--overwrite", "true")) == 2
    err = _one_message(capsys.readouterr().err, "cmpt data cache food101")
    assert f"holds {len(before)} files and no cache" in err and "notes.txt" in err
    assert _snapshot(other) == before


def test_overwrite_deletes_only_the_files_the_build_wrote(raw, tmp_path, capsys):
    out = tmp_path / "cache"
    assert cmpt(_cache_args(raw, out)) == 0
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(listed) == sorted(_snapshot(out))  # the manifest lists every file it wrote
    (out / "notes.txt").write_text("mine")  # beside the cache: kept
    assert cmpt(_cache_args(raw, out, "--image_storage", "jpeg", "--overwrite", "true")) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "mine"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["storage"] == "jpeg"
    assert sorted([*manifest["files"], "notes.txt"]) == sorted(_snapshot(out))
    # a file of the user's inside a split's folder: refused before anything is deleted
    (out / "val" / "mine.txt").write_text("mine")
    before = _snapshot(out)
    assert cmpt(_cache_args(raw, out, "--overwrite", "true")) == 2
    err = _one_message(capsys.readouterr().err, "cmpt data cache food101")
    assert "val/mine.txt" in err and "1 file that no cache build wrote" in err
    assert _snapshot(out) == before
    assert _snapshot(raw) == _snapshot(FAKE["food101"][0])


def test_overwrite_clears_an_interrupted_build_and_an_older_manifest(raw, tmp_path):
    out = tmp_path / "cache"
    write_cache(_raw_dm(raw), str(out), workers=1, chunk_bytes="4kb", verbose=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]  # as an earlier version wrote it
    del manifest["splits"]["test"]  # test was being written when the build stopped
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "test" / "index.json").unlink()
    (out / "test" / ".checkpoints").mkdir()
    (out / "test" / ".checkpoints" / "checkpoint-0.json").write_text("{}")
    (out / "test" / "0-index.json").write_text("{}")
    written = write_cache(
        _raw_dm(raw), str(out), image_storage="jpeg", overwrite=True, verbose=False
    )
    assert written.complete and sorted(written.files) == sorted(_snapshot(out))
    assert not (out / "test" / ".checkpoints").exists()


def test_an_interrupted_build_still_resumes_with_the_same_settings(raw, tmp_path):
    out = tmp_path / "cache"
    write_cache(_raw_dm(raw), str(out), workers=1, chunk_bytes="4kb", verbose=False)
    chunks = {p: p.stat().st_mtime_ns for p in (out / "train").glob("*.bin")}
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["splits"]["test"]
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(out / "test")
    resumed = write_cache(_raw_dm(raw), str(out), workers=1, verbose=False)
    assert resumed.complete and "test" in resumed.splits
    assert {p: p.stat().st_mtime_ns for p in (out / "train").glob("*.bin")} == chunks  # kept


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A food101 cache with a chunk per sample (4 val, 8 test, 16 train chunks)."""
    out = tmp_path_factory.mktemp("built") / "cache"
    write_cache(_dm("food101"), str(out), workers=1, chunk_bytes="4kb", verbose=False)
    return out


@pytest.fixture
def cache(built, tmp_path):
    """A copy of the built cache, to damage."""
    return Path(shutil.copytree(built, tmp_path / "cache"))


def _validate(cache_dir, tmp_path, *more):
    return ["validate", "--config", ROOT / "configs/food101.yaml",
            "--config", ROOT / "configs/cpu_smoke.yaml",
            "--data.init_args.root", FAKE["food101"][0], "--data.init_args.val_fraction", "0.2",
            "--data.init_args.cache", cache_dir, "--trainer.default_root_dir", tmp_path,
            *more]  # fmt: skip


def test_a_missing_or_cut_chunk_is_one_message_when_the_cache_opens(cache, tmp_path, capsys):
    (cache / "val" / "chunk-0-2.bin").unlink()
    with (cache / "test" / "chunk-0-1.bin").open("r+b") as chunk:
        chunk.truncate(100)
    assert cmpt(_validate(cache, tmp_path)) == 2
    err = _one_message(capsys.readouterr().err, "cmpt validate")
    assert "val/chunk-0-2.bin (missing)" in err and "test/chunk-0-1.bin (100 bytes" in err
    assert repr(str(cache)) in err and f"--out {cache}" in err and "--overwrite true" in err
    # the cache command refuses it too, and rebuilds it with --overwrite
    args = _cache_args(FAKE["food101"][0], cache, "--chunk_bytes", "4kb")
    assert cmpt(args) == 2
    assert "val/chunk-0-2.bin (missing)" in capsys.readouterr().err
    assert cmpt([*args, "--overwrite", "true"]) == 0
    assert (cache / "val" / "chunk-0-2.bin").stat().st_size > 100


def test_a_cache_without_a_split_index_is_one_message(cache):
    (cache / "train" / "index.json").unlink()
    with pytest.raises(CacheChunkError, match=r"train/index\.json \(missing or unreadable\)"):
        _dm("food101", cache=cache).setup("fit")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_chunk_lost_during_the_run_is_one_message(cache, workers):
    data = _dm("food101", cache=cache, num_workers=workers)
    data.setup("validate")  # the cache is checked whole
    (cache / "val" / "chunk-0-1.bin").unlink()
    with pytest.raises(CacheChunkError) as info:
        for _ in data.val_dataloader():
            pass
    message = str(info.value)  # from a worker too: the message alone, not its traceback
    assert message.startswith(f"the chunk '{cache / 'val' / 'chunk-0-1.bin'}' of the cached")
    assert "Traceback" not in message and "--overwrite true" in message


def test_a_chunk_lost_while_streaming_is_one_message(cache):
    data = _dm("food101", cache=cache)  # cache_order: stream
    data.setup("fit")
    (cache / "train" / "chunk-0-3.bin").unlink()
    with pytest.raises(UserInputError, match=r"train/chunk-0-3\.bin' of the cached split"):
        for _ in data.train_dataloader():
            pass


class RemoveChunk(Callback):
    """Delete a chunk of the cache when training starts (after the cache was checked)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        os.remove(self.path)


def test_fit_stops_with_one_message_when_a_chunk_vanishes(cache, tmp_path, capsys):
    lost = cache / "val" / "chunk-0-0.bin"
    args = _validate(cache, tmp_path, "--trainer.callbacks+=tests.test_cache_faults.RemoveChunk",
                     "--trainer.callbacks.path", lost, "--test_after_fit", "false")  # fmt: skip
    assert cmpt(["fit", *args[1:]]) == 2
    err = _one_message(capsys.readouterr().err, "cmpt fit")
    assert f"the chunk '{lost}' of the cached split" in err and "--overwrite true" in err
