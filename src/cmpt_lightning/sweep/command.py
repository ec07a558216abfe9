r"""``cmpt sweep run`` and ``cmpt sweep collect``: the cluster sweep's subcommands of ``cmpt``.

::

    cmpt sweep run --config configs/demo.yaml --grid configs/grids/missing_rate.yaml --out runs/s
    cmpt sweep run --config configs/food101.yaml --grid grid.yaml --out runs/food \
        --executor slurm --slurm.partition gpu --slurm.cpus_per_task 8 --time 12:00:00 --dry_run
    cmpt sweep collect runs/s

``cmpt sweep --config ...`` (without ``run``) is short for ``cmpt sweep run --config ...``.
The options come from :class:`~cmpt_lightning.sweep.plan.SweepSettings` and
:func:`~cmpt_lightning.sweep.collect.collect_sweep`. The spellings of 0.1 (``--dry-run``,
``--test-rates 0 0.5``, ``--slurm.cpus-per-task``, ``--slurm.extra KEY=VALUE``, ...) still
work until 0.3, with a warning.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import yaml
from jsonargparse import ActionYesNo, ArgumentParser, Namespace

from ..cli import Command, rename_flags, user_error
from .collect import collect_sweep
from .launch import launch_sweep
from .plan import SlurmSettings, SweepSettings

__all__ = ["add_launch_arguments", "launch_settings", "sweep_command"]

_SUBCOMMANDS = ("run", "collect", "-h", "--help")

#: 0.1 spellings of ``cmpt sweep run`` -> today's.
_RUN_RENAMES = {
    "--dry-run": "--dry_run",
    "--test-rates": "--test_rates",
    "--test-types": "--test_types",
    "--no-wait": "--no_wait",
    "--slurm.setup": "--slurm.setup+",
    **{
        f"--slurm.{name}": f"--slurm.{name.replace('-', '_')}"
        for name in (
            "gpus-per-node",
            "tasks-per-node",
            "cpus-per-task",
            "array-parallelism",
            "job-name",
        )
    },
}


def add_launch_arguments(parser: ArgumentParser, *, skip: set[str]) -> None:
    """Add the options of :class:`SweepSettings` (less ``skip``) and ``--config`` to ``parser``.

    ``--dry_run`` and ``--wait`` / ``--no_wait`` are flags; ``--config`` may be repeated to
    layer several base configs, as with ``cmpt fit``.
    """
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        metavar="FILE",
        help="base cmpt fit config (repeat to layer several; later ones override earlier ones)",
    )
    parser.add_class_arguments(
        SweepSettings, nested_key=None, skip={"configs", "dry_run", "wait", *skip}
    )
    parser.add_argument(
        "--dry_run",
        action=ActionYesNo,
        default=False,
        help="print the cells and the submission (sbatch script for slurm), submit nothing",
    )
    parser.add_argument(
        "--wait",
        action=ActionYesNo(no_prefix="no_"),
        default=None,
        help="wait for the jobs and report failures (default: yes, except with slurm)",
    )


def launch_settings(values: dict[str, Any], **fixed: Any) -> SweepSettings:
    """The :class:`SweepSettings` of a parsed ``cmpt sweep run`` (or study) namespace.

    Raises:
        ValueError: without a ``--config``, or for a value out of range.
    """
    values = {k: v for k, v in values.items() if not k.startswith("__")}
    configs = values.pop("config", None) or fixed.pop("configs", None)
    if not configs:
        msg = "no base config; give --config FILE (e.g. configs/demo.yaml)"
        raise ValueError(msg)
    slurm = SlurmSettings(**(values.pop("slurm", None) or {}))
    return SweepSettings(configs=configs, slurm=slurm, **values, **fixed)


def _run_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cmpt sweep run",
        description="Fit every cell of a grid of config values, then test each with the one-pass "
        "test grid over test-time missing rates and types (and corruptions: --test_corruptions). "
        "Re-running skips finished cells and retries failed ones.",
    )
    add_launch_arguments(parser, skip=set())
    return parser


def _collect_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cmpt sweep collect",
        description="Aggregate every finished cell of a sweep into results.csv, results.md and "
        "(with matplotlib) heatmap.png and curves.png in RUN_DIR.",
    )
    parser.add_function_arguments(collect_sweep, nested_key=None, as_positional=True)
    return parser


def _parser() -> ArgumentParser:
    return ArgumentParser(prog="cmpt sweep", description="Sweeps over training settings.")


def _nested(parser: ArgumentParser) -> None:
    subcommands = parser.add_subcommands()
    subcommands.add_subcommand("run", _run_parser(), help="run (or resume) a sweep")
    subcommands.add_subcommand("collect", _collect_parser(), help="aggregate a sweep's results")


def _legacy_extra(tokens: list[str]) -> list[str]:
    """``--slurm.extra KEY=VALUE`` (repeated, 0.1) -> one ``--slurm.extra '{KEY: VALUE}'``."""
    extra: dict[str, Any] = {}
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "--slurm.extra" and i + 1 < len(tokens) and "=" in tokens[i + 1]:
            if not tokens[i + 1].lstrip().startswith("{"):
                key, value = tokens[i + 1].split("=", 1)
                extra[key.strip()] = yaml.safe_load(value)
                i += 2
                continue
        out.append(tokens[i])
        i += 1
    if extra:
        warnings.warn(
            "--slurm.extra KEY=VALUE is deprecated and removed in 0.3; write "
            f"--slurm.extra '{json.dumps(extra)}'",
            FutureWarning,
            stacklevel=2,
        )
        out += ["--slurm.extra", json.dumps(extra)]
    return out


def _legacy(tokens: list[str]) -> list[str]:
    if not tokens or tokens[0] not in _SUBCOMMANDS:
        tokens = ["run", *tokens]  # `cmpt sweep --config ...` is `cmpt sweep run --config ...`
    if tokens[0] == "collect":
        renamed = rename_flags(tokens[1:], {"--seed-keys": "--seed_keys"}, lists=["--seed_keys"])
        return ["collect", *renamed]
    if tokens[0] == "run":
        lists = ["--test_rates", "--test_types"]
        return ["run", *rename_flags(_legacy_extra(tokens[1:]), _RUN_RENAMES, lists=lists)]
    return tokens


def _launch(config: Namespace) -> int:
    try:
        report = launch_sweep(launch_settings(config.as_dict()))
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return user_error("cmpt sweep run", err)
    return 1 if report.failures else 0


def _collect(config: Namespace) -> int:
    options = {k: v for k, v in config.as_dict().items() if not k.startswith("__")}
    try:
        result = collect_sweep(**options)
    except (ValueError, FileNotFoundError) as err:
        return user_error("cmpt sweep collect", err)
    if result.missing:
        print(f"not finished, left out: {', '.join(result.missing)}")
    for kind, path in result.paths.items():
        print(f"{kind}: {path}")
    if "heatmap" not in result.paths:
        print("no plots: install matplotlib (pip install 'cmpt-lightning[plots]')")
    return 0


def _run(config: Namespace) -> int:
    if config.subcommand == "collect":
        return _collect(config.collect)
    return _launch(config.run)


def sweep_command() -> Command:
    """``cmpt sweep``: its parser (``run``, ``collect``), runner and 0.1 spellings."""
    return Command(
        "run a grid of cmpt fit settings (run) and aggregate its results (collect)",
        _parser,
        _run,
        _legacy,
        _nested,
    )
