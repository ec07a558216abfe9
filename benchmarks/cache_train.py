"""Benchmark 5c: end-to-end training throughput from a litdata cache vs from the JPEG files.

Food-101-sized JPEGs (512 x 384, quality 90, as in benchmark 5) in the Food-101 layout, cached
for ``--model`` by ``cmpt data cache`` (``uint8``), then the same training run twice with
``Trainer.fit`` on ``--device`` (bf16-mixed on a GPU): reading the cache (``cache_order:
stream``, litdata's StreamingDataLoader) and reading the JPEG files, each with ``--workers``
DataLoader workers. Throughput is the samples per second of the steps after ``--warmup-steps``,
within the first epoch, beside the model alone on a batch already on the device (the ceiling:
what a loader that costs nothing would give). ``benchmarks/gpu_check.sh`` runs it on a GPU;
``--tiny --device cpu`` checks it on a CPU.

    python benchmarks/cache_train.py --device cuda [--workers 8] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import DEFAULT_OUT, Report, fmt
from _steps import build_model, cmpt_step, make_batch
from _timing import interleaved, synchronizer
from input_pipeline import write_food101
from lightning.pytorch import Callback, Trainer

from cmpt_lightning.datamodules.base import usable_cpus
from cmpt_lightning.datamodules.cache_writer import write_cache
from cmpt_lightning.datamodules.food101 import Food101DataModule
from cmpt_lightning.module import CMPTModule

UNIQUE_IMAGES = 256  # distinct JPEGs; the others are hard links to them (same decode cost)


class StepClock(Callback):
    """Wall time of the training steps after ``warmup`` (device synchronised at both ends)."""

    def __init__(self, warmup: int, sync: object) -> None:
        self.warmup = warmup
        self.sync = sync
        self.start: float | None = None
        self.end: float | None = None
        self.samples = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.sync()
            self.start = time.perf_counter()
        elif trainer.global_step > self.warmup:
            self.samples += len(batch["id"])
            self.sync()
            self.end = time.perf_counter()

    def rate(self) -> float:
        if self.start is None or self.end is None or self.end <= self.start:
            return float("nan")
        return self.samples / (self.end - self.start)


def write_images(root: Path, count: int) -> None:
    """``count`` Food-101 JPEGs: :data:`UNIQUE_IMAGES` made, the rest hard links to them."""
    unique = min(count, UNIQUE_IMAGES)
    write_food101(root, unique)
    table = root / "texts" / "train_titles.csv"
    with table.open(newline="") as f:
        made = list(csv.reader(f))
    rows = list(made)
    for i in range(unique, count):
        name, title, cls = made[i % unique]
        source = root / "images" / "train" / cls / name
        os.link(source, source.with_name(f"{cls}_{i}.jpg"))
        rows.append([f"{cls}_{i}.jpg", title, cls])
    with table.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def fit_rate(dm: Food101DataModule, args: argparse.Namespace) -> float:
    """Samples/s of the timed steps of one ``Trainer.fit`` on ``dm``."""
    gpu = args.device.type == "cuda"
    clock = StepClock(args.warmup_steps, synchronizer(args.device))
    trainer = Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        max_steps=args.warmup_steps + args.steps + 1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    model = CMPTModule(clip=args.model, num_classes=dm.num_classes)
    trainer.fit(model, datamodule=dm)
    return clock.rate()


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: cpus - 1, <= 8)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], help="default: bf16 on a GPU")
    parser.add_argument("--tiny", action="store_true", help="cmpt-tiny, batch 4, 3 steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.batch_size, args.steps, args.warmup_steps = "cmpt-tiny", 4, 3, 1
    args.device = torch.device(args.device)
    if args.precision is None:
        args.precision = "bf16" if args.device.type == "cuda" else "32"
    if args.workers is None:
        args.workers = max(1, min(8, usable_cpus() - 1))
    # the training steps fit in the first epoch: no epoch boundary inside the timed part
    count = args.batch_size * (args.warmup_steps + args.steps + 3)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "food101", Path(tmp) / "cache"
        write_images(root, count)

        def module(**options: object) -> Food101DataModule:
            return Food101DataModule(
                root=str(root),
                clip_model=args.model,
                val_fraction=0.01,
                batch_size=args.batch_size,
                num_workers=args.workers,
                **options,
            )

        start = time.perf_counter()
        write_cache(
            module(), str(cache), splits=["train", "val"], workers=usable_cpus(), verbose=False
        )
        cache_s = time.perf_counter() - start
        rates = {
            "cache (uint8, stream)": fit_rate(module(cache=str(cache)), args),
            "JPEG files": fit_rate(module(), args),
        }
    model = build_model(args.model).to(args.device)
    batch = make_batch(model, args.model, args.batch_size, args.device)
    step = cmpt_step(model, batch, args.precision)
    timings = interleaved({"step": step}, repeats=max(3, args.steps // 3), warmup=2,
                          sync=synchronizer(args.device))  # fmt: skip
    ceiling = args.batch_size / timings.median("step")
    report = Report(
        title="5c. Training throughput end to end: from the cache vs from the JPEG files",
        what=(
            f"Trainer.fit of CMPT ({args.model}, {args.precision}) on {args.device.type}, "
            f"{count} Food-101-sized JPEGs (512 x 384) or their uint8 cache, batch "
            f"{args.batch_size}, {args.workers} DataLoader workers; samples/s of {args.steps} "
            f"steps after {args.warmup_steps}, within the first epoch."
        ),
        settings={
            "model": args.model,
            "precision": args.precision,
            "batch": args.batch_size,
            "workers": args.workers,
            "cpus": usable_cpus(),
            "model alone": f"{fmt(ceiling)} samples/s",
        },
        columns=["input", "samples/s", "x model alone", "x JPEG files", "samples/s per worker"],
    )
    for name, rate in rates.items():
        report.rows.append(
            [
                name,
                fmt(rate, 4),
                fmt(rate / ceiling, 3),
                fmt(rate / rates["JPEG files"], 3),
                fmt(rate / args.workers, 4),
            ]
        )
    report.rows.append(["model alone (batch on the device)", fmt(ceiling, 4), "1", "-", "-"])
    if not math.isnan(rates["JPEG files"]):
        report.notes.append(
            f"the JPEG path needs about {math.ceil(ceiling / (rates['JPEG files'] / args.workers))}"
            " workers to keep up with the model alone, if workers scaled linearly"
        )
    report.notes.append(
        f"writing the uint8 cache with {usable_cpus()} processes: {fmt(cache_s, 3)} s"
    )
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
