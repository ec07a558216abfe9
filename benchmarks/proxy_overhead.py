"""Benchmark 1: what the proxy tokens cost in a training step.

CMPT's training step against the same LoRA-adapted towers without proxies, at full modality, on
the same batch: ``zero_fill`` (the same ``CMPTModel`` code path with ``method="zero_fill"``,
sharing the towers and their adapters) and late fusion (open_clip's own ``encode_image`` /
``encode_text``, the gated head). Timed in thread CPU time (``time.thread_time``, one torch
thread, so all the work runs in the timed thread), in interleaved rounds; the ratio is the
median of the per-round ratios, with its interquartile range. Also counts the aten ops one
training step dispatches (forward, backward and optimizer step), the launch count a GPU would
see. Target: at most 1.03 against ``zero_fill``.

    python benchmarks/proxy_overhead.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import build_model, cmpt_step, late_fusion_step, make_batch
from _timing import interleaved, synchronizer
from torch.utils._python_dispatch import TorchDispatchMode

FULL = {"model": "ViT-B-16", "batch_size": 4, "repeats": 15, "warmup": 2}
QUICK = {"model": "ViT-B-32", "batch_size": 4, "repeats": 11, "warmup": 1}
TARGET = 1.03
BASELINE = "zero_fill (same towers, no proxies)"


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(step: Callable[[], None]) -> Counter[str]:
    """The aten ops (by name) one call of ``step`` dispatches."""
    with _OpCounter() as counter:
        step()
    return counter.ops


def quartiles(values: list[float]) -> tuple[float, float]:
    """(first, third) quartile of ``values`` (the inclusive method; the value itself if one)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


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
    # the same towers (the same seed gives the same weights and adapters), run without proxies
    # through the same CMPTModel code; a copy, so that building it leaves ``model`` as it is
    zero_fill = build_model(args.model, method="zero_fill").to(args.device)
    batch = make_batch(model, args.model, args.batch_size, args.device)
    steps = {
        "cmpt": cmpt_step(model, batch, args.precision),
        BASELINE: cmpt_step(zero_fill, batch, args.precision),
        "late fusion (encode_image / encode_text)": late_fusion_step(model, batch, args.precision),
    }
    on_cpu = args.device.type == "cpu"
    clock = time.thread_time if on_cpu else time.perf_counter
    timings = interleaved(
        steps,
        repeats=args.repeats,
        warmup=args.warmup,
        sync=synchronizer(args.device),
        clock=clock,
    )
    ops = {name: sum(count_ops(step).values()) for name, step in steps.items()}
    ratio = timings.ratio("cmpt", BASELINE)
    report = Report(
        title="1. Proxy overhead: CMPT training step vs the same towers without proxies",
        what=(
            "Full modality; the baselines run the same LoRA-adapted open_clip towers without "
            "proxies: zero_fill (CMPTModel's own path) and late fusion (encode_image / "
            "encode_text); the same gated head, the CMPT loss (cross-entropy for late fusion) "
            "and AdamW. "
            + (
                "Thread CPU time (time.thread_time, 1 torch thread), interleaved rounds."
                if on_cpu
                else "Wall time between device synchronisations, interleaved rounds."
            )
        ),
        settings={
            "model": f"{args.model} (random weights)",
            "batch": args.batch_size,
            "precision": args.precision,
            "clock": "thread_time" if on_cpu else "perf_counter",
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=[
            "variant",
            "median step (s)",
            "IQR (s)",
            "samples/s",
            "ratio to zero_fill (median)",
            "ratio IQR",
            "aten ops / step",
        ],
    )
    for name in steps:
        low, high = quartiles(timings.seconds[name])
        ratios = timings.ratios(name, BASELINE)
        r_low, r_high = quartiles(ratios)
        median = timings.median(name)
        report.rows.append(
            [
                name,
                fmt(median, 4),
                f"{fmt(low, 4)}-{fmt(high, 4)}",
                fmt(args.batch_size / median),
                fmt(statistics.median(ratios), 4),
                f"{fmt(r_low, 4)}-{fmt(r_high, 4)}",
                str(ops[name]),
            ]
        )
    per_round = ", ".join(f"{r:.3f}" for r in timings.ratios("cmpt", BASELINE))
    report.notes.append(f"per-round ratios (cmpt / zero_fill): {per_round}")
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
