"""The figures of ``cmpt sweep collect`` and ``cmpt study`` (drawn when matplotlib is installed).

Every figure uses matplotlib's constrained layout, which fits the titles, tick labels, axis
labels and colorbar inside the figure at any grid size. ``_heatmap_figure`` and
``_curves_figure`` build a figure without saving it (the tests measure its text).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .results import SweepResults

__all__ = ["plot_curves", "plot_heatmap", "plot_study"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _line_with_band(
    ax: Any, x: list[float], mean: list[float], std: list[float], label: str
) -> None:
    """A line of means with mean ± std shaded (where a std is known)."""
    (line,) = ax.plot(x, mean, marker="o", markersize=3, label=label)
    if any(not math.isnan(s) for s in std):
        spread = [0.0 if math.isnan(s) else s for s in std]
        ax.fill_between(
            x,
            [m - s for m, s in zip(mean, spread, strict=True)],
            [m + s for m, s in zip(mean, spread, strict=True)],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )


def _layout(result: SweepResults) -> tuple[list[str], list[float], list[str], dict]:
    """Test types, test rates, train cell labels, and (train label, type, rate) -> row."""
    types = list(dict.fromkeys(r["test_type"] for r in result.rows))
    rates = sorted({float(r["test_rate"]) for r in result.rows})
    columns = result.train_columns
    cells: dict[tuple[str, str, float], dict[str, Any]] = {}
    labels: list[str] = []
    for row in result.rows:
        if len(columns) == 1:
            label = f"{row[columns[0]]}"
        else:
            label = ", ".join(f"{c}={row[c]}" for c in columns) or "all"
        labels.append(label)
        cells[(label, row["test_type"], float(row["test_rate"]))] = row
    return types, rates, list(dict.fromkeys(labels)), cells


def _seeds_note(result: SweepResults) -> str:
    seeds = sorted({int(r["n_seeds"]) for r in result.rows})
    counts = "/".join(str(s) for s in seeds)
    return f"mean over {counts} seed{'s' if seeds != [1] else ''}"


def _heatmap_figure(plt: Any, result: SweepResults, train_label: str) -> Any:
    """The figure of :func:`plot_heatmap` (not saved, not closed)."""
    metric, (types, rates, labels, cells) = result.main_metric, _layout(result)
    grids = []
    for missing_type in types:
        grid = [
            [
                cells.get((label, missing_type, rate), {}).get(f"{metric}_mean", math.nan)
                for rate in rates
            ]
            for label in labels
        ]
        grids.append(grid)  # shape = [train cells, test rates]
    finite = [v for g in grids for row in g for v in row if not math.isnan(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    width = max(4.0, 0.55 * len(rates) + 1.5)
    fig, axes = plt.subplots(
        1,
        len(types),
        figsize=(width * len(types) + 1.0, 0.45 * len(labels) + 2.4),
        dpi=120,
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, missing_type, grid in zip(axes[0], types, grids, strict=True):
        image = ax.imshow(grid, vmin=low, vmax=high, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("test missing rate")
        ax.set_title(f"test missing: {missing_type}")
        if len(rates) * len(labels) <= 160:
            for i, row in enumerate(grid):
                for j, value in enumerate(row):
                    if not math.isnan(value):
                        shade = "white" if value < (low + high) / 2 else "black"
                        ax.text(
                            j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=shade
                        )
    axes[0][0].set_ylabel(train_label)
    fig.colorbar(image, ax=axes[0].tolist(), label=metric, shrink=0.9)
    fig.suptitle(f"{metric}, {_seeds_note(result)}")
    return fig


def plot_heatmap(result: SweepResults, path: Path, train_label: str = "train cell") -> bool:
    """Heatmap of the main metric: train cell (rows) x test missing rate, one panel per type.

    Returns:
        False when matplotlib is not installed (nothing written).
    """
    return _save(_heatmap_figure, result, path, train_label)


def _save(figure: Any, result: SweepResults, path: Path, train_label: str) -> bool:
    """Build a figure with ``figure(plt, result, train_label)``, write it to ``path``, close it."""
    plt = _pyplot()
    if plt is None:
        return False
    fig = figure(plt, result, train_label)
    fig.savefig(path)
    plt.close(fig)
    return True


def _curves_figure(plt: Any, result: SweepResults, train_label: str) -> Any:
    """The figure of :func:`plot_curves` (not saved, not closed)."""
    metric = result.main_metric
    types, rates, labels, cells = _layout(result)
    fig, axes = plt.subplots(
        1,
        len(types),
        figsize=(4.2 * len(types), 3.8),
        dpi=120,
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, missing_type in zip(axes[0], types, strict=True):
        for label in labels:
            rows = [cells.get((label, missing_type, r)) for r in rates]
            points = [(r, row) for r, row in zip(rates, rows, strict=True) if row is not None]
            x = [r for r, _ in points]
            mean = [row[f"{metric}_mean"] for _, row in points]
            std = [row[f"{metric}_std"] for _, row in points]
            _line_with_band(ax, x, mean, std, label)
        ax.set_title(f"test missing: {missing_type}")
        ax.set_xlabel("test missing rate")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(title=train_label, fontsize=8)
    fig.suptitle(f"{metric} against the test missing rate ({_seeds_note(result)}, ± std shaded)")
    return fig


def plot_curves(result: SweepResults, path: Path, train_label: str = "train cell") -> bool:
    """The main metric against the test missing rate, one panel per missing type.

    One line per train cell (mean over seeds), shaded mean ± std where there are several seeds.

    Returns:
        False when matplotlib is not installed (nothing written).
    """
    return _save(_curves_figure, result, path, train_label)


def plot_study(rows: list[dict[str, Any]], path: Path) -> bool:
    """``cmpt study``'s figure: the main metric against the test missing rate, one line per method.

    One row of panels per training regime, one column per test missing type; mean ± std over
    seeds shaded.

    Args:
        rows: the study's rows (``train_rate``, ``variant``, ``type``, ``rate``, ``metric``,
            ``mean``, ``std``).
        path: the PNG to write.

    Returns:
        False when matplotlib is not installed (nothing written).
    """
    plt = _pyplot()
    if plt is None:
        return False
    regimes = sorted({r["train_rate"] for r in rows})
    kinds = list(dict.fromkeys(r["type"] for r in rows))
    fig, axes = plt.subplots(
        len(regimes),
        len(kinds),
        figsize=(4 * len(kinds), 3.2 * len(regimes)),
        squeeze=False,
        sharey=True,
        dpi=110,
        layout="constrained",
    )
    for i, train_rate in enumerate(regimes):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for variant in dict.fromkeys(r["variant"] for r in rows):
                cells = [
                    r
                    for r in rows
                    if (r["train_rate"], r["variant"], r["type"]) == (train_rate, variant, kind)
                ]
                x = [c["rate"] for c in cells]
                _line_with_band(
                    ax, x, [c["mean"] for c in cells], [c["std"] for c in cells], variant
                )
            ax.set_title(f"train missing {train_rate:.0%}; test missing: {kind}", fontsize=9)
            ax.set_xlabel("test missing rate")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(rows[0]["metric"])
    axes[0][-1].legend(fontsize=8)
    fig.savefig(path)
    plt.close(fig)
    return True
