"""Benchmark 4: the one-pass sweep against one plain test pass.

The 11 x 3 (rate x type) grid of test-time missingness, evaluated from one encoding of the test
set (``case_logits`` + ``evaluate_cells``, what ``CMPTModule`` does with a ``test_grid``),
against one plain test pass configured with one cell (rate 0.7, type both), same model and data.
A loop over the cells would cost 33 passes. Target: at most 1.3.

Also times the sweep's metric arithmetic alone (``evaluate_cells``) on random logits at the real
test-set sizes of the three datasets, which is what the ratio depends on where the model is fast
(a GPU).

    python benchmarks/onepass_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import Report, add_common_args, fmt, resolve
from _steps import autocast, build_model, eval_mode, food_titles
from _timing import interleaved, synchronizer

from cmpt_lightning import CMPTModel, MissingPlan, Task
from cmpt_lightning.evaluation import CASE_ORDER, evaluate_cells, select_case_logits
from cmpt_lightning.metrics import availability_case, compute_metrics
from cmpt_lightning.models.clip import build_tokenizer

FULL = {"model": "ViT-B-16", "batch_size": 8, "repeats": 3, "warmup": 1, "samples": 48}
QUICK = {"model": "ViT-B-32", "batch_size": 8, "repeats": 3, "warmup": 1, "samples": 32}
RATES = tuple(i / 10 for i in range(11))
TYPES = ("text", "image", "both")
TARGET = 1.3
#: (task, test samples, classes) of UPMC Food-101, MM-IMDb and Hateful Memes (test_unseen).
REAL_SIZES = ((Task.MULTICLASS, 22716, 101), (Task.MULTILABEL, 7799, 23), (Task.BINARY, 2000, 1))


def _metrics(
    task: Task,
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    image: torch.Tensor,
    text: torch.Tensor,
) -> None:
    """What a plain test pass computes at its end: overall and per availability case."""
    compute_metrics(task, logits, labels, num_classes)
    for rows in availability_case(image, text).values():
        if bool(rows.any()):
            compute_metrics(task, logits[rows], labels[rows], num_classes)


def _labels(task: Task, n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    if task is Task.MULTILABEL:
        return (torch.rand(n, num_classes, generator=gen) < 0.2).float()
    return torch.randint(0, max(2, num_classes), (n,), generator=gen)


def cells_alone(task: Task, n: int, num_classes: int) -> float:
    """Seconds of ``evaluate_cells`` over the 11 x 3 grid on ``n`` random samples."""
    gen = torch.Generator().manual_seed(0)
    case_logits = torch.randn(n, 3, num_classes, generator=gen)
    labels = _labels(task, n, num_classes, gen)
    plan = MissingPlan([f"s{i}" for i in range(n)], seed=0)
    ones = torch.ones(n, dtype=torch.bool)
    start = time.perf_counter()
    evaluate_cells(
        task, num_classes, case_logits, labels, torch.arange(n), ones, ones, plan, RATES, TYPES, 0.5
    )
    return time.perf_counter() - start


def passes(model: CMPTModel, args: argparse.Namespace) -> dict[str, object]:
    """The plain test pass and the one-pass sweep over the same random test set."""
    n, size, device = args.samples, args.batch_size, args.device
    gen = torch.Generator().manual_seed(0)
    height, width = model.clip.visual.image_size  # type: ignore[union-attr]
    images = torch.randn(n, 3, height, width, generator=gen)
    texts = build_tokenizer(args.model)(food_titles(n))
    labels = torch.randint(0, model.num_classes, (n,), generator=gen)
    plan = MissingPlan([f"test-{i}" for i in range(n)], seed=0)
    image_cell, text_cell = plan.masks(0.7, "both")  # the configured cell of the plain pass
    ones = torch.ones(n, dtype=torch.bool)
    batches = [slice(i, min(i + size, n)) for i in range(0, n, size)]
    cast = autocast(device, args.precision)
    task = Task.MULTICLASS

    def plain() -> None:
        logits = []
        with eval_mode(model), cast():
            for rows in batches:
                out = model(
                    images[rows].to(device),
                    texts[rows].to(device),
                    image_cell[rows].to(device),
                    text_cell[rows].to(device),
                )
                logits.append(out.logits.float().cpu())
        _metrics(task, torch.cat(logits), labels, model.num_classes, image_cell, text_cell)

    def sweep() -> None:
        stacked = []
        with eval_mode(model), cast():
            for rows in batches:
                present = ones[rows].to(device)
                features = model.encode(
                    images[rows].to(device), texts[rows].to(device), present, present
                )
                cases = model.case_logits(features)
                stacked.append(torch.stack([cases[c] for c in CASE_ORDER], dim=1).float().cpu())
        case_logits = torch.cat(stacked)  # shape = [N, 3, C]
        logits = select_case_logits(case_logits, image_cell, text_cell)
        _metrics(task, logits, labels, model.num_classes, image_cell, text_cell)
        evaluate_cells(
            task,
            model.num_classes,
            case_logits,
            labels,
            torch.arange(n),
            ones,
            ones,
            plan,
            RATES,
            TYPES,
            0.5,
        )

    return {"plain test pass (1 cell)": plain, "one-pass sweep (11 x 3 cells)": sweep}


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--samples", type=int, help="test samples")
    args = parser.parse_args(argv)
    resolve(args, FULL, QUICK)
    model = build_model(args.model).to(args.device)
    variants = passes(model, args)
    timings = interleaved(
        variants, repeats=args.repeats, warmup=args.warmup, sync=synchronizer(args.device)
    )
    plain, sweep = list(variants)
    report = Report(
        title="4. One-pass sweep (11 x 3 grid) vs one plain test pass",
        what=(
            "Same model and test set; the plain pass is one configured cell (rate 0.7, both) with "
            "its overall and per-case metrics, the sweep adds case_logits and evaluate_cells."
        ),
        settings={
            "model": f"{args.model} (random weights)",
            "test samples": args.samples,
            "batch": args.batch_size,
            "precision": args.precision,
            "rounds": args.repeats,
            "warm-up": args.warmup,
        },
        columns=["variant", "median (s)", "min (s)", "max (s)", "ratio to plain pass"],
    )
    for name in variants:
        low, high = timings.spread(name)
        report.rows.append(
            [
                name,
                fmt(timings.median(name), 4),
                fmt(low, 4),
                fmt(high, 4),
                fmt(timings.ratio(name, plain), 4),
            ]
        )
    for task, n, classes in REAL_SIZES:
        seconds = cells_alone(task, n, classes)
        report.notes.append(
            f"evaluate_cells alone, 33 cells, {task.value} with {n} samples x {classes} "
            f"outputs: {fmt(seconds)} s"
        )
    report.check("one-pass sweep / plain test pass", timings.ratio(sweep, plain), TARGET)
    report.emit(args)
    return report


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
