"""``cmpt study``: CMPT against the baselines on the same data, masks and metrics.

A study is a sweep (:mod:`cmpt_lightning.sweep`) over a grid with named variants, one per
compared method, crossed with training regimes (training missing rates, type ``both``) and
seeds. It runs through the same runner as ``cmpt sweep run`` (so ``--executor slurm`` scales it
to a cluster, and a re-run continues where an interrupted study stopped), is aggregated by the
same ``collect`` (``results.csv``), and then written as ``study.csv`` (every test cell of every
method, mean and bootstrap 95% interval over the seeds), ``study_pairs.csv`` (CMPT's paired
differences against every method, with a win / tie / loss verdict), ``study.md`` (the tables)
and ``study.png`` (the main metric against the test missing rate, per method); see
:mod:`cmpt_lightning.study_tables` and :mod:`cmpt_lightning.study_stats`.

A study grid may declare ``hparams:`` (dotted key -> list of values), crossed with every
variant: each method runs the same grid, and for each (task, regime, method) the combination
with the best mean validation score is reported, never one chosen on test
(:mod:`cmpt_lightning.study_results`). A ``data.init_args.task`` axis makes one study per task
in one directory. The grid it ran is kept as ``grid.yaml`` in the study directory.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace

from .cli import Command, rename_flags, user_error
from .study_results import TRAIN_RATE, read_study
from .study_tables import controls_of, write_outputs
from .sweep.collect import collect_sweep
from .sweep.command import add_launch_arguments, launch_settings
from .sweep.grid import VARIANT, Grid, expand_grid, is_seed_key, key_aliases, read_grid_file
from .sweep.launch import launch_sweep

__all__ = [
    "VARIANTS",
    "StudyGrid",
    "load_study_grid",
    "run_study",
    "study_command",
    "study_grid",
    "summarize_study",
]

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
    # controls: distillation without a proxy token, and one modality alone (judged only where
    # its modality is the one present)
    "align_distill": {"model.init_args.method": "align_distill"},
    "text_specialist": {"model.init_args.method": "text_specialist"},
    "image_specialist": {"model.init_args.method": "image_specialist"},
    # a variant beyond the paper, measured before it is kept: the task loss on the proxy cases
    "cmpt_proxy_task": {"model.init_args.proxy_task_weight": PROXY_TASK_WEIGHT},
}

TRAIN_TYPE = "data.init_args.train_missing.type"
SEED = "seed_everything"
TEST_TYPES = ["text", "image", "both"]
#: The study grid's section of hyper-parameters selected on validation.
HPARAMS = "hparams"
#: The method every other one is compared with.
REFERENCE = "cmpt"


@dataclass
class StudyGrid:
    """What a study compares: which variants, under which training regimes, over which seeds.

    Attributes:
        grid: a study grid file (``variants:`` and axes, like a sweep's grid); None: the
            built-in one (the ten variants of :data:`VARIANTS`, training rates 0 and 0.7 of
            type ``both``, seeds 0, 1, 2).
        variants: keep only these variants (None: all of the grid's).
        seeds: values of ``seed_everything`` (None: the grid's).
        train_rates: training missing rates, type ``both`` (None: the grid's).
        overrides: fixed overrides of every run, dotted config key -> value, e.g.
            ``{"trainer.max_epochs": 2}``.
        hparams: the hyper-parameter grid every method runs, dotted config key -> values,
            e.g. ``{"model.init_args.optimizer.init_args.lr": [0.003, 0.01]}``; the best
            combination on validation is reported (None: the grid file's ``hparams:``).
    """

    grid: Path | None = None
    variants: list[str] | None = None
    seeds: list[int] | None = None
    train_rates: list[float] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, list[Any]] | None = None


def _check_hparams(hparams: Any, where: str) -> dict[str, list[Any]]:
    """A study's ``hparams:``: a mapping of dotted config keys to non-empty lists."""
    if not isinstance(hparams, dict):
        msg = (
            f"'hparams'{where} must map config keys to lists of values, e.g. "
            f"{{model.init_args.optimizer.init_args.lr: [0.003, 0.01]}}; got {hparams!r}"
        )
        raise TypeError(msg)
    for key, values in hparams.items():
        if not isinstance(values, list) or not values:
            msg = (
                f"hyper-parameter {key!r}{where} must map to a non-empty list of values, got "
                f"{values!r}; write [{values!r}] for a single value"
            )
            raise TypeError(msg)
        if is_seed_key(str(key)) or key == VARIANT:
            msg = (
                f"hyper-parameter {key!r}{where} is a seed or the variant; put seeds and "
                "variants beside 'hparams:', not in it"
            )
            raise ValueError(msg)
    return {str(k): list(v) for k, v in hparams.items()}


def load_study_grid(path: str | Path) -> tuple[Grid, dict[str, list[Any]]]:
    """Read a study grid file: a sweep grid (``variants:`` and axes) with ``hparams:``.

    Args:
        path: the grid file.

    Returns:
        The grid without its hyper-parameters, and the hyper-parameters (empty without any).
    """
    path = Path(path)
    data = read_grid_file(path)
    hparams = _check_hparams(data.pop(HPARAMS, None) or {}, f" in {path}")
    variants = data.pop("variants", None)
    return Grid(axes=data, source=path, variants=variants), hparams


def _study_axes(study: StudyGrid) -> tuple[dict[str, Any], dict[str, list], dict[str, list]]:
    """The study's variants, axes (without hyper-parameters) and hyper-parameters."""
    if study.grid is not None:
        base, hparams = load_study_grid(study.grid)
        variants = dict(base.variants or {"base": {}})
        axes = {k: v for k, v in base.axes.items() if k != VARIANT}
    else:
        variants, hparams = dict(VARIANTS), {}
        axes = {TRAIN_RATE: [0.0, 0.7], TRAIN_TYPE: ["both"], SEED: [0, 1, 2]}
    if study.hparams is not None:
        hparams = _check_hparams(study.hparams, " (--hparams)")
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
    clash = [k for k in hparams if k in axes or k in study.overrides]
    if clash:
        msg = (
            f"hyper-parameter(s) {clash} are also set as grid axes or --overrides; give each "
            "key in one place only"
        )
        raise ValueError(msg)
    axes.update({key: [value] for key, value in study.overrides.items()})
    return variants, axes, hparams


def study_grid(study: StudyGrid) -> Grid:
    """The sweep grid of a study: the grid file (or built-in grid) narrowed as asked.

    The hyper-parameters become axes after the other non-seed axes (so that every variant
    runs every combination), before the seed axes.

    Raises:
        ValueError: for an unknown variant, an empty selection, or a hyper-parameter that is
            also an axis or an override.
    """
    variants, axes, hparams = _study_axes(study)
    seeds = {k: v for k, v in axes.items() if is_seed_key(k) and len(v) > 1}
    rest = {k: v for k, v in axes.items() if k not in seeds}
    return Grid(axes={**rest, **hparams, **seeds}, variants=variants)


def _grid_text(grid: Grid, hparams: dict[str, list[Any]]) -> str:
    """The YAML of a study grid (``variants:``, ``hparams:``, the axes), kept in ``grid.yaml``."""
    axes = {k: v for k, v in grid.axes.items() if k != VARIANT and k not in hparams}
    head = {"variants": grid.variants, **({HPARAMS: hparams} if hparams else {})}
    text = yaml.safe_dump({**head, **axes}, sort_keys=False)
    return "# the grid of a cmpt study (written by cmpt study)\n" + text


def _write_grid(text: str, path: Path) -> None:
    """Write ``grid.yaml`` atomically (a reader never sees half a file, a failure leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _fits(grid: Grid) -> str:
    """How many fits a grid holds, and of what: ``24 fits (2 variant x 2 lr x ...)``."""
    aliases = key_aliases(grid.varying)
    parts = " x ".join(f"{len(grid.axes[k])} {aliases[k]}" for k in grid.varying)
    count = len(expand_grid(grid))
    return f"{count} fit{'s' if count != 1 else ''} ({parts or 'one cell'})"


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
    study = study or StudyGrid()
    grid, hparams = study_grid(study), _study_axes(study)[2]
    text = _grid_text(grid, hparams)
    grid_file = out / "grid.yaml"
    paths = [configs] if isinstance(configs, str | Path) else list(configs)
    launch.setdefault("executor", "debug")
    launch.setdefault("test_types", list(TEST_TYPES))
    settings = launch_settings({"config": paths, **launch}, grid=grid_file, out=out)
    print(f"the study has {_fits(grid)}")
    # grid.yaml is the grid that ran: written only once the sweep's checks pass and it starts
    # (a dry run, a bad grid or a refused re-run leaves the study directory as it was)
    report = launch_sweep(settings, grid, on_start=lambda _: _write_grid(text, grid_file))
    if settings.dry_run:
        print(f"the study's grid (kept as {grid_file} when the study runs):\n{text}")
    if report.failures:
        msg = f"{len(report.failures)} run(s) of the study failed:\n{report.summary()}"
        raise RuntimeError(msg)
    if settings.dry_run or report.in_progress or not settings.waits:
        return None
    return summarize_study(out)


def summarize_study(out: str | Path) -> Path:
    """Write a study directory's study.csv, study_pairs.csv, study.md and study.png.

    The finished cells are read with their per-seed values, the hyper-parameters selected on
    validation (:func:`~cmpt_lightning.study_results.read_study`), and ``cmpt`` compared with
    every other method on paired seeds (:mod:`cmpt_lightning.study_tables`). The sweep's own
    ``results.csv`` (mean and std over seeds of every train cell) is written as well.

    Args:
        out: the study directory written by :func:`run_study`.

    Returns:
        The path of ``study.md``.

    Raises:
        FileNotFoundError: when ``out`` holds no study (no ``grid.yaml``).
        ValueError: when no cell has finished, or hyper-parameters cannot be selected because
            cells record no validation score.
    """
    out = Path(out)
    grid_file = out / "grid.yaml"
    if not grid_file.is_file():
        msg = f"{grid_file} does not exist; run the study first (cmpt study --out {out})"
        raise FileNotFoundError(msg)
    grid, hparams = load_study_grid(grid_file)
    collect_sweep(out)
    manifest = json.loads((out / "manifest.json").read_text())
    results = read_study(out, manifest, list(hparams))
    methods = list(dict.fromkeys(c.method for c in results.cells))
    reference = REFERENCE if REFERENCE in methods else methods[0]
    total, controls = len(manifest["cells"]), controls_of(grid.variants)
    return write_outputs(results, out, reference, total=total, controls=controls)


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
    names = ("grid", "variants", "seeds", "train_rates", "hparams")
    study = StudyGrid(**{k: values.pop(k) for k in names})
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
