"""Benchmark 1: what the proxy tokens cost in a training step.

CMPT's training step against the same LoRA-adapted towers run as plain open_clip with late
(gated) fusion and no proxies, at full modality, on the same batch. Target: at most 1.05.

    python benchmarks/proxy_overhead.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import build_model, cmpt_step, late_fusion_step, make_batch
from _timing import interleaved, synchronizer

FULL = {"model": "ViT-B-16", "batch_size": 4, "repeats": 7, "warmup": 2}
QUICK = {"model": "ViT-B-32", "batch_size": 4, "repeats": 5, "warmup": 1}
TARGET = 1.05


def profile_table(step: object, rows: int = 12) -> str:
    """The ops that dominate one call of ``step``, by self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()  # type: ignore[operator]
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--profile", action="store_true", help="print the top ops of each step")
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    model = build_model(args.model).to(args.device)
    batch = make_batch(model, args.model, args.batch_size, args.device)
    steps = {
        "cmpt": cmpt_step(model, batch, args.precision),
        "late fusion, no proxies": late_fusion_step(model, batch, args.precision),
    }
    timings = interleaved(
        steps, repeats=args.repeats, warmup=args.warmup, sync=synchronizer(args.device)
    )
    ratio = timings.ratio("cmpt", "late fusion, no proxies")
    report = Report(
        title="1. Proxy overhead: CMPT training step vs the same towers without proxies",
        what=(
            "Full modality; the baseline runs the same LoRA-adapted open_clip towers "
            "(encode_image / encode_text), the same gated head, cross-entropy and AdamW."
        ),
        settings={
            "model": f"{args.model} (random weights)",
            "batch": args.batch_size,
            "precision": args.precision,
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=[
            "variant",
            "median step (s)",
            "min (s)",
            "max (s)",
            "samples/s",
            "ratio to baseline",
        ],
    )
    for name in steps:
        low, high = timings.spread(name)
        median = timings.median(name)
        report.rows.append(
            [
                name,
                fmt(median, 4),
                fmt(low, 4),
                fmt(high, 4),
                fmt(args.batch_size / median),
                fmt(timings.ratio(name, "late fusion, no proxies"), 4),
            ]
        )
    per_round = ", ".join(f"{r:.3f}" for r in timings.ratios("cmpt", "late fusion, no proxies"))
    report.notes.append(f"per-round ratios: {per_round}")
    report.check("proxy overhead ratio (median of per-round ratios)", ratio, TARGET)
    report.emit(args)
    if args.profile:
        for name, step in steps.items():
            print(f"\n--- {name}: top ops by self CPU time ---")
            print(profile_table(step))
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
