"""The GPU check of issue 6: throughput, memory, the two ratios and the FLOP utilisation.

Builds ``--model`` (ViT-B-16) with random weights on ``--device`` and prints, section by
section (each is flushed as soon as it is measured, so a time-out keeps what was done):

1. training throughput (samples/s) with bf16 autocast at each ``--batch-sizes`` (64 and 128),
   and the peak memory of those steps (``torch.cuda.max_memory_allocated``);
2. the proxy-overhead ratio (benchmark 1) at the first batch size;
3. the one-pass sweep ratio (benchmark 4) on ``--sweep-samples`` test samples;
4. model FLOP utilisation: FLOPs of one training step counted by
   ``torch.utils.flop_counter.FlopCounterMode``, divided by the median step time and the card's
   dense bf16 peak (H100/H200 SXM 989, H100 PCIe 756, A100 312 TFLOP/s; override with
   ``CMPT_PEAK_TFLOPS``);
5. if time is left (half of ``--budget``): peak memory with and without gradient
   checkpointing, then ``compile_towers`` (compile time and compiled / eager step time).

Appends everything to BENCHMARKS.md (``--out``). ``benchmarks/gpu_check.sh`` runs it with the
limits of a lent GPU session; ``--device cpu --model cmpt-tiny --tiny`` checks it on a CPU.

    python benchmarks/gpu_check.py [--device cuda] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import DEFAULT_OUT, Report, fmt
from _steps import build_model, cmpt_step, late_fusion_step, make_batch
from _timing import interleaved, synchronizer
from memory import peak_bytes
from onepass_sweep import passes
from torch.utils.flop_counter import FlopCounterMode

#: Dense bf16 peak TFLOP/s by a substring of the device name, most specific first.
PEAKS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))
GIB = 2**30


def peak_tflops(device: torch.device) -> float | None:
    """The card's dense bf16 peak in TFLOP/s (``CMPT_PEAK_TFLOPS`` wins), None if unknown."""
    override = os.environ.get("CMPT_PEAK_TFLOPS")
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAKS if key in name), None)


def step_flops(step: object) -> int:
    """FLOPs of one call of ``step`` (matmuls, convolutions, attention) by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()  # type: ignore[operator]
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16", choices=["32", "bf16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sweep-samples", type=int, default=4096)
    parser.add_argument("--budget", type=float, default=400.0, help="seconds; skip optional parts")
    parser.add_argument("--tiny", action="store_true", help="a few steps: check that it runs")
    parser.add_argument("--no-compile", action="store_true", help="skip compile_towers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.warmup, args.sweep_samples, args.no_compile = 2, 1, 16, True
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = args.device = torch.device(args.device)
    sync = synchronizer(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(args.model).to(device)
    peak = peak_tflops(device)
    report = Report(
        title=f"GPU check: {args.model} (random weights), {args.precision}",
        what="benchmarks/gpu_check.py: throughput, memory, ratios and FLOP utilisation.",
        settings={
            "timed steps": args.steps,
            "warm-up": args.warmup,
            "sweep samples": args.sweep_samples,
            "peak TFLOP/s": "unknown" if peak is None else f"{peak:g}",
        },
        columns=["measurement", "value"],
    )

    def say(name: str, value: str) -> None:
        report.rows.append([name, value])
        print(f"{name}: {value}", flush=True)

    try:
        step_seconds: dict[int, float] = {}
        for size in args.batch_sizes:
            batch = make_batch(model, args.model, size, device)
            step = cmpt_step(model, batch, args.precision)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            timings = interleaved({"step": step}, repeats=args.steps, warmup=args.warmup, sync=sync)
            step_seconds[size] = timings.median("step")
            say(
                f"training throughput, batch {size}",
                f"{fmt(size / step_seconds[size], 4)} samples/s",
            )
            say(f"median step, batch {size}", f"{fmt(step_seconds[size] * 1000, 4)} ms")
            if device.type == "cuda":
                peak_mem = torch.cuda.max_memory_allocated(device) / GIB
                say(f"peak GPU memory allocated, batch {size}", f"{fmt(peak_mem, 4)} GiB")
            del batch, step

        size = args.batch_sizes[0]
        batch = make_batch(model, args.model, size, device)
        flops = step_flops(cmpt_step(model, batch, args.precision))
        achieved = flops / step_seconds[size] / 1e12
        say(
            f"FLOPs per training step, batch {size} (FlopCounterMode)",
            f"{fmt(flops / 1e12, 4)} TFLOP",
        )
        say(f"achieved, batch {size}", f"{fmt(achieved, 4)} TFLOP/s")
        if peak is not None:
            say(
                f"model FLOP utilisation, batch {size}",
                f"{achieved / peak:.1%} of {peak:g} TFLOP/s",
            )

        steps = {
            "cmpt": cmpt_step(model, batch, args.precision),
            "late fusion": late_fusion_step(model, batch, args.precision),
        }
        timings = interleaved(steps, repeats=args.steps, warmup=args.warmup, sync=sync)
        say(f"proxy-overhead ratio, batch {size}", f"{timings.ratio('cmpt', 'late fusion'):.4f}")
        report.check("proxy overhead ratio", timings.ratio("cmpt", "late fusion"), 1.05)

        sweep_args = argparse.Namespace(
            samples=args.sweep_samples,
            batch_size=max(args.batch_sizes),
            device=device,
            precision=args.precision,
            model=args.model,
        )
        variants = passes(model, sweep_args)
        plain, sweep = list(variants)
        timings = interleaved(variants, repeats=3, warmup=1, sync=sync)
        say(f"plain test pass, {args.sweep_samples} samples", f"{fmt(timings.median(plain), 4)} s")
        say(
            "one-pass sweep ratio (11 x 3 cells / plain pass)", f"{timings.ratio(sweep, plain):.4f}"
        )
        report.check("one-pass sweep ratio", timings.ratio(sweep, plain), 1.3)

        if time.perf_counter() - started < args.budget / 2:
            big = make_batch(model, args.model, max(args.batch_sizes), device)
            big_step = cmpt_step(model, big, args.precision)
            for enabled in (False, True):
                model.clip.set_grad_checkpointing(enabled)  # type: ignore[operator]
                big_step()
                peaks = [peak_bytes(big_step, device) for _ in range(2)]
                mem = statistics.median(p[0] for p in peaks) / GIB
                took = statistics.median(p[1] for p in peaks)
                label = "with" if enabled else "without"
                say(
                    f"step peak above weights, batch {max(args.batch_sizes)}, {label} grad "
                    "checkpointing",
                    f"{fmt(mem, 4)} GiB, {fmt(took * 1000, 4)} ms",
                )
            model.clip.set_grad_checkpointing(False)  # type: ignore[operator]
            del big, big_step
        if args.no_compile:
            report.notes.append("compile_towers not measured (--no-compile)")
        elif time.perf_counter() - started < args.budget / 2:
            compiled = build_model(args.model, compile_towers=True).to(device)
            step = cmpt_step(compiled, batch, args.precision)
            start = time.perf_counter()
            step()
            sync()
            say(
                f"compile_towers: first step (compiles), batch {size}",
                f"{fmt(time.perf_counter() - start, 3)} s",
            )
            pair = {"compiled": step, "eager": cmpt_step(model, batch, args.precision)}
            timings = interleaved(pair, repeats=args.steps, warmup=args.warmup, sync=sync)
            say(
                f"compile_towers: compiled / eager step, batch {size}",
                f"{timings.ratio('compiled', 'eager'):.4f}",
            )
        else:
            report.notes.append("compile_towers not measured: past half of the time budget")
    except KeyboardInterrupt:  # gpu_check.sh's time limit: keep what was measured
        report.notes.append("interrupted by the time limit; the rows above were measured")
    report.notes.append(f"total time of the check: {fmt(time.perf_counter() - started, 3)} s")
    if args.no_write:
        report.print()
    else:
        report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
