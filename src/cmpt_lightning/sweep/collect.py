"""``cmpt sweep collect RUN_DIR``: every cell's test sweep in one table, averaged over seeds.

A "train cell" is a grid point without its seed keys (``seed_everything``, ``*.seed``,
``*_seed``); a "test cell" is a (test missing type, test missing rate) of the one-pass test sweep,
and, when a cell's test grid had corruptions (``--test_corruptions``), its ``corruption`` and
``level`` (a ``sweep.csv`` without these columns is clean: ``none`` and 0.0).
``results.csv`` has one row per train cell x test cell with each metric's mean and standard
deviation over the seeds (``ddof=1``; empty with a single seed) and their number, with the
columns ``corruption`` and ``level`` after ``test_rate`` when any cell has corrupted rows.
``results.md`` is the same as a markdown table; with matplotlib (clean rows only),
``heatmap.png`` shows the main metric over train cell (the train missing rate, for the usual
grid) x test rate per test type, and ``curves.png`` the main metric against the test rate per
type, one line per train cell with the seed spread shaded.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .job import CellState
from .plots import plot_curves, plot_heatmap
from .results import SweepResults

__all__ = ["SweepResults", "collect_sweep"]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    mean = math.fsum(values) / len(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def _read_cells(run_dir: Path, manifest: dict[str, Any]) -> tuple[list, list[str], str | None]:
    """(cell overrides, sweep rows, main metric) of every finished cell, and the unfinished."""
    finished, missing, main_metric = [], [], None
    for cell in manifest["cells"]:
        directory = run_dir / cell["name"]
        done = CellState.read(directory).done
        path = directory / str((done or {}).get("sweep_csv", ""))
        if done is None or not path.is_file():
            missing.append(cell["name"])
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        info = path.with_suffix(".json")
        if main_metric is None and info.is_file():
            main_metric = json.loads(info.read_text()).get("main_metric")
        finished.append((cell["overrides"], rows))
    return finished, missing, main_metric


#: The columns of a ``sweep.csv`` that name its test cell (the corruption pair is optional).
_TEST_KEYS = ("type", "rate", "corruption", "level")


def _corruption(row: dict[str, str]) -> tuple[str, float]:
    """A ``sweep.csv`` row's (corruption, level); ``("none", 0.0)`` for a clean or older row."""
    return row.get("corruption") or "none", _number(row.get("level") or "0")


def _aggregate(
    finished: list, train_keys: list[str], aliases: dict[str, str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Group the cells' rows by (train cell, corruption, level, type, rate); metric mean, std."""
    metrics = [k for k in finished[0][1][0] if k not in _TEST_KEYS and not k.startswith("count_")]
    corrupted = any("corruption" in rows[0] for _, rows in finished if rows)
    groups: dict[tuple[str, str, float, str, float], list[dict[str, str]]] = {}
    train_of: dict[str, dict[str, Any]] = {}
    for overrides, rows in finished:
        train = {aliases[k]: overrides[k] for k in train_keys}
        tag = json.dumps(train, sort_keys=True, default=str)
        train_of[tag] = train
        for row in rows:
            key = (tag, *_corruption(row), row["type"], _number(row["rate"]))
            groups.setdefault(key, []).append(row)
    out = []
    for (tag, kind, level, missing_type, rate), rows in groups.items():
        record: dict[str, Any] = {**train_of[tag], "test_type": missing_type, "test_rate": rate}
        if corrupted:
            record["corruption"], record["level"] = kind, level
        record["n_seeds"] = len(rows)
        for metric in metrics:
            mean, std = _mean_std([_number(r.get(metric, "nan")) for r in rows])
            record[f"{metric}_mean"], record[f"{metric}_std"] = mean, std
        out.append(record)
    return out, metrics


def _cell_text(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _cell_text(v) for k, v in row.items()} for row in rows)


def _write_markdown(result: SweepResults, n_cells: int, path: Path) -> None:
    corrupted = bool(result.rows) and "corruption" in result.rows[0]
    header = [*result.train_columns, "test type", "test rate"]
    header += [*(["corruption", "level"] if corrupted else []), *result.metrics, "seeds"]
    lines = [
        "# Sweep results",
        "",
        f"{n_cells} finished cell(s); metrics are mean ± std over seeds "
        f"(main metric: {result.main_metric}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for row in result.rows:
        values = [_cell_text(row[c]) for c in result.train_columns]
        values += [row["test_type"], f"{row['test_rate']:g}"]
        values += [row["corruption"], f"{row['level']:g}"] if corrupted else []
        for metric in result.metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            spread = "" if math.isnan(std) else f" ± {std:.4f}"
            values.append("nan" if math.isnan(mean) else f"{mean:.4f}{spread}")
        values.append(str(row["n_seeds"]))
        lines.append("| " + " | ".join(values) + " |")
    if result.missing:
        lines += ["", f"Not finished (left out): {', '.join(result.missing)}."]
    path.write_text("\n".join(lines) + "\n")


def collect_sweep(
    run_dir: str | Path, *, metric: str | None = None, seed_keys: Sequence[str] | None = None
) -> SweepResults:
    """Aggregate the finished cells of a ``cmpt sweep`` run directory and write the results.

    Args:
        run_dir: the sweep's ``--out`` directory (holds ``manifest.json`` and a folder per cell).
        metric: the metric of the plots (default: the task's main metric, e.g. ``acc``).
        seed_keys: grid keys averaged over (default: the grid's varying seed keys, see
            :func:`~cmpt_lightning.sweep.grid.is_seed_key`).

    Returns:
        The rows, the metrics, the cells left out and the paths written.
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        msg = f"{str(run_dir)!r} has no manifest.json; give the --out directory of a cmpt sweep"
        raise FileNotFoundError(msg)
    manifest = json.loads(manifest_path.read_text())
    finished, missing, main_metric = _read_cells(run_dir, manifest)
    if not finished:
        msg = f"no cell of {str(run_dir)!r} has finished; run (or re-run) the cmpt sweep first"
        raise ValueError(msg)
    varying: list[str] = manifest["varying"]
    seeds = list(manifest["seed_keys"] if seed_keys is None else seed_keys)
    unknown = [k for k in seeds if k not in varying]
    if unknown:
        msg = f"seed key(s) {unknown} are not varying keys of the grid; choose among {varying}"
        raise ValueError(msg)
    train_keys = [k for k in varying if k not in seeds]
    aliases = manifest["aliases"]
    rows, metrics = _aggregate(finished, train_keys, aliases)
    chosen = metric or main_metric or metrics[0]
    if chosen not in metrics:
        msg = f"metric {chosen!r} is not in the cells' sweep.csv; choose among {metrics}"
        raise ValueError(msg)
    result = SweepResults(rows, [aliases[k] for k in train_keys], metrics, chosen, missing, {})
    result.paths["csv"] = run_dir / "results.csv"
    _write_csv(rows, result.paths["csv"])
    result.paths["md"] = run_dir / "results.md"
    _write_markdown(result, len(finished), result.paths["md"])
    label = train_keys[0] if len(train_keys) == 1 else None
    clean = replace(result, rows=[r for r in rows if r.get("corruption", "none") == "none"])
    for kind, plot in (("heatmap", plot_heatmap), ("curves", plot_curves)):
        path = run_dir / f"{kind}.png"
        if plot(clean, path, train_label=_axis_label(label)):
            result.paths[kind] = path
    return result


def _axis_label(key: str | None) -> str:
    if key is None:
        return "train cell"
    if key.endswith("train_missing.rate"):
        return "train missing rate"
    return key.replace(".init_args", "")
