r"""``cmpt sweep``: run a grid of training settings, then ``cmpt sweep collect`` the results.

::

    cmpt sweep --config configs/demo.yaml --grid configs/grids/missing_rate.yaml --out runs/sweep
    cmpt sweep --config configs/food101.yaml --grid grid.yaml --out runs/food --executor slurm \
        --slurm.partition gpu --slurm.cpus-per-task 8 --time 12:00:00 --dry-run
    cmpt sweep collect runs/sweep

Options spell with ``-`` or ``_`` (``--dry-run`` or ``--dry_run``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..missing import DEFAULT_RATES

__all__ = ["main"]


def _flags(name: str) -> list[str]:
    """``--name-with-dashes`` and ``--name_with_underscores``."""
    dashed, underscored = f"--{name.replace('_', '-')}", f"--{name.replace('-', '_')}"
    return [dashed] if dashed == underscored else [dashed, underscored]


def _yaml_list(text: str) -> list[Any]:
    """``0.5`` or ``[0, 0.5, 1]`` -> a list (so both ``--x 0 0.5`` and ``--x '[0, 0.5]'`` work)."""
    value = yaml.safe_load(text)
    return value if isinstance(value, list) else [value]


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        msg = f"expected KEY=VALUE (e.g. constraint=a100), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmpt sweep",
        description="Fit every cell of a grid of config values, then test each with the one-pass "
        "sweep over test-time missing rates and types. Re-running skips finished cells and "
        "retries failed ones. 'cmpt sweep collect RUN_DIR' aggregates the results.",
    )
    add = parser.add_argument
    add(
        "-c",
        "--config",
        action="append",
        required=True,
        type=Path,
        metavar="FILE",
        help="base cmpt fit config (repeat to layer several)",
    )
    add("--grid", required=True, type=Path, help="YAML file: dotted config keys -> lists")
    add("--out", required=True, type=Path, help="the sweep's run directory (a folder per cell)")
    add(
        "--executor",
        choices=["local", "debug", "slurm"],
        default="local",
        help="local: a subprocess per cell; debug: in this process; slurm: a SLURM job array",
    )
    add(
        *_flags("test-rates"),
        dest="test_rates",
        type=_yaml_list,
        nargs="+",
        metavar="RATE",
        default=None,
        help=f"test-time missing rates of each cell's test sweep (default {DEFAULT_RATES})",
    )
    add(
        *_flags("test-types"),
        dest="test_types",
        type=_yaml_list,
        nargs="+",
        metavar="TYPE",
        default=None,
        help="test-time missing types (default: text image both)",
    )
    add("--time", default="24:00:00", help="time limit per cell: minutes or [D-]HH:MM:SS")
    add(
        "--parallelism", type=int, default=None, help="local executor: cells at once (default: all)"
    )
    add(
        *_flags("dry-run"),
        dest="dry_run",
        action="store_true",
        help="print the cells and the submission (sbatch script for slurm), submit nothing",
    )
    add(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for the jobs and report failures (default: yes, except with slurm)",
    )
    slurm = parser.add_argument_group("slurm", "SLURM resources of each cell's job")
    for name, kind, text in [
        ("partition", str, "--partition"),
        ("account", str, "--account"),
        ("qos", str, "--qos"),
        ("gpus-per-node", int, "default: trainer.devices unless on CPU"),
        ("tasks-per-node", int, "default: trainer.devices (one task per device)"),
        ("cpus-per-task", int, "--cpus-per-task"),
        ("mem", str, "memory per node, e.g. 64G"),
        ("array-parallelism", int, "cells running at once (default: all)"),
        ("job-name", str, "--job-name (default cmpt-sweep)"),
    ]:
        slurm.add_argument(
            *_flags(f"slurm.{name}"),
            dest=name.replace("-", "_"),
            type=kind,
            default=None,
            help=text,
        )
    slurm.add_argument(
        *_flags("slurm.setup"),
        dest="setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line before the job (repeat), e.g. 'source .venv/bin/activate'",
    )
    slurm.add_argument(
        *_flags("slurm.extra"),
        dest="extra",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="any other sbatch option (repeat), e.g. constraint=a100",
    )
    return parser


def _collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmpt sweep collect",
        description="Aggregate every finished cell of a sweep into results.csv, results.md and "
        "(with matplotlib) heatmap.png and curves.png in RUN_DIR.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the sweep's --out")
    parser.add_argument("--metric", default=None, help="metric of the plots (default: main)")
    parser.add_argument(
        *_flags("seed-keys"),
        dest="seed_keys",
        nargs="*",
        default=None,
        metavar="KEY",
        help="grid keys averaged over; none: give the flag alone (default: the grid's "
        "seed_everything, *.seed, *_seed keys)",
    )
    return parser


def _flatten(groups: list[list[Any]] | None) -> list[Any] | None:
    return None if groups is None else [v for group in groups for v in group]


def _run(args: Sequence[str]) -> int:
    from .launch import launch_sweep
    from .plan import SlurmSettings, SweepSettings

    parser = _run_parser()
    ns = parser.parse_args(args)
    slurm_fields = (
        "partition",
        "account",
        "qos",
        "gpus_per_node",
        "tasks_per_node",
        "cpus_per_task",
        "mem",
        "array_parallelism",
        "job_name",
        "setup",
    )
    slurm = {k: getattr(ns, k) for k in slurm_fields if getattr(ns, k) not in (None, [])}
    optional = {"test_rates": _flatten(ns.test_rates), "test_types": _flatten(ns.test_types)}
    try:
        settings = SweepSettings(
            configs=ns.config,
            grid=ns.grid,
            out=ns.out,
            executor=ns.executor,
            time=ns.time,
            parallelism=ns.parallelism,
            dry_run=ns.dry_run,
            wait=ns.wait,
            slurm=SlurmSettings(**slurm, extra=dict(ns.extra)),
            **{k: v for k, v in optional.items() if v is not None},
        )
        report = launch_sweep(settings)
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))
    return 1 if report.failures else 0


def _collect(args: Sequence[str]) -> int:
    from .collect import collect_sweep

    parser = _collect_parser()
    ns = parser.parse_args(args)
    try:
        result = collect_sweep(ns.run_dir, metric=ns.metric, seed_keys=ns.seed_keys)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if result.missing:
        print(f"not finished, left out: {', '.join(result.missing)}")
    for kind, path in result.paths.items():
        print(f"{kind}: {path}")
    if "heatmap" not in result.paths:
        print("no plots: install matplotlib (pip install 'cmpt-lightning[plots]')")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``[sweep] [run] OPTIONS`` or ``[sweep] collect RUN_DIR``; return the exit code.

    The exit code is 1 when a waited-for cell failed, 2 for bad input (named on stderr).
    """
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if args[:1] == ["sweep"]:
        args = args[1:]
    if args[:1] == ["collect"]:
        return _collect(args[1:])
    if args[:1] == ["run"]:
        args = args[1:]
    return _run(args)
