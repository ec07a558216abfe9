"""Benchmark 5: prediction that skips the towers of absent inputs (``skip_absent_eval``).

By default evaluation runs both towers on every row and discards the absent ones, so that a
sample's numbers do not depend on which other samples of its batch lack a modality. With
``skip_absent_eval`` each tower encodes only the rows that have its input. This times one
prediction batch (eval mode, no gradients: what ``predict_step`` runs) both ways, with the
text or the image missing from 0%, 50% and 90% of the samples (the protocol's masks), and
checks that the logits agree. Target: at 90% missing, at most 0.8 of the default's time.

    python benchmarks/skip_towers.py [--quick] [--model cmpt-tiny --batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import Batch, autocast, build_model, eval_mode, make_batch
from _timing import interleaved, synchronizer

from cmpt_lightning import CMPTModel, missing_mask

FULL = {"model": "ViT-B-16", "batch_size": 16, "repeats": 5, "warmup": 1}
QUICK = {"model": "ViT-B-32", "batch_size": 16, "repeats": 5, "warmup": 1}
CELLS = (("text", 0.0), ("text", 0.5), ("text", 0.9), ("image", 0.5), ("image", 0.9))
TARGET = 0.8


def predict(model: CMPTModel, batch: Batch, precision: str) -> torch.Tensor:
    """The logits of one prediction batch (the model in eval mode, no gradients)."""
    with eval_mode(model), autocast(batch.images.device, precision)():
        out = model(batch.images, batch.texts, batch.image_present, batch.text_present)
    return out.logits.float()


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--cells", nargs="+", help="TYPE:RATE cells (default: text/image 0.5, 0.9)")
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    cells = CELLS
    if args.cells:
        cells = tuple((t, float(r)) for t, r in (c.split(":") for c in args.cells))
    default = build_model(args.model).to(args.device)
    skipping = build_model(args.model, skip_absent_eval=True).to(args.device)
    skipping.load_state_dict(default.state_dict())
    full = make_batch(default, args.model, args.batch_size, args.device)
    steps, encoded, gaps = {}, {}, {}
    for missing_type, rate in cells:
        image, text = missing_mask(args.batch_size, rate, missing_type, seed=0)
        batch = Batch(
            full.images, full.texts, full.labels, image.to(args.device), text.to(args.device)
        )
        name = f"{missing_type} {rate:g}"
        steps[f"{name} default"] = lambda b=batch: predict(default, b, args.precision)
        steps[f"{name} skip"] = lambda b=batch: predict(skipping, b, args.precision)
        gap = predict(skipping, batch, args.precision) - predict(default, batch, args.precision)
        gaps[name] = float(gap.abs().max())
        encoded[name] = (int(image.sum()), int(text.sum()))
    timings = interleaved(
        steps, repeats=args.repeats, warmup=args.warmup, sync=synchronizer(args.device)
    )
    report = Report(
        title="7. Prediction skipping absent towers (skip_absent_eval) vs both towers on all rows",
        what=(
            "One prediction batch (eval, no gradients); the protocol's masks (missing_mask, "
            "seed 0) remove the text or the image from a share of the samples. Default: both "
            "towers run on every row; skip: each tower runs only on the rows with its input."
        ),
        settings={
            "model": f"{args.model} (random weights)",
            "batch": args.batch_size,
            "precision": args.precision,
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=[
            "missing",
            "images / texts encoded by skip",
            "median default (s)",
            "median skip (s)",
            "skip / default",
            "max |logit difference|",
        ],
    )
    for name, (images, texts) in encoded.items():
        report.rows.append(
            [
                name,
                f"{images}/{args.batch_size} / {texts}/{args.batch_size}",
                fmt(timings.median(f"{name} default"), 4),
                fmt(timings.median(f"{name} skip"), 4),
                fmt(timings.ratio(f"{name} skip", f"{name} default"), 3),
                f"{gaps[name]:.1e}",
            ]
        )
    for missing_type in ("text", "image"):
        name = f"{missing_type} 0.9"
        if f"{name} skip" in steps:
            ratio = timings.ratio(f"{name} skip", f"{name} default")
            report.check(f"skip / default at {missing_type} 90% missing", ratio, TARGET)
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
