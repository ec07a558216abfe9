"""Benchmark 6: peak memory of a training step, with and without gradient checkpointing, and
the size of a checkpoint of the trainable weights.

Peak memory of one CMPT training step above what is held before it (weights, optimizer state):

- on a GPU, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the tensors
  PyTorch's allocator handed out;
- on the CPU, the process's resident-set high-water mark (``VmHWM``, reset through
  ``/proc/self/clear_refs``) above the resident set before the step, with glibc's mmap threshold
  fixed at 128 KiB (``mallopt``) so that freed tensors go back to the system instead of staying
  in the heap. Linux only. It counts every allocation of the process, so it is an upper bound
  of the tensors' own peak.

Checkpoint size: ``torch.save`` of ``CMPTModel.trainable_state_dict()`` (what the Lightning
checkpoints keep, besides hyper-parameters and optimizer state) against the full state dict.

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import build_model, cmpt_step, make_batch

FULL = {"model": "ViT-B-16", "batch_size": 8, "repeats": 3, "warmup": 1, "ckpt_model": "ViT-B-16"}
QUICK = {"model": "ViT-B-32", "batch_size": 8, "repeats": 3, "warmup": 1, "ckpt_model": "ViT-B-16"}
MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    msg = f"/proc/self/status has no {field}"
    raise RuntimeError(msg)


def fix_malloc() -> bool:
    """Make glibc return freed blocks of 128 KiB and more to the system (False if not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 128 * 1024)) and bool(
        libc.mallopt(m_trim_threshold, 128 * 1024)
    )


def peak_bytes(step: Callable[[], None], device: torch.device) -> tuple[int, float]:
    """Bytes of memory one call of ``step`` needs above what is held before it, and its seconds."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        return torch.cuda.max_memory_allocated(device) - before, seconds
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    return (_status_kib("VmHWM") - before) * 1024, seconds


def checkpoint_sizes(name: str) -> tuple[int, int, int]:
    """(trainable parameters, bytes of their saved state dict, bytes of the full state dict)."""
    model = build_model(name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = []
    for state in (model.trainable_state_dict(), model.state_dict()):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        sizes.append(buffer.getbuffer().nbytes)
    return trainable, sizes[0], sizes[1]


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--ckpt-model", help="architecture of the checkpoint-size measurement")
    parser.add_argument(
        "--keep-malloc",
        action="store_true",
        help="leave glibc's allocator as it is (freed memory stays in the heap: peaks understate)",
    )
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    if args.device.type == "cpu":
        malloc_fixed = not args.keep_malloc and fix_malloc()
        method = "CPU: VmHWM - VmRSS before the step (clear_refs), " + (
            "glibc mmap threshold 128 KiB" if malloc_fixed else "default allocator"
        )
    else:
        method = "GPU: torch.cuda.max_memory_allocated - memory_allocated before the step"
    model = build_model(args.model).to(args.device)
    batch = make_batch(model, args.model, args.batch_size, args.device)
    step = cmpt_step(model, batch, args.precision)

    def with_checkpointing(enabled: bool) -> Callable[[], None]:
        def run() -> None:
            model.clip.set_grad_checkpointing(enabled)  # type: ignore[operator]
            step()

        return run

    variants = {
        "no checkpointing": with_checkpointing(False),
        "grad checkpointing": with_checkpointing(True),
    }
    for _ in range(args.warmup):
        for run in variants.values():
            run()
    peaks: dict[str, list[int]] = {name: [] for name in variants}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.repeats):
        names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in names:
            peak, took = peak_bytes(variants[name], args.device)
            peaks[name].append(peak)
            seconds[name].append(took)
    model.clip.set_grad_checkpointing(False)  # type: ignore[operator]
    report = Report(
        title="6. Memory: peak of a training step with and without gradient checkpointing",
        what=f"Measured as: {method}. Median over rounds.",
        settings={
            "model": f"{args.model} (random weights)",
            "batch": args.batch_size,
            "precision": args.precision,
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=["variant", "peak above baseline (MiB)", "min (MiB)", "max (MiB)", "step time (s)"],
    )
    reference = statistics.median(peaks["no checkpointing"])
    for name in variants:
        values = peaks[name]
        report.rows.append(
            [
                name,
                fmt(statistics.median(values) / MIB, 4),
                fmt(min(values) / MIB, 4),
                fmt(max(values) / MIB, 4),
                fmt(statistics.median(seconds[name]), 4),
            ]
        )
    saved = (
        statistics.median(peaks["grad checkpointing"]) / reference if reference else float("nan")
    )
    report.notes.append(f"grad checkpointing peak / no checkpointing peak: {saved:.3f}")
    if args.device.type == "cpu":
        report.notes.append(
            "CPU step times here are slower than in benchmarks 1-3: with the fixed mmap "
            "threshold every large tensor is a fresh mapping (page faults); use those for speed"
        )
    trainable, small, full = checkpoint_sizes(args.ckpt_model)
    report.notes.append(
        f"checkpoint of the trainable weights of {args.ckpt_model}: {trainable} parameters, "
        f"{fmt(small / MIB, 3)} MiB saved ({small} bytes), against {fmt(full / MIB, 4)} MiB "
        f"for the full state dict ({small / full:.2%}); AdamW state adds 2 x 4 bytes per "
        f"trainable parameter ({fmt(8 * trainable / MIB, 3)} MiB) when the trainer saves it"
    )
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
