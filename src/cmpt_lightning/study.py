"""``cmpt study``: CMPT against the baselines on the same data, masks and metrics.

Trains every method variant for several seeds under one or more training regimes (training
missing rates), evaluates each with the one-pass sweep over test-time missing rates and types,
and writes ``study.csv`` (every cell, mean and std over seeds), ``study.md`` (the tables) and
``study.png`` (the main metric against the test missing rate, per method). A finished run is
kept (``DONE``), so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .missing import DEFAULT_RATES

__all__ = ["VARIANTS", "main", "run_study", "summarize_study"]

#: The compared methods: name -> CLI overrides of the base config.
VARIANTS: dict[str, list[str]] = {
    "cmpt": [],
    "cmpt_no_align": ["--model.init_args.align_weight", "0"],
    "zero_fill": ["--model.init_args.method", "zero_fill"],
    "learned_token": ["--model.init_args.method", "learned_token"],
    "modality_dropout": ["--model.init_args.method", "modality_dropout"],
}

_CASES = {"complete": ("both", 0.0), "text missing": ("text", 1.0), "image missing": ("image", 1.0)}


def _fit_and_sweep(run_dir: Path, config: str, args: list[str]) -> Path:
    from .main import main

    run_dir.mkdir(parents=True, exist_ok=True)
    logger = json.dumps({"class_path": "CSVLogger", "init_args": {"save_dir": str(run_dir)}})
    try:
        main(
            [
                "fit", "--config", config, *args,
                "--trainer.default_root_dir", str(run_dir),
                "--trainer.logger", logger,
                "--trainer.enable_progress_bar", "false",
                "--test_after_fit", "true",
            ]
        )  # fmt: skip
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            msg = f"the study run in {run_dir} failed with status {exit_.code} (args: {args})"
            raise RuntimeError(msg) from exit_
    sweeps = sorted(run_dir.rglob("sweep.csv"), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        msg = f"the study run in {run_dir} wrote no sweep.csv"
        raise RuntimeError(msg)
    return sweeps[-1]


def run_study(
    config: str,
    out: str | Path,
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    seeds: Sequence[int] = (0, 1, 2),
    train_rates: Sequence[float] = (0.0, 0.7),
    test_rates: Sequence[float] = tuple(DEFAULT_RATES),
    extra: Sequence[str] = (),
) -> Path:
    """Train and evaluate every (training rate, variant, seed), then summarize.

    Args:
        config: the base ``cmpt fit`` config (e.g. ``configs/demo.yaml``).
        out: the study directory.
        variants: names from :data:`VARIANTS`.
        seeds: values of ``seed_everything`` (data order, modality dropout).
        train_rates: training missing rates (type ``both``), one regime each.
        test_rates: the one-pass sweep's test missing rates (types text, image, both).
        extra: further CLI overrides for every run (e.g. smaller data for a quick look).

    Returns:
        The path of ``study.md``.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        msg = f"unknown study variants {unknown}; choose from {list(VARIANTS)}"
        raise ValueError(msg)
    if not seeds or not variants or not train_rates:
        msg = "a study needs at least one variant, one seed and one training rate"
        raise ValueError(msg)
    out = Path(out)
    records = []
    for rate in train_rates:
        for variant in variants:
            for seed in seeds:
                run_dir = out / f"train_rate={rate:g}" / variant / f"seed={seed}"
                done = run_dir / "DONE"
                if done.is_file():
                    sweep = Path(done.read_text().strip())
                else:
                    args = [
                        *VARIANTS[variant],
                        "--seed_everything", str(seed),
                        "--data.init_args.train_missing.rate", str(rate),
                        "--data.init_args.train_missing.type", "both",
                        "--model.init_args.sweep.rates", json.dumps(list(test_rates)),
                        "--model.init_args.sweep.types", "[text, image, both]",
                        *extra,
                    ]  # fmt: skip
                    sweep = _fit_and_sweep(run_dir, config, args)
                    done.write_text(f"{sweep}\n")
                records.append(
                    {"train_rate": rate, "variant": variant, "seed": seed, "sweep": str(sweep)}
                )
    (out / "runs.json").write_text(json.dumps(records, indent=2) + "\n")
    return summarize_study(out)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize_study(out: str | Path) -> Path:
    """Aggregate a study directory (its ``runs.json``) into study.csv, study.md and study.png.

    Args:
        out: the study directory written by :func:`run_study`.

    Returns:
        The path of ``study.md``.
    """
    out = Path(out)
    runs_file = out / "runs.json"
    if not runs_file.is_file():
        msg = f"{runs_file} does not exist; run the study first (cmpt study --out {out})"
        raise FileNotFoundError(msg)
    runs = json.loads(runs_file.read_text())
    values: dict[tuple[float, str, str, float, str], list[float]] = defaultdict(list)
    metric = ""
    for run in runs:
        with Path(run["sweep"]).open() as f:
            for row in csv.DictReader(f):
                if not metric:
                    metric = next(k for k in row if k not in ("type", "rate"))
                key = (run["train_rate"], run["variant"], row["type"], float(row["rate"]), metric)
                values[key].append(float(row[metric]))
    rows: list[dict[str, Any]] = []
    for (train_rate, variant, kind, rate, name), vals in sorted(values.items()):
        mean, std = _mean_std(vals)
        rows.append(
            {"train_rate": train_rate, "variant": variant, "type": kind, "rate": rate,
             "metric": name, "mean": mean, "std": std, "seeds": len(vals)}
        )  # fmt: skip
    with (out / "study.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = {(r["train_rate"], r["variant"], r["type"], r["rate"]): r for r in rows}
    lines = [
        "# CMPT against the baselines",
        "",
        f"Test {metric} (mean ± std over {rows[0]['seeds']} seeds), per training regime. "
        "Columns: availability cases, then missing rates of type `both` (half of the missing "
        "samples lack the image, half the text). Written by `cmpt study`.",
    ]
    rates = sorted({r["rate"] for r in rows if r["type"] == "both"})
    for train_rate in sorted({r["train_rate"] for r in rows}):
        lines += ["", f"## Trained with {train_rate:.0%} of samples missing a modality", ""]
        header = ["method", *_CASES, *(f"both {r:g}" for r in rates)]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cells = [variant]
            for kind, rate in [*_CASES.values(), *(("both", r) for r in rates)]:
                cell = table.get((train_rate, variant, kind, rate))
                cells.append(f"{cell['mean']:.3f} ± {cell['std']:.3f}" if cell else "-")
            lines.append("| " + " | ".join(cells) + " |")
    (out / "study.md").write_text("\n".join(lines) + "\n")
    _plot(rows, metric, out / "study.png")
    return out / "study.md"


def _plot(rows: list[dict[str, Any]], metric: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    regimes = sorted({r["train_rate"] for r in rows})
    kinds = ["text", "image", "both"]
    fig, axes = plt.subplots(
        len(regimes), len(kinds), figsize=(4 * len(kinds), 3.2 * len(regimes)),
        squeeze=False, sharey=True, dpi=110,
    )  # fmt: skip
    for i, train_rate in enumerate(regimes):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            for variant in dict.fromkeys(r["variant"] for r in rows):
                cells = [
                    r for r in rows
                    if (r["train_rate"], r["variant"], r["type"]) == (train_rate, variant, kind)
                ]  # fmt: skip
                x = [c["rate"] for c in cells]
                y = [c["mean"] for c in cells]
                s = [c["std"] for c in cells]
                ax.plot(x, y, marker="o", markersize=3, label=variant)
                ax.fill_between(x, [a - b for a, b in zip(y, s, strict=True)],
                                [a + b for a, b in zip(y, s, strict=True)], alpha=0.15)  # fmt: skip
            ax.set_title(f"train missing {train_rate:.0%}; test missing: {kind}", fontsize=9)
            ax.set_xlabel("test missing rate")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(metric)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``cmpt study [--config C] [--out DIR] [--seeds ...] [--variants ...] [-- overrides]``."""
    parser = argparse.ArgumentParser(prog="cmpt study", description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml", help="the base fit config")
    parser.add_argument("--out", default="runs/study", help="the study directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-rates", type=float, nargs="+", default=[0.0, 0.7])
    parser.add_argument("--test-rates", type=float, nargs="+", default=list(DEFAULT_RATES))
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after '--': overrides passed to every cmpt fit"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    extra = [a for a in args.extra if a != "--"]
    path = run_study(
        args.config,
        args.out,
        variants=args.variants,
        seeds=args.seeds,
        train_rates=args.train_rates,
        test_rates=args.test_rates,
        extra=extra,
    )
    print(path.read_text())
    return 0
