"""`cmpt data cache` and the data modules reading a cache (litdata chunks + manifest)."""

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

pytest.importorskip("litdata")

from cmpt_lightning.datamodules.cache_writer import write_cache
from cmpt_lightning.datamodules.registry import FAMILIES
from cmpt_lightning.datasets.cache import CacheMismatchError
from cmpt_lightning.missing import MissingConfig
from cmpt_lightning.module import CMPTModule
from tests.helpers import cmpt

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

#: family -> (root of its fake copy, options of its data module)
FAKE = {
    "food101": (DATA / "food101" / "header", {"val_fraction": 0.2}),
    "mmimdb": (DATA / "mmimdb" / "raw", {}),
    "hateful_memes": (DATA / "hateful_memes" / "final", {}),
    "csv": (DATA / "csv", {"data_file": "data.csv"}),
}
MISSING = {"rate": 0.5, "type": "both", "seed": 3}


def _dm(family, *, cache=None, clip_model="cmpt-tiny", **options):
    root, defaults = FAKE[family]
    settings = {
        "batch_size": 4,
        "num_workers": 0,
        "train_missing": MissingConfig(**MISSING),
        "eval_missing": MissingConfig(**MISSING),
        **defaults,
        **options,
    }
    if cache is not None:
        settings["cache"] = str(cache)
    return FAMILIES[family](root=str(root), clip_model=clip_model, **settings)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """A uint8 cache of each fake family, written once."""
    folder = tmp_path_factory.mktemp("caches")
    for family in FAKE:
        write_cache(_dm(family), str(folder / family), workers=1, verbose=False)
    return folder


def _assert_same_samples(a, b):
    assert list(a.ids) == list(b.ids) and len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == y[key].dtype and torch.equal(value, y[key]), (i, key)
            else:
                assert value == y[key], (i, key)


@pytest.mark.parametrize("family", sorted(FAKE))
def test_cached_splits_are_bit_identical_to_the_files(family, caches):
    files, cached = _dm(family), _dm(family, cache=caches / family)
    files.setup()
    cached.setup()
    assert cached.class_names == files.class_names and cached.num_classes == files.num_classes
    for split in ("train", "val", "test"):
        _assert_same_samples(files.datasets[split], cached.datasets[split])
        for a, b in zip(files.availability(split), cached.availability(split), strict=True):
            assert torch.equal(a, b)  # masks keyed by sample id: the protocol is unchanged
        assert files.counts[split] == cached.counts[split]


def _assert_same_metrics(a, b):
    assert a.keys() == b.keys()
    for key in a:  # exactly equal (a cell without both classes has a NaN AUROC in both)
        assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key])), key


def _fit_test(dm, tmp_path, epochs=2):
    seed_everything(0)
    model = CMPTModule(clip="cmpt-tiny", num_classes=dm.num_classes, task=dm.task.value)
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(model, datamodule=dm)
    (metrics,) = trainer.test(model, datamodule=dm, verbose=False)
    return model, metrics


@pytest.mark.parametrize("family", ["food101", "mmimdb", "hateful_memes"])
def test_fit_and_test_from_the_cache_give_the_metrics_of_the_files(family, caches, tmp_path):
    _, from_files = _fit_test(_dm(family), tmp_path)
    _, from_cache = _fit_test(_dm(family, cache=caches / family, cache_order="exact"), tmp_path)
    assert "test/score" in from_files
    _assert_same_metrics(from_files, from_cache)


def test_a_streamed_fit_tests_the_same_on_the_cache_and_the_files(caches, tmp_path):
    model, from_cache = _fit_test(_dm("mmimdb", cache=caches / "mmimdb"), tmp_path)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (from_files,) = trainer.test(model, datamodule=_dm("mmimdb"), verbose=False)
    _assert_same_metrics(from_files, from_cache)


def _register_model(tmp_path, name, **changes):
    config = json.loads((ROOT / "src/cmpt_lightning/models/configs/cmpt-tiny.json").read_text())
    for key, value in changes.items():
        config[key].update(value)
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")


def test_a_cache_refuses_another_image_size_or_tokenizer_naming_both(caches, tmp_path):
    _register_model(tmp_path, "cmpt-tiny-48px", vision_cfg={"image_size": 48})
    _register_model(tmp_path, "cmpt-tiny-ctx16", text_cfg={"context_length": 16})
    cache = caches / "food101"
    with pytest.raises(CacheMismatchError, match=r"built for 32x32 .*'cmpt-tiny'.*asks for 48x48"):
        _dm("food101", cache=cache, clip_model="cmpt-tiny-48px").setup("test")
    with pytest.raises(CacheMismatchError) as info:
        _dm("food101", cache=cache, clip_model="cmpt-tiny-ctx16").setup("fit")
    message = str(info.value)
    assert "context length 32" in message and "context length 16" in message
    assert "'cmpt-tiny'" in message and "'cmpt-tiny-ctx16'" in message
    with pytest.raises(
        CacheMismatchError, match=r"val_fraction: the cache has 0\.2, this run has 0\.5"
    ):
        _dm("food101", cache=cache, val_fraction=0.5).num_classes  # noqa: B018
    # the command line prints it as one message and exits 2
    code = cmpt(["fit", "--config", str(ROOT / "configs" / "food101.yaml"),
                 "--model.init_args.clip", "cmpt-tiny-48px",
                 "--model.init_args.pretrained", "null", "--data.init_args.root", "unused",
                 "--data.init_args.cache", str(cache), "--data.init_args.val_fraction", "0.2",
                 "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu",
                 "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert code == 2


def test_jpeg_storage_keeps_ids_labels_and_close_pixels(tmp_path):
    files = _dm("hateful_memes")
    write_cache(files, str(tmp_path / "jpeg"), image_storage="jpeg", workers=1, verbose=False)
    cached = _dm("hateful_memes", cache=tmp_path / "jpeg")
    files.setup("test")
    cached.setup("test")
    a, b = files.datasets["test"], cached.datasets["test"]
    assert list(a.ids) == list(b.ids)

    def model_input(sample):  # uint8 pixels, normalised as on the device
        return cached.normalize_images({"image": sample["image"][None]})["image"][0]

    images = [model_input(b[j]) for j in range(len(b))]
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["label"], y["label"]) and torch.equal(x["text"], y["text"])
        errors = [(model_input(x) - image).abs().mean() for image in images]
        assert 0 < errors[i] < 0.3 and errors[i] == min(errors)  # lossy, but its own image


def test_rerun_does_nothing_and_other_settings_need_overwrite(tmp_path):
    out = tmp_path / "cache"
    write_cache(_dm("csv"), str(out), workers=1, verbose=False)
    chunks = {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    write_cache(_dm("csv"), str(out), workers=1, verbose=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == chunks
    with pytest.raises(CacheMismatchError, match=r"image\.storage: the cache has 'uint8', th"):
        write_cache(_dm("csv"), str(out), image_storage="jpeg", verbose=False)
    with pytest.raises(CacheMismatchError, match=r"data\.val_fraction: the cache has 0\.1, th"):
        write_cache(_dm("csv", val_fraction=0.3), str(out), verbose=False)
    manifest = write_cache(
        _dm("csv"), str(out), image_storage="jpeg", overwrite=True, verbose=False
    )
    assert manifest.image["storage"] == "jpeg" and manifest.complete
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # --overwrite deletes only what a cache build wrote
        with pytest.raises(ValueError, match=r"holds 1 file and no cache .*notes\.txt"):
            write_cache(_dm("csv"), str(tmp_path / "other"), overwrite=overwrite, verbose=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


_SLOW_BUILD = """
import sys, time
from cmpt_lightning.datamodules.cache_writer import write_cache
from cmpt_lightning.datasets import cache_samples
from tests.test_cache import _dm
call = cache_samples.SampleEncoder.__call__
def slow(self, index):
    time.sleep(0.15)
    return call(self, index)
cache_samples.SampleEncoder.__call__ = slow
write_cache(_dm("food101"), sys.argv[1], workers=2, chunk_bytes="4kb", verbose=False)
"""


def test_an_interrupted_build_refuses_to_load_then_resumes_to_the_same_cache(caches, tmp_path):
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    build = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, str(out)], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "train").glob("*.bin"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            assert build.poll() is None, "the build ended before it could be interrupted"
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    assert not (out / "train" / "index.json").exists()  # killed in the middle of train
    with pytest.raises(CacheMismatchError, match="incomplete"):
        _dm("food101", cache=out).setup("fit")
    write_cache(_dm("food101"), str(out), workers=1, verbose=False)  # resumes with 2 workers
    resumed, fresh = _dm("food101", cache=out), _dm("food101", cache=caches / "food101")
    resumed.setup()
    fresh.setup()
    for split in ("train", "val", "test"):
        _assert_same_samples(resumed.datasets[split], fresh.datasets[split])


class _Record(Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.global_step, batch["index"].tolist()))


def _steps(dm, root, max_steps, ckpt_path=None):
    seed_everything(0)
    record = _Record()
    every = ModelCheckpoint(dirpath=root, every_n_train_steps=5, save_top_k=-1, filename="{step}")
    trainer = Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[record, every],
    )
    trainer.fit(CMPTModule(num_classes=dm.num_classes), datamodule=dm, ckpt_path=ckpt_path)
    return record.batches


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_training_resumes_mid_epoch_with_the_same_batches(caches, tmp_path, workers):
    def dm():  # 16 training samples, 8 batches an epoch
        return _dm("food101", cache=caches / "food101", batch_size=2, num_workers=workers)

    whole = _steps(dm(), tmp_path / "whole", 20)
    resumed = _steps(dm(), tmp_path / "resumed", 20, tmp_path / "whole" / "step=10.ckpt")
    assert resumed == whole[10:]  # the rest of epoch 1 (from its 3rd batch), then epoch 2
    assert whole[:8] != whole[8:16]  # each epoch its own order


def test_the_loader_state_counts_the_batches_trained_on(caches):
    data = _dm("food101", cache=caches / "food101", batch_size=2)
    data.setup("fit")
    seen = []
    loader = data.train_dataloader()
    loader.consumed = lambda: 3  # a fourth batch was fetched ahead but not trained on
    for batch in loader:
        seen.append(batch["index"].tolist())
        if len(seen) == 4:
            state = loader.state_dict()
            break
    again = _dm("food101", cache=caches / "food101", batch_size=2).train_dataloader()
    again.load_state_dict(state)
    assert next(iter(again))["index"].tolist() == seen[3]


def test_cache_command_line(tmp_path, capsys):
    root, _ = FAKE["mmimdb"]
    out = tmp_path / "mmimdb"
    args = ["data", "cache", "mmimdb", "--root", str(root), "--out", str(out),
            "--clip_model", "cmpt-tiny", "--workers", "1", "--progress", "false"]  # fmt: skip
    assert cmpt(args) == 0
    assert "mmimdb cache at" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["text"]["context_length"] == 32
    assert cmpt([*args, "--image_storage", "jpeg"]) == 2  # another build in the same folder
    assert "--overwrite true" in capsys.readouterr().err
    assert cmpt(["data", "cache", "mmimdb", "--root", str(root), "--out", str(out)]) == 2
    assert "clip_model" in capsys.readouterr().err  # which model the cache is for: required


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("cache_input", ["--model", "cmpt-tiny", "--images", "8", "--repeats", "1",
                         "--loader-batch", "4", "--consumption", "100"]),
        ("cache_train", ["--tiny", "--device", "cpu", "--workers", "1"]),
    ],
)  # fmt: skip
def test_the_cache_benchmarks_run_and_append_their_section(name, args, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    threads = torch.get_num_threads()
    out = tmp_path / "BENCHMARKS.md"
    try:
        report = importlib.import_module(name).main([*args, "--out", str(out)])
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        torch.set_num_threads(threads)
    assert f"## {report.title}" in out.read_text()
    assert report.rows and all(len(r) == len(report.columns) for r in report.rows)


def test_litdatas_advert_is_not_printed(capsys):
    import contextlib
    import sys

    from cmpt_lightning.datamodules.cache_writer import _WithoutAdvert

    with contextlib.redirect_stdout(_WithoutAdvert(sys.stdout)):
        print("Create an account on https://lightning.ai/ to transform your data faster.")
        # litdata's worker chatter (issue 20 item 15): each line by its exact message
        print("Setting multiprocessing start_method to fork. ")
        print("Storing the files under /tmp/cache/train")
        print("Setup started with fast_dev_run=False.")
        print("Setup finished in 0.012 seconds. Found 12 items to process.")
        print("Resuming from last saved checkpoint...")
        print("No checkpoints found. Saving current configuration...")
        print("Starting 2 workers with 12 items. The progress bar is only updated when a worker "
              "finishes.")  # fmt: skip
        print("Workers are ready ! Starting data processing...")
        print("Rank 0 inferred the following `['str', 'int', 'bool']` data format.")
        print("Worker 0 is terminating.")
        print("Worker 0 is done.")
        print("Workers are finished.")
        print("Finished data processing!")
        print("Worker 0 failed: disk full")  # anything else passes
    assert capsys.readouterr().out == "Worker 0 failed: disk full\n"
