"""Benchmark 5b: input samples/s per worker from a litdata cache vs from the JPEG files.

The Food-101-sized JPEGs of benchmark 5 (512 x 384, quality 90) are read three ways, side by
side in one process on one core: by ``Food101Dataset`` (decode + CLIP preprocessing, cached
token ids: the JPEG path), and from the two caches ``cmpt data cache`` writes for ``--model``,
``uint8`` (the evaluation crop's pixels: bit-identical inputs) and ``jpeg`` (short side 8/7 of
the input size, re-encoded). Per sample: ``__getitem__`` (interleaved rounds) and the bytes on
disk; per loader: one DataLoader worker over the JPEGs, over a cache read by position
(``cache_order: exact``) and litdata's StreamingDataLoader (``cache_order: stream``), second
epoch from its first batch. Each rate is then set against the model's consumption (as in
benchmark 5: a CMPT training step on ``--device``, or ``--consumption``) and against
``--goal``, the samples/s one GPU consumes (several thousand for ViT-B/16 in bf16), as the
workers each path needs.

    python benchmarks/cache_input.py [--quick] [--consumption SAMPLES_PER_S] [--goal 3000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _timing import interleaved
from input_pipeline import consumption, per_sample, write_food101
from torch.utils.data import DataLoader

from cmpt_lightning.datamodules.cache_writer import write_cache
from cmpt_lightning.datamodules.food101 import Food101DataModule

FULL = {"model": "ViT-B-16", "batch_size": 4, "repeats": 5, "warmup": 1, "images": 256}
QUICK = {"model": "ViT-B-16", "batch_size": 4, "repeats": 3, "warmup": 1, "images": 96}
PATHS = ("JPEG files", "cache, uint8", "cache, jpeg")
#: The image batch of each measured loader's second epoch (its dtype and bytes are reported).
_LOADED: dict[int, torch.Tensor] = {}


def _module(
    root: Path, model: str, cache: Path | None, order: str, batch: int
) -> Food101DataModule:
    options = {"cache": str(cache), "cache_order": order} if cache is not None else {}
    return Food101DataModule(
        root=str(root),
        clip_model=model,
        val_fraction=0.0,
        batch_size=batch,
        num_workers=1,
        pin_memory=False,
        **options,
    )


def _loader_rate(loader: DataLoader) -> float:
    """Samples/s of the loader's second epoch, from its first batch on (records its images).

    The clock starts at the first batch, so that starting the worker (once per run for the
    files' persistent workers, once per epoch for litdata's) is not counted: an epoch of a
    real dataset amortises it.
    """
    for _ in loader:
        pass
    iterator = iter(loader)
    first = next(iterator)
    _LOADED[id(loader)] = first["image"]
    start = time.perf_counter()
    seen = sum(len(batch["id"]) for batch in iterator)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--images", type=int, help="JPEGs to make and read")
    parser.add_argument("--consumption", type=float, help="model samples/s (default: measure)")
    parser.add_argument("--goal", type=float, default=3000.0, help="GPU samples/s to feed")
    parser.add_argument("--loader-batch", type=int, default=16)
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    n, batch = args.images, args.loader_batch
    with tempfile.TemporaryDirectory() as tmp:
        root, caches = Path(tmp) / "food101", Path(tmp) / "caches"
        write_food101(root, n)
        jpeg_kib = statistics.mean(p.stat().st_size for p in root.rglob("*.jpg")) / 1024
        start = {}
        for storage in ("uint8", "jpeg"):
            clock = time.perf_counter()
            write_cache(
                _module(root, args.model, None, "exact", batch),
                str(caches / storage),
                splits=["train"],
                image_storage=storage,
                workers=1,
                verbose=False,
            )
            start[storage] = time.perf_counter() - clock
        kib = {"JPEG files": jpeg_kib}
        for storage in ("uint8", "jpeg"):
            chunks = (caches / storage / "train").glob("*.bin")
            kib[f"cache, {storage}"] = sum(p.stat().st_size for p in chunks) / n / 1024
        modules = {
            "JPEG files": _module(root, args.model, None, "exact", batch),
            "cache, uint8": _module(root, args.model, caches / "uint8", "exact", batch),
            "cache, jpeg": _module(root, args.model, caches / "jpeg", "exact", batch),
        }
        datasets = {}
        for name, dm in modules.items():
            dm.datasets["train"] = datasets[name] = dm.build_split("train")  # no val split
            datasets[name].pretokenize()
        timings = interleaved(
            {name: per_sample(datasets[name].__getitem__, n) for name in PATHS},
            repeats=args.repeats,
            warmup=args.warmup,
        )
        loaders, images = {}, {}
        for name in PATHS:
            loader = modules[name].train_dataloader()
            loaders[name] = _loader_rate(loader)
            images[name] = _LOADED[id(loader)]
        streams = {}
        for storage in ("uint8", "jpeg"):
            dm = _module(root, args.model, caches / storage, "stream", batch)
            dm.datasets["train"] = dm.build_split("train")
            streams[f"cache, {storage}"] = _loader_rate(dm.train_dataloader())
    rate = consumption(args)
    source = "given" if args.consumption else f"CMPT training step, batch {args.batch_size}"
    report = Report(
        title="5b. Input from a litdata cache vs from JPEG files: samples/s per worker",
        what=(
            f"{n} JPEGs 512 x 384 (quality 90) in the Food-101 layout, read with the "
            f"{args.model} preprocessing and tokenizer from the files and from the two caches "
            "of `cmpt data cache` (`uint8`: the evaluation crop's pixels; `jpeg`: short side "
            "8/7 of the input size, quality 90); one core per worker, page cache warm."
        ),
        settings={
            "model": args.model,
            "images": n,
            "rounds": args.repeats,
            "loader batch": batch,
            "model consumption": f"{fmt(rate)} samples/s ({source})",
            "GPU goal": f"{fmt(args.goal)} samples/s",
        },
        columns=[
            "path",
            "KiB per sample",
            "image from the loader",
            "ms per sample",
            "samples/s per worker",
            "x JPEG path",
            "workers for the model",
            "workers for the GPU goal",
        ],
    )

    def row(name: str, label: str, per_worker: float, reference: float) -> None:
        report.rows.append(
            [
                label,
                fmt(kib[name], 3),
                f"{str(images[name].dtype).replace('torch.', '')}, "
                f"{images[name][0].numel() * images[name].element_size() / 1024:.4g} KiB",
                fmt(1000 / per_worker, 3),
                fmt(per_worker, 4),
                fmt(per_worker / reference, 3),
                str(math.ceil(rate / per_worker)),
                str(math.ceil(args.goal / per_worker)),
            ]
        )

    reference = n / timings.median("JPEG files")
    for name in PATHS:
        row(name, f"{name}: __getitem__", n / timings.median(name), reference)
    loader_reference = loaders["JPEG files"]
    for name in PATHS:
        row(name, f"{name}: DataLoader, 1 worker", loaders[name], loader_reference)
    for name, value in streams.items():
        row(name, f"{name}: StreamingDataLoader, 1 worker", value, loader_reference)
    for name in PATHS[1:]:
        ratio = statistics.median(timings.ratios("JPEG files", name))
        report.notes.append(f"{name}: __getitem__ {ratio:.3g}x as fast as the JPEG path")
    report.notes.append(
        "writing each cache (1 writer process, includes reading the JPEGs): "
        + ", ".join(f"{k} {fmt(v, 3)} s" for k, v in start.items())
    )
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
