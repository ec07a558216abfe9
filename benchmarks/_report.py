"""Reporting for the benchmarks: the machine description, a console table, BENCHMARKS.md.

Each benchmark builds one :class:`Report`; :meth:`Report.emit` prints it and appends it, with the
machine it ran on, to ``BENCHMARKS.md`` (or ``--out``). Nothing in that file is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "BENCHMARKS.md"

HEADER = """\
# Benchmarks

Numbers appended by the scripts in `benchmarks/` (`python benchmarks/<name>.py [--quick]`), each
with the machine it ran on. Nothing here is typed by hand: rerun a script to add a section.
Ratios are medians over rounds of variants run side by side in one process (interleaved, after
warm-up); absolute times are medians too. See `benchmarks/README.md` for what each one measures.
"""


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checked-out commit (the working tree may hold changes on top of it)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def _load() -> str:
    """The 1-minute load average: how busy the machine was (a shared CPU makes noise)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load avg (1 min, other processes included)": _load(),
        "device": "cpu",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device"] = (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
        )
    return info


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes."""
    parser.add_argument("--quick", action="store_true", help="smaller sizes (minutes on a CPU)")
    parser.add_argument("--model", help="open_clip architecture (random weights)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--repeats", type=int, help="timed rounds")
    parser.add_argument("--warmup", type=int, help="untimed calls of each variant first")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to append to")
    parser.add_argument("--no-write", action="store_true", help="print only")


def resolve(args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]) -> None:
    """Fill the options left unset with the full or the ``--quick`` sizes, set the threads."""
    sizes = quick if args.quick else full
    for key, value in sizes.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.threads is None:
        args.threads = 1
    torch.set_num_threads(args.threads)
    args.device = torch.device(args.device)


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits."""
    return f"{value:.{digits}g}"


@dataclass
class Report:
    """One benchmark's results: a table, the settings, the targets and notes."""

    title: str
    what: str
    settings: dict[str, Any]
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, value: float, target: float, *, below: bool = True) -> None:
        """Record a result against its target (``value <= target`` when ``below``)."""
        met = value <= target if below else value >= target
        sign = "<=" if below else ">="
        verdict = "met" if met else "NOT met"
        self.results.append(f"{name}: {value:.3f} (target {sign} {target:g}: {verdict})")

    def markdown(self, device: torch.device) -> str:
        """The section appended to BENCHMARKS.md."""
        lines = [f"## {self.title}", "", self.what, ""]
        lines.append("- machine: " + ", ".join(f"{k} {v}" for k, v in machine(device).items()))
        lines.append("- settings: " + ", ".join(f"{k} {v}" for k, v in self.settings.items()))
        lines += ["", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.results:
            lines += ["", *(f"**{r}**" + "  " for r in self.results)]
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        """Print the table, results and notes on the console."""
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            print(self.title)
            print(" | ".join(self.columns))
            for row in self.rows:
                print(" | ".join(row))
            for line in self.results + self.notes:
                print(line)
            return
        table = Table(title=self.title, caption=self.what)
        for column in self.columns:
            table.add_column(column, justify="right")
        for row in self.rows:
            table.add_row(*row)
        console = Console()
        console.print(table)
        for line in self.results:
            console.print(f"[bold]{line}[/bold]")
        for line in self.notes:
            console.print(f"- {line}")

    def emit(self, args: argparse.Namespace) -> str:
        """Print, and append to ``args.out`` unless ``args.no_write``; returns the markdown."""
        self.print()
        text = self.markdown(args.device)
        if not args.no_write:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            fresh = not out.exists() or out.stat().st_size == 0
            with out.open("a") as f:
                f.write((HEADER if fresh else "") + "\n" + text)
            print(f"appended to {out}")
        return text
