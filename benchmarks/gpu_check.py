"""The GPU check of issue 21: CMPT training throughput, FLOP utilisation and where the time goes.

One command with a hard time budget (``--budget`` seconds, 270 by default: the core part of
``benchmarks/gpu_check.sh``). In this order, until the budget is spent:

1. the card's bf16 matrix rate, measured: an 8192 x 8192 x 8192 bf16 GEMM on random data
   (10 timed after 3 warm-ups), the peak the FLOP utilisation is set against, beside the
   datasheet figure (989.4 TFLOP/s dense bf16 for H100/H200 SXM);
2. the input path of issue 21: a pinned uint8 batch copied on the data module's side stream and
   normalised on the device, checked bit-identical to the CPU's normalisation, and timed;
3. CMPT's training step (``benchmarks/_steps.cmpt_step``: both towers with proxies, head, CMPT
   loss with alignment, backward, AdamW) for each configuration of precision (bf16 autocast
   with bf16 frozen weights, fp32 with TF32 matmuls) x batch (256, 512) x towers (eager,
   ``compile_towers``), bf16 first. Each: ``--steps`` steps timed between two CUDA events, no
   synchronisation between steps; peak memory; host synchronisations per step
   (``torch.cuda.set_sync_debug_mode``); the attention kernels that ran (from the profiler's op
   names: flash, efficient, cudnn, math); FLOPs of one step counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and the SDPA kernels,
   attention shown apart); samples/s and the model FLOP utilisation against both peaks. A
   configuration that would not end before the deadline (estimated from those before it) is
   skipped and listed, and the table is written all the same (also on Ctrl-C / SIGINT);
4. a ``torch.profiler`` table of the top kernels of the first bf16 eager and compiled steps.

Prints markdown ready to paste into BENCHMARKS.md and writes it to ``--out-dir`` (``$OUT`` by
default on the device machine): ``gpu_check.md`` (the tables) and ``gpu_kernels.md`` (the
profiler table of every configuration profiled).

    python benchmarks/gpu_check.py                 # on a GPU: ViT-B-16, the whole check
    python benchmarks/gpu_check.py --cpu           # every code path at tiny size on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import math
import os
import platform
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import cpu_model, git_commit
from _steps import build_model, cmpt_step, make_batch, store_frozen
from torch.utils.flop_counter import FlopCounterMode

#: Dense bf16 datasheet peaks in TFLOP/s by a substring of the device name, most specific first.
DATASHEET = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))
#: Profiler op names -> the attention backend they belong to (first match wins).
BACKENDS = (
    ("flash", "flash"),
    ("efficient", "efficient"),
    ("cudnn_attention", "cudnn"),
    ("flex_attention", "flex"),
    ("attention_math", "math"),
)
GIB = 2**30
COLUMNS = [
    "precision",
    "batch",
    "towers",
    "step ms",
    "samples/s",
    "GFLOP/sample",
    "attention GFLOP/sample",
    "TFLOP/s",
    "MFU vs measured GEMM",
    "MFU vs datasheet",
    "peak GiB",
    "syncs/step",
    "attention kernels",
    "compile s",
    "frozen weights",
]


@dataclass
class Config:
    """One measured configuration."""

    precision: str
    batch: int
    mode: str
    row: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time it took, compile included


class Clock:
    """Times ``n`` calls: CUDA events around all of them (no sync between), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        """Wait for the device's queued work."""
        if self.cuda:
            torch.cuda.synchronize()

    def per_call(self, fn: Callable[[], object], n: int) -> float:
        """Seconds per call of ``fn`` over ``n`` back-to-back calls."""
        self.sync()
        if not self.cuda:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - start) / n
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000 / n


def datasheet_peak(device: torch.device) -> float | None:
    """The card's dense bf16 datasheet TFLOP/s (``CMPT_PEAK_TFLOPS`` wins), None if unknown."""
    override = os.environ.get("CMPT_PEAK_TFLOPS")
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DATASHEET if key in name), None)


def gemm_peak(device: torch.device, size: int, clock: Clock) -> float:
    """TFLOP/s of a ``size``^3 GEMM on random data (bf16 on a GPU, fp32 on the CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    seconds = clock.per_call(lambda: a @ b, 10)
    return 2 * size**3 / seconds / 1e12


def input_path(model_name: str, batch: int, device: torch.device, clock: Clock) -> list[str]:
    """The uint8 input path on ``device``: side-stream copy, device normalisation, exactness."""
    from cmpt_lightning.datamodules.synthetic import SyntheticDataModule
    from cmpt_lightning.datasets.images import (
        defer_normalization,
        image_normalization,
        normalize_pixels,
    )

    dm = SyntheticDataModule(clip_model=model_name)
    norm = image_normalization(defer_normalization(dm.image_transform()))
    assert norm is not None, "the model's transform has no ToTensor + Normalize"
    height, width = dm.image_size()
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=gen)
    present = torch.rand(batch, generator=gen) > 0.1
    cuda = device.type == "cuda"
    host = {"image": pixels.pin_memory() if cuda else pixels, "image_present": present}
    floats = normalize_pixels(pixels, norm.mean, norm.std, present)
    host_float = floats.pin_memory() if cuda else floats

    def uint8_path() -> torch.Tensor:
        moved = dm.transfer_batch_to_device(dict(host), device, 0)
        return dm.normalize_images(moved)["image"]

    result = uint8_path()
    exact = torch.equal(result.cpu(), floats)
    uint8_ms = clock.per_call(uint8_path, 10) * 1000
    float_ms = clock.per_call(lambda: host_float.to(device, non_blocking=True), 10) * 1000
    mib = pixels.numel() / 2**20
    return [
        f"input path, batch {batch}: uint8 copy (side stream) + device normalisation "
        f"{uint8_ms:.3g} ms ({mib:.3g} MiB), float32 copy {float_ms:.3g} ms ({4 * mib:.3g} MiB); "
        f"bit-identical to the CPU's ToTensor + Normalize: {exact}"
    ]


def attention_backends(names: Counter[str], steps: int) -> str:
    """``flash x24, math x12``: the SDPA backends among the profiled op names, per step."""
    found: Counter[str] = Counter()
    for name, count in names.items():
        if not name.startswith("aten::_") or "backward" in name:
            continue
        if "attention" not in name and "flash" not in name:
            continue
        backend = next((b for key, b in BACKENDS if key in name), "other")
        found[backend] += count
    if not found and names.get("aten::_softmax"):
        found["math"] = names["aten::_softmax"]
    if not found:
        return "none seen"
    return ", ".join(f"{b} x{max(1, round(c / steps))}" for b, c in found.most_common())


def profile(step: Callable[[], None], device: torch.device, steps: int) -> tuple[str, Counter[str]]:
    """A markdown table of the top 15 kernels (ops on the CPU) of ``steps`` steps, and op names."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    names: Counter[str] = Counter()
    for event in events:
        names[event.key] += int(event.count)

    def device_time(event: Any) -> float:
        if device.type == "cuda":
            value = getattr(event, "self_device_time_total", None)
            if value is None:
                value = getattr(event, "self_cuda_time_total", 0.0)
            return float(value)
        return float(event.self_cpu_time_total)

    kernels = [e for e in events if device_time(e) > 0]
    if device.type == "cuda":  # device kernels only: the CPU-side aten ops have no self time
        kernels = [e for e in kernels if not e.key.startswith("aten::")]
    kernels.sort(key=device_time, reverse=True)
    total = sum(device_time(e) for e in kernels) or 1.0
    lines = [
        "| kernel | calls/step | ms/step | share |",
        "| --- | --- | --- | --- |",
    ]
    for event in kernels[:15]:
        name = event.key.replace("|", "/")
        name = name if len(name) <= 90 else name[:87] + "..."
        lines.append(
            f"| `{name}` | {event.count / steps:.3g} | {device_time(event) / 1000 / steps:.3g} | "
            f"{device_time(event) / total:.1%} |"
        )
    return "\n".join(lines), names


def count_syncs(step: Callable[[], None], device: torch.device) -> str:
    """Host synchronisations in one step (CUDA's sync debug mode warnings), '-' on the CPU."""
    if device.type != "cuda":
        return "-"
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return str(sum("synchroniz" in str(w.message) for w in caught))


def _cpu_attention_flops() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU's flash attention, which FlopCounterMode does not know."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is None or backward is None:
        return {}

    def fwd(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return int(flop_counter.sdpa_flop_count(query, key, value))

    def bwd(grad: Any, query: Any, key: Any, value: Any, *args: Any, **kw: Any) -> int:
        return int(flop_counter.sdpa_backward_flop_count(grad, query, key, value))

    return {forward: fwd, backward: bwd}


def count_flops(step: Callable[[], None]) -> tuple[int, int]:
    """(total, attention) FLOPs of one call of ``step`` by FlopCounterMode."""
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with counter:
        step()
    total = int(counter.get_total_flops())
    per_op = counter.get_flop_counts().get("Global", {})
    attention = sum(int(v) for k, v in per_op.items() if "attention" in str(k))
    return total, attention


def measure(
    config: Config,
    models: dict[str, Any],
    args: argparse.Namespace,
    peaks: tuple[float, float | None],
    clock: Clock,
    profiles: dict[str, str],
    flops_cache: dict[tuple[str, int], tuple[int, int]],
) -> None:
    """Fill ``config.row`` (see :data:`COLUMNS`) for one configuration."""
    device = args.device
    started = time.perf_counter()
    model = models[config.mode]
    frozen = store_frozen(model, config.precision)
    batch = make_batch(model, args.model, config.batch, device)
    step = cmpt_step(model, batch, config.precision)
    first = time.perf_counter()
    step()
    clock.sync()
    compile_s = time.perf_counter() - first if config.mode == "compiled" else None
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = clock.per_call(step, args.steps)
    peak_gib = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    syncs = count_syncs(step, device)
    key = f"{config.precision}, batch {config.batch}, {config.mode}"
    table, names = profile(step, device, args.profile_steps)
    profiles[key] = table
    flops_key = (config.precision, config.batch)
    if flops_key not in flops_cache:  # the same arithmetic, eager or compiled
        eager_step = cmpt_step(models["eager"], batch, config.precision)
        store_frozen(models["eager"], config.precision)
        flops_cache[flops_key] = count_flops(eager_step)
    total, attention = flops_cache[flops_key]
    measured, datasheet = peaks
    achieved = total / seconds / 1e12
    config.row = {
        "precision": "bf16" if config.precision == "bf16" else "fp32 (tf32)",
        "batch": str(config.batch),
        "towers": config.mode,
        "step ms": f"{seconds * 1000:.4g}",
        "samples/s": f"{config.batch / seconds:.4g}",
        "GFLOP/sample": f"{total / config.batch / 1e9:.4g}",
        "attention GFLOP/sample": f"{attention / config.batch / 1e9:.3g}",
        "TFLOP/s": f"{achieved:.4g}",
        "MFU vs measured GEMM": f"{achieved / measured:.1%}",
        "MFU vs datasheet": "-" if datasheet is None else f"{achieved / datasheet:.1%}",
        "peak GiB": "-" if peak_gib is None else f"{peak_gib:.3g}",
        "syncs/step": syncs,
        "attention kernels": attention_backends(names, args.profile_steps),
        "compile s": "-" if compile_s is None else f"{compile_s:.3g}",
        "frozen weights": frozen,
    }
    config.seconds = time.perf_counter() - started - (compile_s or 0.0)  # compiles apart
    del batch, step


def estimate(config: Config, done: list[Config], compiled_once: bool) -> float:
    """Seconds ``config`` will take, from the configurations measured before it."""
    same = [c for c in done if c.precision == config.precision and c.row]
    base = (
        max(c.seconds * config.batch / c.batch for c in same)
        if same
        else max((c.seconds * config.batch / c.batch for c in done if c.row), default=30.0)
        * (3.0 if config.precision == "32" else 1.0)
    )
    if config.mode == "compiled":
        base += 60.0 if compiled_once else 150.0  # a recompile, or the first compile
    return base


def markdown(
    args: argparse.Namespace,
    configs: list[Config],
    peaks: tuple[float, float | None],
    notes: list[str],
    profiles: dict[str, str],
    shown: list[str],
) -> str:
    """The section to paste into BENCHMARKS.md."""
    device = args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu_model()})"
    timer = "two CUDA events" if device.type == "cuda" else "time.perf_counter (CPU)"
    measured, datasheet = peaks
    lines = [
        f"## GPU check (issue 21): CMPT {args.model} training step on {name or 'the CPU'}",
        "",
        "`bash benchmarks/gpu_check.sh` (benchmarks/gpu_check.py): CMPT's training step "
        "(both towers with proxies, head, CMPT loss with alignment, backward, AdamW), random "
        f"weights, all modalities present; {args.steps} steps timed between {timer} "
        "without a synchronisation between them, after the warm-up.",
        "",
        f"- machine: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"commit {git_commit()}, python "
        f"{platform.python_version()}, "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- peak: measured {args.gemm}^3 GEMM {measured:.4g} TFLOP/s "
        f"({'bf16' if device.type == 'cuda' else 'fp32'}, random data); datasheet "
        + ("unknown" if datasheet is None else f"{datasheet:g} TFLOP/s dense bf16"),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in COLUMNS) + "|",
    ]
    for config in configs:
        if config.row:
            lines.append("| " + " | ".join(config.row[c] for c in COLUMNS) + " |")
    lines += ["", *(f"- {n}" for n in notes)]
    for key in shown:
        if key in profiles:
            lines += ["", f"Top kernels, {key} ({args.profile_steps} profiled steps):", ""]
            lines.append(profiles[key])
    return "\n".join(lines) + "\n"


def plan(args: argparse.Namespace) -> list[Config]:
    """The configurations in the order they are measured: bf16 first, then by batch, eager first."""
    precisions = sorted(set(args.precisions), key=lambda p: p != "bf16")
    modes = sorted(set(args.modes), key=lambda m: m != "eager")
    return [Config(p, b, m) for p in precisions for b in args.batch_sizes for m in modes]


def main(argv: list[str] | None = None) -> str:
    """Run the check; returns the markdown it printed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "32"], choices=["bf16", "32"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="steps after the first, untimed")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--gemm", type=int, default=8192, help="side of the peak GEMM")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds, hard deadline")
    parser.add_argument("--cpu", action="store_true", help="every code path, tiny, on the CPU")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: $OUT if set")
    parser.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (--cpu: aot_eager)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    deadline = started + args.budget
    if args.cpu:
        args.model, args.batch_sizes, args.steps, args.warmup = "cmpt-tiny", [4], 2, 1
        args.profile_steps, args.gemm = 1, 256
        # dynamo and AOT autograd as on a GPU, without inductor's minutes of C++ builds
        args.compile_backend = args.compile_backend or "aot_eager"
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --cpu for the tiny CPU run")
    else:
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows: TF32 matmuls, as 'high'
        torch.backends.cudnn.allow_tf32 = True
    args.device = device
    out_dir = args.out_dir or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    torch.manual_seed(0)
    compile_fn = torch.compile
    if args.compile_backend:  # compile_towers calls torch.compile(tower, dynamic=True)
        torch.compile = functools.partial(compile_fn, backend=args.compile_backend)  # type: ignore[assignment]
    try:
        return _run(args, device, out_dir, started, deadline)
    finally:
        torch.compile = compile_fn  # type: ignore[assignment]


def _run(
    args: argparse.Namespace,
    device: torch.device,
    out_dir: Path | None,
    started: float,
    deadline: float,
) -> str:
    """The check itself (see :func:`main`)."""
    clock = Clock(device)
    notes: list[str] = []
    configs = plan(args)
    profiles: dict[str, str] = {}
    peaks: tuple[float, float | None] = (math.nan, datasheet_peak(device))
    try:
        peaks = (gemm_peak(device, args.gemm, clock), peaks[1])
        print(f"GEMM peak: {peaks[0]:.4g} TFLOP/s", flush=True)
        try:
            notes += input_path(args.model, args.batch_sizes[0], device, clock)
        except Exception as err:  # report it, measure the rest
            notes.append(f"input path check failed: {type(err).__name__}: {err}")
        print(notes[-1], flush=True)
        models: dict[str, Any] = {}
        for mode in args.modes:
            models[mode] = build_model(args.model, compile_towers=mode == "compiled").to(device)
        if "eager" not in models:
            models["eager"] = build_model(args.model).to(device)
        flops_cache: dict[tuple[str, int], tuple[int, int]] = {}
        done: list[Config] = []
        compiled_once = False
        for config in configs:
            left = deadline - time.perf_counter()
            need = estimate(config, done, compiled_once)
            label = f"{config.precision}, batch {config.batch}, {config.mode}"
            if need > left:
                notes.append(f"skipped ({label}): about {need:.0f} s needed, {left:.0f} s left")
                print(notes[-1], flush=True)
                continue
            try:
                measure(config, models, args, peaks, clock, profiles, flops_cache)
            except torch.cuda.OutOfMemoryError:
                notes.append(f"out of memory ({label})")
                torch.cuda.empty_cache()
                continue
            compiled_once = compiled_once or config.mode == "compiled"
            done.append(config)
            print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in config.row.items()), flush=True)
    except KeyboardInterrupt:  # gpu_check.sh's time limit: keep what was measured
        notes.append("interrupted by the time limit; the rows above were measured")
    notes.append(
        f"FLOPs by FlopCounterMode on one eager step (the same for compiled towers); issue 21 "
        f"expects about 84 GFLOP per image-text pair for ViT-B/16; MFU = FLOPs / step time / "
        f"peak. Total time of the check: {time.perf_counter() - started:.0f} s "
        f"(budget {args.budget:.0f} s)"
    )
    shown = [k for k in profiles if k.startswith("bf16") or args.cpu][:2]
    text = markdown(args, configs, peaks, notes, profiles, shown)
    print(text, flush=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu_check.md").write_text(text)
        kernels = [f"## {key}\n\n{table}\n" for key, table in profiles.items()]
        (out_dir / "gpu_kernels.md").write_text("\n".join(kernels))
        print(f"written to {out_dir / 'gpu_check.md'} and {out_dir / 'gpu_kernels.md'}")
    return text


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
