"""What a study directory holds: every finished cell's per-seed results, selected on validation.

A study's cell is one fit: a task (``data.init_args.task``, when the grid has it), a training
regime (the other varying keys, e.g. the training missing rate), a method (the grid's
``variant``), a hyper-parameter combination (the study grid's ``hparams:``) and a replicate (the
values of the seed keys: ``seed_everything``, the world's ``data.init_args.seed``). Its
``DONE`` marker records the checkpoint callback's best validation score, its ``sweep.csv`` the
test metrics of the best checkpoint per test cell.

Selection: for each (task, regime, method), the hyper-parameter combination with the best mean
validation score over its replicates; ties go to the first combination in grid order. Only the
selected combination's test numbers are reported.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sweep.grid import VARIANT, key_aliases
from .sweep.job import CellState

__all__ = [
    "CASES",
    "TASK",
    "TRAIN_RATE",
    "CellResult",
    "Selection",
    "StudyResults",
    "TestCell",
    "read_study",
    "select_on_validation",
]

#: The grid key of the world's task: one study per task inside the study directory.
TASK = "data.init_args.task"
#: The grid key of the training missing rate (always part of the regime when the grid sets it).
TRAIN_RATE = "data.init_args.train_missing.rate"
#: The availability cases of the tables: label -> (test missing type, test missing rate).
CASES = {
    "complete": ("both", 0.0),
    "text missing (image only)": ("text", 1.0),
    "image missing (text only)": ("image", 1.0),
}
#: A clean test row's corruption (sweep.csv rows without a ``corruption`` column are clean).
CLEAN = "none"


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True, order=True)
class TestCell:
    """One test condition of a cell's one-pass test sweep.

    Attributes:
        corruption: the test-time corruption kind (``none`` on clean rows).
        level: its level (0 on clean rows).
        type: the test missing type (``text``, ``image``, ``both``).
        rate: the test missing rate.
    """

    corruption: str
    level: float
    type: str
    rate: float

    @classmethod
    def of(cls, row: Mapping[str, str]) -> TestCell:
        """The test cell of a ``sweep.csv`` row."""
        corruption = str(row.get("corruption") or CLEAN)
        level = 0.0 if corruption == CLEAN else _number(row.get("level"))
        return cls(corruption, level, str(row["type"]), _number(row["rate"]))

    @property
    def case(self) -> str:
        """The availability case's label (``complete``, ...), else ``both <rate>``."""
        for label, spot in CASES.items():
            if (self.type, self.rate) == spot:
                return label
        return f"{self.type} {self.rate:g}"


@dataclass
class CellResult:
    """One finished cell of a study.

    Attributes:
        name: the cell's directory name.
        task: its task ("" when the grid has none).
        regime: (alias, value) of its other non-seed varying keys (the training regime).
        method: its variant (``base`` without variants).
        hparams: its values of the study's hyper-parameter keys, in their order.
        replicate: its values of the seed keys, in their order.
        metric: the task's main metric (from ``sweep.json``).
        val_score: the checkpoint callback's best validation score (nan if unknown).
        mode: ``max`` or ``min``: which validation scores are better.
        values: test cell -> metric -> value.
        samples: the test set's size (from ``sweep.json``; None if unknown).
    """

    name: str
    task: str
    regime: tuple[tuple[str, Any], ...]
    method: str
    hparams: tuple[Any, ...]
    replicate: tuple[Any, ...]
    metric: str
    val_score: float
    mode: str
    values: dict[TestCell, dict[str, float]]
    samples: int | None = None


@dataclass
class Selection:
    """The hyper-parameters chosen on validation for one (task, regime, method).

    Attributes:
        hparams: the chosen combination.
        val_score: its mean validation score over its replicates.
        cells: its cells, one per replicate.
        candidates: every combination that ran -> its mean validation score.
    """

    hparams: tuple[Any, ...]
    val_score: float
    cells: list[CellResult]
    candidates: dict[tuple[Any, ...], float] = field(default_factory=dict)

    def values(self, test: TestCell, metric: str) -> dict[tuple[Any, ...], float]:
        """Replicate -> the selection's value of ``metric`` in the test cell ``test``."""
        return {
            c.replicate: c.values.get(test, {}).get(metric, math.nan)
            for c in self.cells
            if test in c.values
        }


@dataclass
class StudyResults:
    """A study directory's finished cells and their selections.

    Attributes:
        cells: the finished cells.
        missing: the cells not finished (left out).
        hparam_keys: the study's hyper-parameter keys, in grid order.
        seed_keys: the seed keys the replicates are made of.
        seed_values: seed key -> the values the grid gives it.
        aliases: short names of the grid's keys (``init_args`` dropped).
        selections: (task, regime, method) -> its selection.
    """

    cells: list[CellResult]
    missing: list[str]
    hparam_keys: list[str]
    seed_keys: list[str]
    seed_values: dict[str, list[Any]]
    aliases: dict[str, str]
    selections: dict[tuple[str, tuple[tuple[str, Any], ...], str], Selection]

    @property
    def tasks(self) -> list[str]:
        """The tasks, in the order of the cells."""
        return list(dict.fromkeys(c.task for c in self.cells))

    def regimes(self, task: str) -> list[tuple[tuple[str, Any], ...]]:
        """A task's training regimes, in the order of the cells."""
        return list(dict.fromkeys(c.regime for c in self.cells if c.task == task))

    def methods(self, task: str) -> list[str]:
        """A task's methods, in the order of the cells."""
        return list(dict.fromkeys(c.method for c in self.cells if c.task == task))

    def metric(self, task: str) -> str:
        """A task's main metric (the first of its cells')."""
        return next(c.metric for c in self.cells if c.task == task)

    def test_cells(self, task: str) -> list[TestCell]:
        """Every test cell of a task's cells, sorted."""
        return sorted({t for c in self.cells if c.task == task for t in c.values})

    def metrics(self, task: str) -> list[str]:
        """Every metric of a task's ``sweep.csv`` rows, in their order."""
        found: dict[str, None] = {}
        for cell in self.cells:
            if cell.task == task:
                for values in cell.values.values():
                    found.update(dict.fromkeys(values))
        return list(found)

    def samples(self) -> list[int]:
        """The test-set sizes the cells report."""
        return sorted({c.samples for c in self.cells if c.samples is not None})


def _metrics_csv_score(run_dir: Path) -> float:
    """The best ``val/score`` in the run's ``metrics.csv`` (markers of cmpt before 0.3)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return math.nan
    with path.open(newline="") as f:
        scores = [_number(row.get("val/score")) for row in csv.DictReader(f)]
    scores = [s for s in scores if not math.isnan(s)]
    return max(scores) if scores else math.nan


def _read_cell(
    directory: Path,
    overrides: Mapping[str, Any],
    regime_keys: Sequence[tuple[str, str]],
    hparam_keys: Sequence[str],
    seed_keys: Sequence[str],
) -> CellResult | None:
    """A finished cell (None when it has not finished).

    Args:
        directory: the cell's directory.
        overrides: its grid values (``manifest.json``).
        regime_keys: (key, alias) of the keys that make the training regime.
        hparam_keys: the hyper-parameter keys.
        seed_keys: the seed keys.
    """
    done = CellState.read(directory).done
    path = directory / str((done or {}).get("sweep_csv", ""))
    if done is None or not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    info_path = path.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    values: dict[TestCell, dict[str, float]] = {}
    for row in rows:
        skip = {"type", "rate", "corruption", "level"}
        metrics = {
            k: _number(v) for k, v in row.items() if k not in skip and not k.startswith("count_")
        }
        values[TestCell.of(row)] = metrics
    metric = info.get("main_metric") or next(iter(next(iter(values.values()), {})), "")
    score = _number(done.get("val_score"))
    if math.isnan(score):
        score = _metrics_csv_score(path.parent)
    samples = (info.get("settings") or {}).get("samples")
    return CellResult(
        name=directory.name,
        task=str(overrides.get(TASK, "")),
        regime=tuple((alias, overrides.get(key)) for key, alias in regime_keys),
        method=str(overrides.get(VARIANT, "base")),
        hparams=tuple(overrides.get(k) for k in hparam_keys),
        replicate=tuple(overrides.get(k) for k in seed_keys),
        metric=str(metric),
        val_score=score,
        mode=str(done.get("val_mode") or "max"),
        values=values,
        samples=int(samples) if isinstance(samples, int | float) else None,
    )


def select_on_validation(
    cells: Sequence[CellResult], order: Sequence[tuple[Any, ...]]
) -> dict[tuple[str, tuple[tuple[str, Any], ...], str], Selection]:
    """For each (task, regime, method), the combination with the best mean validation score.

    Args:
        cells: the finished cells.
        order: the hyper-parameter combinations in grid order (ties go to the first).

    Returns:
        (task, regime, method) -> its selection.

    Raises:
        ValueError: when several combinations ran but a cell has no validation score.
    """
    rank = {combo: i for i, combo in enumerate(order)}
    groups: dict[tuple[str, tuple[tuple[str, Any], ...], str], list[CellResult]] = {}
    for cell in cells:
        groups.setdefault((cell.task, cell.regime, cell.method), []).append(cell)
    selections = {}
    for key, group in groups.items():
        combos: dict[tuple[Any, ...], list[CellResult]] = {}
        for cell in sorted(group, key=lambda c: rank.get(c.hparams, len(rank))):
            combos.setdefault(cell.hparams, []).append(cell)
        if len(combos) > 1:
            unscored = [c.name for c in group if math.isnan(c.val_score)]
            if unscored:
                msg = (
                    f"cells {unscored} record no validation score (their DONE marker has no "
                    "val_score and their run has no metrics.csv with val/score), so their "
                    "hyper-parameters cannot be selected on validation; delete their DONE "
                    "markers and re-run the study to run them again"
                )
                raise ValueError(msg)
        sign = -1.0 if group[0].mode == "min" else 1.0
        candidates = {
            combo: math.fsum(c.val_score for c in members) / len(members)
            for combo, members in combos.items()
        }
        best = next(iter(candidates))
        for combo, score in candidates.items():  # in grid order: a strict > keeps the first
            held = candidates[best]
            if not math.isnan(score) and (math.isnan(held) or sign * score > sign * held):
                best = combo
        selections[key] = Selection(best, candidates[best], combos[best], candidates)
    return selections


def read_study(out: Path, manifest: Mapping[str, Any], hparam_keys: Sequence[str]) -> StudyResults:
    """Read a study directory's finished cells and select their hyper-parameters on validation.

    Args:
        out: the study directory.
        manifest: its ``manifest.json``.
        hparam_keys: the study grid's hyper-parameter keys, in grid order.

    Raises:
        ValueError: when no cell has finished.
    """
    varying: list[str] = list(manifest["varying"])
    seeds: list[str] = list(manifest["seed_keys"])
    grid: dict[str, list[Any]] = manifest["grid"]
    aliases = key_aliases(list(grid))
    skip = {VARIANT, TASK, *hparam_keys, *seeds}
    regime = [k for k in varying if k not in skip]
    if TRAIN_RATE in grid and TRAIN_RATE not in regime:  # a single training rate: still shown
        regime.insert(0, TRAIN_RATE)
    regime_keys = [(k, aliases[k]) for k in regime]
    cells, missing = [], []
    for entry in manifest["cells"]:
        cell = _read_cell(out / entry["name"], entry["overrides"], regime_keys, hparam_keys, seeds)
        if cell is None:
            missing.append(entry["name"])
        else:
            cells.append(cell)
    if not cells:
        msg = f"no cell of the study {str(out)!r} has finished; run (or re-run) cmpt study first"
        raise ValueError(msg)
    order = list(itertools.product(*(grid.get(k, [None]) for k in hparam_keys)))
    return StudyResults(
        cells=cells,
        missing=missing,
        hparam_keys=list(hparam_keys),
        seed_keys=seeds,
        seed_values={k: list(grid[k]) for k in seeds},
        aliases=aliases,
        selections=select_on_validation(cells, order),
    )
