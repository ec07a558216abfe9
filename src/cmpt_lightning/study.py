"""``cmpt study``: CMPT against the baselines on the same data, masks and metrics.

A study is a sweep (:mod:`cmpt_lightning.sweep`) over a grid with named variants, one per
compared method, crossed with training regimes (training missing rates, type ``both``) and
seeds. It runs through the same runner as ``cmpt sweep run`` (so ``--executor slurm`` scales it
to a cluster, and a re-run continues where an interrupted study stopped), is aggregated by the
same ``collect`` (mean and std over seeds), and then written as ``study.csv`` (every cell),
``study.md`` (the tables) and ``study.png`` (the main metric against the test missing rate, per
method). The grid it ran is kept as ``grid.yaml`` in the study directory.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace

from .cli import Command, rename_flags, user_error
from .sweep.collect import SweepResults, collect_sweep
from .sweep.command import add_launch_arguments, launch_settings
from .sweep.grid import VARIANT, Grid, load_grid
from .sweep.launch import launch_sweep

__all__ = ["VARIANTS", "StudyGrid", "run_study", "study_command", "study_grid", "summarize_study"]

#: mu of the ``cmpt_proxy_task`` variant (the task loss on the proxy-substituted logits).
PROXY_TASK_WEIGHT = 0.5

#: The compared methods: variant name -> its overrides of the base config.
VARIANTS: dict[str, dict[str, Any]] = {
    "cmpt": {},
    "cmpt_no_align": {"model.init_args.align_weight": 0.0},
    "zero_fill": {"model.init_args.method": "zero_fill"},
    "learned_token": {"model.init_args.method": "learned_token"},
    "modality_dropout": {"model.init_args.method": "modality_dropout"},
    "cross_copy": {"model.init_args.method": "cross_copy"},
    # a variant beyond the paper, measured before it is kept: the task loss on the proxy cases
    "cmpt_proxy_task": {"model.init_args.proxy_task_weight": PROXY_TASK_WEIGHT},
}

TRAIN_RATE = "data.init_args.train_missing.rate"
TRAIN_TYPE = "data.init_args.train_missing.type"
SEED = "seed_everything"
TEST_TYPES = ["text", "image", "both"]

_CASES = {"complete": ("both", 0.0), "text missing": ("text", 1.0), "image missing": ("image", 1.0)}


@dataclass
class StudyGrid:
    """What a study compares: which variants, under which training regimes, over which seeds.

    Attributes:
        grid: a study grid file (``variants:`` and axes, like a sweep's grid); None: the
            built-in one (the seven variants of :data:`VARIANTS`, training rates 0 and 0.7 of
            type ``both``, seeds 0, 1, 2).
        variants: keep only these variants (None: all of the grid's).
        seeds: values of ``seed_everything`` (None: the grid's).
        train_rates: training missing rates, type ``both`` (None: the grid's).
        overrides: fixed overrides of every run, dotted config key -> value, e.g.
            ``{"trainer.max_epochs": 2}``.
    """

    grid: Path | None = None
    variants: list[str] | None = None
    seeds: list[int] | None = None
    train_rates: list[float] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def study_grid(study: StudyGrid) -> Grid:
    """The sweep grid of a study: the grid file (or built-in grid) narrowed as asked.

    Raises:
        ValueError: for an unknown variant, or an empty selection.
    """
    if study.grid is not None:
        base = load_grid(study.grid)
        variants = dict(base.variants or {"base": {}})
        axes = {k: v for k, v in base.axes.items() if k != VARIANT}
    else:
        variants = dict(VARIANTS)
        axes = {TRAIN_RATE: [0.0, 0.7], TRAIN_TYPE: ["both"], SEED: [0, 1, 2]}
    if study.variants is not None:
        unknown = [v for v in study.variants if v not in variants]
        if unknown or not study.variants:
            msg = f"unknown study variants {unknown}; choose from {list(variants)}"
            raise ValueError(msg)
        variants = {name: variants[name] for name in study.variants}
    if study.train_rates is not None:
        axes[TRAIN_RATE] = list(study.train_rates)
        axes.setdefault(TRAIN_TYPE, ["both"])
    if study.seeds is not None:
        axes[SEED] = list(study.seeds)
    axes.update({key: [value] for key, value in study.overrides.items()})
    return Grid(axes=axes, variants=variants)


def _grid_text(grid: Grid) -> str:
    """The YAML of a study grid (``variants:`` then the axes), as kept in ``grid.yaml``."""
    axes = {k: v for k, v in grid.axes.items() if k != VARIANT}
    text = yaml.safe_dump({"variants": grid.variants, **axes}, sort_keys=False)
    return "# the grid of a cmpt study (written by cmpt study)\n" + text


def _write_grid(grid: Grid, path: Path) -> None:
    """Write ``grid.yaml`` atomically (a reader never sees half a file, a failure leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(_grid_text(grid))
    tmp.replace(path)


def run_study(
    configs: str | Path | Sequence[str | Path],
    out: str | Path,
    study: StudyGrid | None = None,
    **launch: Any,
) -> Path | None:
    """Run (or continue) a study through the sweep runner, then summarize it.

    Args:
        configs: the base ``cmpt fit`` config(s), e.g. ``configs/demo.yaml``.
        out: the study directory.
        study: the variants, regimes, seeds and overrides (default: the built-in study).
        **launch: options of :class:`~cmpt_lightning.sweep.plan.SweepSettings` (``executor``,
            ``test_rates``, ``parallelism``, ``time``, ``slurm``, ``dry_run``, ``wait``);
            the executor defaults to ``debug`` (in this process, one run after the other).

    Returns:
        The path of ``study.md``; None after a dry run or while runs are still queued.

    Raises:
        RuntimeError: when a run failed (re-running the same study retries it).
    """
    out = Path(out)
    grid = study_grid(study or StudyGrid())
    grid_file = out / "grid.yaml"
    paths = [configs] if isinstance(configs, str | Path) else list(configs)
    launch.setdefault("executor", "debug")
    launch.setdefault("test_types", list(TEST_TYPES))
    settings = launch_settings({"config": paths, **launch}, grid=grid_file, out=out)
    # grid.yaml is the grid that ran: written only once the sweep's checks pass and it starts
    # (a dry run, a bad grid or a refused re-run leaves the study directory as it was)
    report = launch_sweep(settings, grid, on_start=lambda ran: _write_grid(ran, grid_file))
    if settings.dry_run:
        print(f"the study's grid (kept as {grid_file} when the study runs):\n{_grid_text(grid)}")
    if report.failures:
        msg = f"{len(report.failures)} run(s) of the study failed:\n{report.summary()}"
        raise RuntimeError(msg)
    if settings.dry_run or report.in_progress or not settings.waits:
        return None
    return summarize_study(out)


def _study_rows(result: SweepResults, grid: Grid, aliases: Mapping[str, str]) -> list[dict]:
    """The study's rows (train rate, variant, test type and rate, main metric's mean and std)."""
    metric = result.main_metric
    rows = []
    for row in result.rows:
        fixed = {key: grid.axes[key][0] for key in (VARIANT, TRAIN_RATE) if key in grid.axes}
        value = {key: row.get(aliases.get(key, key), fixed.get(key)) for key in fixed}
        rate = value.get(TRAIN_RATE)
        rows.append(
            {
                "train_rate": math.nan if rate is None else float(rate),
                "variant": value.get(VARIANT, "base"),
                "type": row["test_type"],
                "rate": float(row["test_rate"]),
                "metric": metric,
                "mean": row[f"{metric}_mean"],
                "std": row[f"{metric}_std"],
                "seeds": row["n_seeds"],
            }
        )
    return sorted(rows, key=lambda r: (r["train_rate"], r["variant"], r["type"], r["rate"]))


def _spread(mean: float, std: float) -> str:
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _markdown(rows: list[dict[str, Any]], path: Path) -> None:
    metric, seeds = rows[0]["metric"], max(r["seeds"] for r in rows)
    lines = [
        "# CMPT against the baselines",
        "",
        f"Test {metric} (mean ± std over {seeds} seeds), per training regime. Columns: "
        "availability cases, then missing rates of type `both` (half of the missing samples "
        "lack the image, half the text). Written by `cmpt study`.",
    ]
    table = {(r["train_rate"], r["variant"], r["type"], r["rate"]): r for r in rows}
    rates = sorted({r["rate"] for r in rows if r["type"] == "both"})
    for train_rate in sorted({r["train_rate"] for r in rows}):
        lines += ["", f"## Trained with {train_rate:.0%} of samples missing a modality", ""]
        header = ["method", *_CASES, *(f"both {r:g}" for r in rates)]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cells = [variant]
            for kind, rate in [*_CASES.values(), *(("both", r) for r in rates)]:
                cell = table.get((train_rate, variant, kind, rate))
                cells.append(_spread(cell["mean"], cell["std"]) if cell else "-")
            lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def summarize_study(out: str | Path) -> Path:
    """Aggregate a study directory into study.csv, study.md and (with matplotlib) study.png.

    Args:
        out: the study directory written by :func:`run_study`.

    Returns:
        The path of ``study.md``.
    """
    out = Path(out)
    grid_file = out / "grid.yaml"
    if not grid_file.is_file():
        msg = f"{grid_file} does not exist; run the study first (cmpt study --out {out})"
        raise FileNotFoundError(msg)
    grid = load_grid(grid_file)
    result = collect_sweep(out)
    manifest = json.loads((out / "manifest.json").read_text())
    rows = _study_rows(result, grid, manifest.get("aliases", {}))
    with (out / "study.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v != v else v for k, v in row.items()} for row in rows)
    _markdown(rows, out / "study.md")
    from .sweep.plots import plot_study

    plot_study(rows, out / "study.png")
    return out / "study.md"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cmpt study", description=__doc__)
    add_launch_arguments(parser, skip={"grid", "out"})
    parser.set_defaults(config=None, executor="debug", test_types=list(TEST_TYPES))
    parser.add_argument("--out", type=Path, default=Path("runs/study"), help="the study directory")
    parser.add_class_arguments(StudyGrid, nested_key=None)
    return parser


def _legacy(tokens: list[str]) -> list[str]:
    """0.1's ``--train-rates 0 0.7``, ``--seeds 0 1`` and ``-- --key value`` forms."""
    overrides: dict[str, Any] = {}
    if "--" in tokens:
        at = tokens.index("--")
        tokens, rest = tokens[:at], tokens[at + 1 :]
        key = None
        for token in rest:
            name, eq, value = token.partition("=")
            if name.startswith("--") and eq:
                overrides[name[2:]] = yaml.safe_load(value)
            elif token.startswith("--"):
                key = token[2:]
            elif key is not None:
                overrides[key], key = yaml.safe_load(token), None
        if overrides:
            tokens += ["--overrides", yaml.safe_dump(overrides, default_flow_style=True).strip()]
            warnings.warn(
                "`cmpt study ... -- --key value` is deprecated and removed in 0.3; write "
                f"--overrides '{json.dumps(overrides)}'",
                FutureWarning,
                stacklevel=2,
            )
    renames = {"--train-rates": "--train_rates", "--test-rates": "--test_rates"}
    lists = ["--seeds", "--variants", "--train_rates", "--test_rates", "--test_types"]
    return rename_flags(tokens, renames, lists=lists)


def _run(config: Namespace) -> int:
    values = {k: v for k, v in config.as_dict().items() if not k.startswith("__")}
    study = StudyGrid(**{k: values.pop(k) for k in ("grid", "variants", "seeds", "train_rates")})
    study.overrides = values.pop("overrides") or {}
    out, configs = values.pop("out"), values.pop("config") or ["configs/demo.yaml"]
    try:
        path = run_study(configs, out, study, **values)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        return user_error("cmpt study", err)
    except RuntimeError as err:
        print(err)
        return 1
    if path is not None:
        print(path.read_text())
    return 0


def study_command() -> Command:
    """``cmpt study``: its parser, runner and 0.1 spellings."""
    return Command(
        "CMPT against the baselines (a sweep over method variants, regimes and seeds)",
        _parser,
        _run,
        _legacy,
    )
