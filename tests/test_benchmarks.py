"""Smoke test of the benchmarks: each runs at a tiny size and appends its section.

Benchmarks are not tests: nothing here checks a timing, only that every script still runs and
writes what it measured, with the machine description, to the file given as ``--out``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--model", "cmpt-tiny", "--threads", "1", "--warmup", "1", "--repeats", "1"]

CASES = {
    "proxy_overhead": [*TINY, "--batch-size", "2"],
    "towers_floor": [*TINY, "--batch-size", "2"],
    "missing_rates": [*TINY, "--batch-size", "4", "--rates", "0", "0.7"],
    "onepass_sweep": [*TINY, "--batch-size", "4", "--samples", "8"],
    "input_pipeline": [*TINY, "--batch-size", "2", "--images", "4", "--loader-batch", "2"],
    "skip_towers": [*TINY, "--batch-size", "4"],
    "memory": [*TINY, "--batch-size", "2", "--ckpt-model", "cmpt-tiny", "--keep-malloc"],
    "gpu_check": [
        "--device",
        "cpu",
        "--model",
        "cmpt-tiny",
        "--batch-sizes",
        "2",
        "--tiny",
        "--threads",
        "1",
    ],
}


@pytest.fixture(scope="module")
def benchmarks():
    threads = torch.get_num_threads()
    sys.path.insert(0, str(BENCHMARKS))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(BENCHMARKS))
    torch.set_num_threads(threads)  # the benchmarks set their own


@pytest.mark.parametrize("name", list(CASES))
def test_benchmark_runs_and_appends_its_section(benchmarks, name, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# earlier runs\n")
    report = benchmarks(name).main([*CASES[name], "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# earlier runs\n")  # appended, not overwritten
    assert f"## {report.title}" in text
    assert "- machine: cpu " in text and "torch threads 1" in text
    assert report.rows and all(len(row) == len(report.columns) for row in report.rows)
    assert "| " + " | ".join(report.rows[0]) + " |" in text


def test_a_fresh_file_gets_the_header(benchmarks, tmp_path):
    out = tmp_path / "new" / "BENCHMARKS.md"
    benchmarks("proxy_overhead").main([*CASES["proxy_overhead"], "--out", str(out)])
    assert out.read_text().startswith("# Benchmarks\n")
