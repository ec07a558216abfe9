"""Smoke test of the benchmarks: each runs at a tiny size and appends its section.

Benchmarks are not tests: nothing here checks a timing, only that every script still runs and
writes what it measured, with the machine description, to the file given as ``--out``.
"""

from __future__ import annotations

import importlib
import itertools
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


def test_gpu_check_cpu_runs_every_path_and_writes_the_whole_table(benchmarks, tmp_path):
    torch.set_num_threads(1)
    gpu_check = benchmarks("gpu_check")
    compile_fn = torch.compile
    # compiled towers take a minute to trace here: `gpu_check.sh --cpu` runs them (README)
    args = ["--cpu", "--modes", "eager", "--compile-backend", "eager", "--out-dir", str(tmp_path)]
    text = gpu_check.main(args)
    assert torch.compile is compile_fn  # the CPU run's compile backend is not left behind
    assert (tmp_path / "gpu_check.md").read_text() == text
    assert "## " in (tmp_path / "gpu_kernels.md").read_text()
    header = "| " + " | ".join(gpu_check.COLUMNS) + " |"
    lines = text.splitlines()
    rows = list(itertools.takewhile(lambda r: r.startswith("| "), lines[lines.index(header) + 2 :]))
    assert [row.split(" | ")[0] for row in rows] == ["| bf16", "| fp32 (tf32)"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(gpu_check.COLUMNS) and all(cells)
        values = dict(zip(gpu_check.COLUMNS, cells, strict=True))
        assert float(values["samples/s"]) > 0 and float(values["GFLOP/sample"]) > 0
        assert float(values["attention GFLOP/sample"]) > 0 and values["MFU vs measured GEMM"]
        assert values["attention kernels"] != "none seen"
    assert "bit-identical to the CPU's ToTensor + Normalize: True" in text
    assert "Top kernels, bf16, batch 4, eager" in text and "| `aten::" in text


def test_gpu_check_stops_at_its_budget_and_still_writes_the_table(benchmarks, tmp_path):
    gpu_check = benchmarks("gpu_check")
    text = gpu_check.main(["--cpu", "--budget", "0", "--out-dir", str(tmp_path)])
    assert "skipped (bf16, batch 4, eager)" in text and "| precision |" in text


def test_step_trace_counts_ops_and_the_bytes_elementwise_ops_write(benchmarks):
    step_trace = benchmarks("step_trace")
    a = torch.ones(10)
    with step_trace.StepTracer() as tracer:
        b = a + 1  # pointwise, 40 bytes
        c = torch.cat([b, b])  # 80 bytes
        c.split(5)  # views: an op, no bytes
        torch.mm(a.view(2, 5), a.view(5, 2))  # neither
    trace = tracer.trace
    assert trace.bytes_by_kind == {"pointwise": 40, "cat": 80}
    assert trace.elementwise_ops == 2 and trace.ops_by_kind["split"] == 1
    assert trace.ops >= 5  # the views and the matmul are dispatched ops too
    text = step_trace.main(["--quick", "--methods", "cmpt", "--precisions", "32"])
    row = next(line for line in text.splitlines() if line.startswith("| cmpt-tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[4]) > int(cells[5]) > 0 and float(cells[7]) > 0
