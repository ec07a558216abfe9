"""Benchmark 2: CMPT's training step against the towers' own forward and backward.

The floor is the two LoRA-adapted open_clip towers run forward and backward (no proxies, no head,
no loss beyond a sum, no optimizer): what any implementation of the method has to compute.
Everything CMPT adds (proxy tokens and mask, proxy maps, fusion, classifier, both losses, the
AdamW step) is the difference. Target: at most 1.10.

    python benchmarks/towers_floor.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import autocast, build_model, cmpt_step, make_batch, towers_step
from _timing import interleaved, synchronizer

FULL = {"model": "ViT-B-16", "batch_size": 4, "repeats": 7, "warmup": 2}
QUICK = {"model": "ViT-B-32", "batch_size": 4, "repeats": 5, "warmup": 1}
TARGET = 1.10
FLOOR = "towers fwd+bwd (floor)"


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    model = build_model(args.model).to(args.device)
    batch = make_batch(model, args.model, args.batch_size, args.device)
    clip = model.clip
    cast = autocast(args.device, args.precision)

    def one_tower(encode: str, inputs: torch.Tensor) -> None:
        clip.zero_grad(set_to_none=True)
        with cast():
            total = getattr(clip, encode)(inputs).float().sum()
        total.backward()

    steps = {
        "cmpt training step": cmpt_step(model, batch, args.precision),
        FLOOR: towers_step(model, batch, args.precision),
        "  image tower fwd+bwd": lambda: one_tower("encode_image", batch.images),
        "  text tower fwd+bwd": lambda: one_tower("encode_text", batch.texts),
    }
    timings = interleaved(
        steps, repeats=args.repeats, warmup=args.warmup, sync=synchronizer(args.device)
    )
    report = Report(
        title="2. Towers vs everything: CMPT training step vs the towers' own forward+backward",
        what=(
            "The floor: both LoRA-adapted open_clip towers forward and backward, nothing else "
            "(the two single-tower rows split it)."
        ),
        settings={
            "model": f"{args.model} (random weights)",
            "batch": args.batch_size,
            "precision": args.precision,
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=["variant", "median (s)", "min (s)", "max (s)", "ratio to floor"],
    )
    for name in steps:
        low, high = timings.spread(name)
        report.rows.append(
            [
                name.strip(),
                fmt(timings.median(name), 4),
                fmt(low, 4),
                fmt(high, 4),
                fmt(timings.ratio(name, FLOOR), 4),
            ]
        )
    pairs = zip(timings.seconds["cmpt training step"], timings.seconds[FLOOR], strict=True)
    overhead = statistics.median(a - b for a, b in pairs)
    report.notes.append(
        f"everything besides the towers: {fmt(overhead, 3)} s per step (median of per-round "
        "differences; noise is of the same order on a shared CPU)"
    )
    report.check("CMPT step / towers floor", timings.ratio("cmpt training step", FLOOR), TARGET)
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
