"""Benchmark 3: missing modalities save compute.

CMPT's training step at missing rates 0 to 0.9, type ``both`` (half the missing samples lose
the image, half the text), against rate 0, on one batch. In training a tower runs only on the
samples that have its input, so the step should get cheaper as the rate grows. Target: the
step at rate 0.7 clearly lower than at rate 0 (here: at most 0.9 of it).

    python benchmarks/missing_rates.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import build_model, cmpt_step, make_batch
from _timing import interleaved, synchronizer

from cmpt_lightning import missing_mask

FULL = {"model": "ViT-B-16", "batch_size": 10, "repeats": 3, "warmup": 1}
QUICK = {"model": "ViT-B-32", "batch_size": 10, "repeats": 3, "warmup": 1}
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TARGET = 0.9  # "clearly lower": at least 10% cheaper at rate 0.7


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    rates = sorted(set(args.rates) | {0.0})
    model = build_model(args.model).to(args.device)
    full = make_batch(model, args.model, args.batch_size, args.device)
    steps, rows = {}, {}
    for rate in rates:
        image, text = missing_mask(args.batch_size, rate, "both", seed=0)
        batch = replace(
            full, image_present=image.to(args.device), text_present=text.to(args.device)
        )
        steps[f"{rate:g}"] = cmpt_step(model, batch, args.precision)
        rows[f"{rate:g}"] = (int(image.sum()), int(text.sum()))
    timings = interleaved(
        steps, repeats=args.repeats, warmup=args.warmup, sync=synchronizer(args.device)
    )
    report = Report(
        title="3. Step time over missing rates (type both) vs rate 0",
        what=(
            "One batch; the protocol's masks (missing_mask, seed 0) at each rate; each tower "
            "runs only on the rows that have its input."
        ),
        settings={
            "model": f"{args.model} (random weights)",
            "batch": args.batch_size,
            "precision": args.precision,
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=[
            "missing rate",
            "images encoded",
            "texts encoded",
            "median step (s)",
            "ratio to rate 0",
        ],
    )
    for name in steps:
        images, texts = rows[name]
        report.rows.append(
            [
                name,
                f"{images}/{args.batch_size}",
                f"{texts}/{args.batch_size}",
                fmt(timings.median(name), 4),
                fmt(timings.ratio(name, "0"), 3),
            ]
        )
    if "0.7" in steps:
        report.check("step at rate 0.7 / rate 0", timings.ratio("0.7", "0"), TARGET)
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
