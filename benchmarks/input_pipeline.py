"""Benchmark 5: the input pipeline, per worker, against what the model consumes.

Food-101-sized JPEGs (512 x 384, quality 90) made locally in the Food-101 layout, read by the
package's own ``Food101Dataset`` with the CLIP preprocessing and tokenizer of ``--model``. Times,
per sample on one core: JPEG decode, preprocessing, tokenization per sample (of short titles
and of long page texts, the two kinds of Food-101 text) against the cached token ids, and the
whole ``__getitem__`` with and without the token cache; then a DataLoader with one worker. The
model's consumption rate is a CMPT training step on ``--device`` (or ``--consumption``).

    python benchmarks/input_pipeline.py [--quick] [--consumption SAMPLES_PER_S]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import build_model, cmpt_step, food_titles, make_batch
from _timing import interleaved, synchronizer
from PIL import Image
from torch.utils.data import DataLoader

from cmpt_lightning.datasets.food101 import Food101Dataset
from cmpt_lightning.models.clip import build_image_transform, build_tokenizer

FULL = {"model": "ViT-B-16", "batch_size": 4, "repeats": 3, "warmup": 1, "images": 96}
QUICK = {"model": "ViT-B-16", "batch_size": 4, "repeats": 3, "warmup": 1, "images": 48}
CLASSES = ("apple_pie", "caesar_salad", "pad_thai", "ramen")


def write_food101(root: Path, count: int, size: tuple[int, int] = (512, 384)) -> None:
    """``count`` JPEGs (quality 90) of smooth colour fields plus grain, and their titles."""
    rng = np.random.default_rng(0)
    width, height = size
    rows = []
    for i in range(count):
        cls = CLASSES[i % len(CLASSES)]
        folder = root / "images" / "train" / cls
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, size=(height // 32, width // 32, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        grain = rng.normal(0, 12, size=(height, width, 3))
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{cls}_{i}.jpg", quality=90)
        rows.append((f"{cls}_{i}.jpg", food_titles(1, seed=i)[0], cls))
    (root / "images" / "test").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(parents=True, exist_ok=True)
    with (root / "texts" / "train_titles.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def per_sample(fn: Callable[[int], object], count: int) -> Callable[[], None]:
    """A call that runs ``fn`` over samples ``0..count-1``."""

    def run() -> None:
        for i in range(count):
            fn(i)

    return run


def consumption(args: argparse.Namespace) -> float:
    """Training samples per second of CMPT on ``args.device`` (``args.consumption`` if given)."""
    if args.consumption is not None:
        return float(args.consumption)
    model = build_model(args.model).to(args.device)
    step = cmpt_step(model, make_batch(model, args.model, args.batch_size, args.device))
    timings = interleaved({"step": step}, repeats=2, warmup=1, sync=synchronizer(args.device))
    return args.batch_size / timings.median("step")


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--images", type=int, help="JPEGs to make and read")
    parser.add_argument("--consumption", type=float, help="model samples/s (default: measure)")
    parser.add_argument("--loader-batch", type=int, default=16)
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    n = args.images
    transform = build_image_transform(args.model)
    tokenizer = build_tokenizer(args.model)
    size = transform.transforms[0].size  # as CMPTDataModule.image_size reads it
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_food101(root, n)
        jpeg_kb = statistics.mean(p.stat().st_size for p in root.rglob("*.jpg")) / 1024
        data = Food101Dataset(root, "train", transform, tokenizer, (height, width))
        uncached = Food101Dataset(root, "train", transform, tokenizer, (height, width))
        uncached.cache_tokens = False
        titles = [data.load_text(i) or "" for i in range(n)]
        words = " ".join(food_titles(64, seed=1)).split()
        pages = [" ".join(words[(i * 37) % 200 :] + words[: 300 + 10 * i]) for i in range(n)]
        start = time.perf_counter()
        data.pretokenize()
        pretokenize_s = time.perf_counter() - start
        decoded = [data.load_image(i) for i in range(n)]
        stages: dict[str, Callable[[], None]] = {
            "JPEG decode (PIL open + RGB)": per_sample(data.load_image, n),
            "CLIP preprocessing (resize, crop, normalise)": per_sample(
                lambda i: transform(decoded[i]), n
            ),
            "tokenize per sample: title": per_sample(lambda i: tokenizer([titles[i]]), n),
            "tokenize per sample: page text (300+ words)": per_sample(
                lambda i: tokenizer([pages[i]]), n
            ),
            "cached token ids (TokenCache lookup)": per_sample(
                lambda i: data.token_ids(titles[i]), n
            ),
            "__getitem__, tokenizing per sample": per_sample(uncached.__getitem__, n),
            "__getitem__, cached tokens": per_sample(data.__getitem__, n),
        }
        timings = interleaved(stages, repeats=args.repeats, warmup=args.warmup)
        loader = DataLoader(
            data, batch_size=args.loader_batch, num_workers=1, persistent_workers=True
        )
        for _ in loader:  # the first epoch starts the worker
            pass
        start = time.perf_counter()
        for _ in loader:
            pass
        loader_rate = n / (time.perf_counter() - start)
        del loader
    rate = consumption(args)
    source = "given" if args.consumption else f"CMPT training step, batch {args.batch_size}"
    report = Report(
        title="5. Input pipeline: samples/s per worker vs the model's consumption",
        what=(
            f"{n} JPEGs 512 x 384 (quality 90, mean {jpeg_kb:.0f} KiB) read by Food101Dataset "
            f"with the {args.model} preprocessing and tokenizer; one core per worker."
        ),
        settings={
            "model": args.model,
            "images": n,
            "rounds": args.repeats,
            "warm-up": args.warmup,
            "model consumption": f"{fmt(rate)} samples/s ({source})",
        },
        columns=["stage", "ms per sample", "samples/s per worker", "workers to feed the model"],
    )
    for name in stages:
        ms = 1000 * timings.median(name) / n
        per_worker = 1000 / ms
        report.rows.append(
            [name, fmt(ms, 3), fmt(per_worker, 4), str(math.ceil(rate / per_worker))]
        )
    report.rows.append(
        [
            f"DataLoader, 1 worker, batch {args.loader_batch} (2nd epoch)",
            fmt(1000 / loader_rate, 3),
            fmt(loader_rate, 4),
            str(math.ceil(rate / loader_rate)),
        ]
    )
    report.notes.append(
        f"building the token cache once (pretokenize, {n} titles, batched): "
        f"{fmt(1000 * pretokenize_s, 3)} ms in all"
    )
    speedup = timings.median("__getitem__, tokenizing per sample") / timings.median(
        "__getitem__, cached tokens"
    )
    report.notes.append(
        f"__getitem__ with cached tokens is {speedup:.3f}x as fast as per-sample tokenization"
    )
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
