r"""Gather the world study's six `cmpt study` runs into docs/results/world/.

The study (docs/results/README.md) is one `cmpt study` per task and training-set size, each
7 variants x 2 training regimes x 3 seeds, run by:

    for task in objects tags claims; do for size in 1024 256; do
      cmpt study --config configs/demo.yaml --out runs/world_study/$task-$size \\
        --executor local --parallelism 2 \\
        --overrides "{data.init_args.task: $task, data.init_args.train_size: $size}"
    done; done

This script copies each run's study.md, study.csv and study.png to
docs/results/world/<task>-<size>.*, and writes docs/results/world/summary.md: per task, the main
metric (mean ± std over the seeds) of every variant with the text missing, the image missing,
complete, and at 70% missing of type both, for every training regime and size.

    python scripts/summarize_world_study.py [--runs runs/world_study] [--out docs/results/world]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

TASKS = {"objects": "accuracy", "tags": "F1 macro", "claims": "AUROC"}
SIZES = (1024, 256)
CASES = {  # column -> (type, rate) of the test grid
    "text missing": ("text", 1.0),
    "image missing": ("image", 1.0),
    "complete": ("both", 0.0),
    "both 0.7": ("both", 0.7),
}
ORDER = (
    "cmpt",
    "cmpt_proxy_task",
    "cmpt_no_align",
    "cross_copy",
    "zero_fill",
    "learned_token",
    "modality_dropout",
)


def _cells(path: Path) -> dict[tuple[float, str, str, float], tuple[float, float]]:
    """(train rate, variant, type, rate) -> (mean, std) of a study.csv."""
    out = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            key = (float(row["train_rate"]), row["variant"], row["type"], float(row["rate"]))
            out[key] = (float(row["mean"]), float(row["std"]))
    return out


def summarize(runs: Path, out: Path) -> Path:
    """Copy the runs' outputs into ``out`` and write ``out/summary.md``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# The world study: every task, size and regime at a glance",
        "",
        "Mean ± std over 3 seeds of each task's main metric on its 512 test samples. Columns:",
        "the test-time case (text missing = image-only samples; image missing = text-only",
        "samples), for each training regime (complete training data, or 70% of samples missing",
        "a modality, half each) and training-set size. Written by",
        "`scripts/summarize_world_study.py` from the `cmpt study` runs; per-run tables with every",
        "missing rate are in `<task>-<size>.md`, plots in `<task>-<size>.png`.",
    ]
    for task, metric in TASKS.items():
        studies = {}
        for size in SIZES:
            folder = runs / f"{task}-{size}"
            if not (folder / "study.csv").is_file():
                continue
            for suffix in ("md", "csv", "png"):
                source = folder / f"study.{suffix}"
                if source.is_file():
                    shutil.copyfile(source, out / f"{task}-{size}.{suffix}")
            studies[size] = _cells(folder / "study.csv")
        if not studies:
            lines += ["", f"## {task} ({metric})", "", "Not run."]
            continue
        for case, (kind, rate) in CASES.items():
            lines += ["", f"## {task} ({metric}), {case}", ""]
            header = ["method"]
            for train_rate in (0.0, 0.7):
                for size in studies:
                    header.append(f"train {int(train_rate * 100)}% missing, n={size}")
            lines.append("| " + " | ".join(header) + " |")
            lines.append("| " + " | ".join("---" for _ in header) + " |")
            for variant in ORDER:
                row = [variant]
                for train_rate in (0.0, 0.7):
                    for cells in studies.values():
                        cell = cells.get((train_rate, variant, kind, rate))
                        row.append("-" if cell is None else f"{cell[0]:.3f} ± {cell[1]:.3f}")
                lines.append("| " + " | ".join(row) + " |")
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    """Summarize the world study (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/world_study"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/world"))
    options = parser.parse_args()
    print(f"wrote {summarize(options.runs, options.out)}")


if __name__ == "__main__":
    main()
