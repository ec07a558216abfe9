"""Timing for the benchmarks: variants run interleaved, warm-up first, medians and paired ratios.

Every benchmark compares variants measured side by side in one process: each round runs every
variant once, in an order that rotates from round to round, so that a slow drift of the machine
(another process, thermal state, allocator warm-up) touches all variants alike. A ratio is the
median over rounds of the per-round ratio, which cancels what the round shares.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class Timings:
    """Seconds per call of each variant, one entry per round, in round order."""

    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        """Median seconds of ``name``."""
        return statistics.median(self.seconds[name])

    def spread(self, name: str) -> tuple[float, float]:
        """(min, max) seconds of ``name``."""
        return min(self.seconds[name]), max(self.seconds[name])

    def ratio(self, name: str, reference: str) -> float:
        """Median over rounds of ``name / reference`` measured in the same round."""
        return statistics.median(self.ratios(name, reference))

    def ratios(self, name: str, reference: str) -> list[float]:
        """The per-round ratios ``name / reference``."""
        return [a / b for a, b in zip(self.seconds[name], self.seconds[reference], strict=True)]


def interleaved(
    variants: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timings:
    """Time each variant ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    Args:
        variants: name -> a call doing one unit of work (one training step, one test pass).
        repeats: timed rounds; each round calls every variant once.
        warmup: untimed calls of each variant before the first round.
        sync: waits for queued device work, called around every timed call.
        clock: the clock read before and after each call (``time.thread_time``: the CPU time
            of the calling thread, which other processes on shared cores disturb least).

    Returns:
        The seconds of every call, per variant.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    sync()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = clock()
            variants[name]()
            sync()
            seconds[name].append(clock() - start)
    return Timings(seconds)
