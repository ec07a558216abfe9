"""The evaluation protocol: every test-time (missing rate, missing type) cell from one pass.

A proxy never influences the real tokens, so one encoding of a test sample with both modalities
gives its logits under all three availability cases (complete, text missing, image missing).
Every cell of a :class:`TestGrid` is then a per-sample choice among the three, made with the
same masks a run configured with that cell would use (a pure function of seed and sample id),
so each cell's metrics equal that run's exactly. The results go to ``sweep.csv``,
``sweep.json`` and ``sweep.png`` in the run directory.

Not to be confused with ``cmpt sweep`` (:mod:`cmpt_lightning.sweep`), which trains a grid of
settings: a test grid evaluates one trained model.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .corruptions import parse_corruptions
from .diagnostics import proxy_metrics
from .metrics import availability_case, compute_metrics
from .missing import (
    CASE_ORDER,
    MissingConfig,
    MissingPlan,
    MissingType,
    _check_fraction,
    availability_counts,
    case_index,
    combine_availability,
)
from .models.cmpt import CMPTModel, CMPTOutput
from .tasks import Task

__all__ = [
    "CASE_ORDER",
    "DEFAULT_RATES",
    "SplitPlanner",
    "TestGrid",
    "evaluate_cells",
    "one_pass",
    "print_ceilings",
    "select_case_logits",
    "stage_metrics",
    "write_sweep",
]

#: The test grid's default rates: 0, 0.1, ..., 1.0.
DEFAULT_RATES = [round(0.1 * i, 1) for i in range(11)]


@runtime_checkable
class SplitPlanner(Protocol):
    """A data module that ranks a split's samples with the missing-modality protocol.

    Every cmpt_lightning data module is one. ``eval_missing`` gives the seed and ``both_ratio``
    a :class:`TestGrid` falls back to.
    """

    eval_missing: MissingConfig

    def plan(self, split: str, seed: int) -> MissingPlan:
        """The protocol's ranking of ``split`` under ``seed``."""
        ...


@dataclass
class TestGrid:
    """A grid of test-time (missing rate, missing type) cells, evaluated from one pass.

    Attributes:
        rates: missing rates to evaluate, each in [0, 1].
        types: missing types to evaluate (``text``, ``image``, ``both``, ``none``).
        both_ratio: with ``both``, the fraction of missing samples that lose the image; null
            takes the data module's ``eval_missing.both_ratio``.
        seed: the protocol seed; null takes the data module's ``eval_missing.seed``.
        corruptions: test-time corruptions (``image_noise:0.1``, ``text_dropout:0.3``, ...: see
            :mod:`.corruptions`), each one more pass over the test set whose three availability
            cases are added to the grid's rows (columns ``corruption`` and ``level``).
    """

    __test__ = False  # a settings class, not a test class, for pytest

    rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    types: list[str] = field(default_factory=lambda: ["text", "image", "both"])
    both_ratio: float | None = None
    seed: int | None = None
    corruptions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rates:
            msg = "test_grid.rates is empty; give at least one missing rate, e.g. [0, 0.5, 1]"
            raise ValueError(msg)
        if not self.types:
            msg = "test_grid.types is empty; give at least one of text, image, both"
            raise ValueError(msg)
        self.rates = [_check_fraction("test_grid rate", r) for r in self.rates]
        self.types = [MissingType(t).value for t in self.types]
        if self.both_ratio is not None:
            self.both_ratio = _check_fraction("test_grid.both_ratio", self.both_ratio)
        self.corruptions = [str(c) for c in parse_corruptions(self.corruptions)]

    def evaluate(
        self,
        data: dict[str, torch.Tensor],
        datamodule: object,
        *,
        task: Task | str,
        num_classes: int,
        thresholds: torch.Tensor | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every cell's metrics from the test samples collected by one pass.

        Args:
            data: the gathered test results (``case_logits``, ``label``, ``index``,
                ``image_available``, ``text_available``), as :func:`one_pass` collects them.
            datamodule: the run's data module; it must rank the test split (a
                :class:`SplitPlanner`).
            task: the task.
            num_classes: number of classes.
            thresholds: tuned multi-label thresholds (see :func:`evaluate_cells`).

        Returns:
            ``(cells, settings)``: the rows of :func:`evaluate_cells`, and the protocol settings
            used (``seed``, ``both_ratio``, ``samples``) for :func:`write_sweep`.

        Raises:
            TypeError: when the data module cannot rank the test split.
        """
        if not isinstance(datamodule, SplitPlanner):
            msg = (
                "a test grid needs a data module that ranks its splits with the missing-modality "
                "protocol (a cmpt_lightning data module, with plan(split, seed) and "
                f"eval_missing), got {type(datamodule).__name__}; pass one to trainer.test(...), "
                "or set model.init_args.test_grid to null"
            )
            raise TypeError(msg)
        seed = datamodule.eval_missing.seed if self.seed is None else self.seed
        both_ratio = self.both_ratio
        if both_ratio is None:
            both_ratio = datamodule.eval_missing.both_ratio
        cells = evaluate_cells(
            task,
            num_classes,
            data["case_logits"],
            data["label"],
            data["index"],
            data["image_available"].bool(),
            data["text_available"].bool(),
            datamodule.plan("test", seed),
            self.rates,
            self.types,
            both_ratio,
            thresholds=thresholds,
            proxy={k: v for k, v in data.items() if k.startswith("proxy_")} or None,
        )
        settings: dict[str, Any] = {
            "seed": seed,
            "both_ratio": both_ratio,
            "samples": len(data["index"]),
        }
        settings["mechanism"] = list(datamodule.eval_missing.mechanism_key)  # see missing.py
        return cells, settings


def select_case_logits(
    case_logits: torch.Tensor, image_present: torch.Tensor, text_present: torch.Tensor
) -> torch.Tensor:
    """Per sample, the logits of its availability case.

    Args:
        case_logits: [N, 3, C] in :data:`CASE_ORDER`.
        image_present: bool [N].
        text_present: bool [N].

    Returns:
        [N, C].

    Raises:
        ValueError: when a sample has neither modality (it has no case to select).
    """
    case = case_index(image_present, text_present).to(case_logits.device)
    if bool((case < 0).any()):
        row = int((case < 0).nonzero()[0])
        msg = f"sample {row} has neither an image nor a text: there are no logits to select"
        raise ValueError(msg)
    rows = torch.arange(case_logits.shape[0], device=case_logits.device)
    return case_logits[rows, case]


def one_pass(model: CMPTModel, batch: dict[str, Any]) -> tuple[CMPTOutput, dict[str, torch.Tensor]]:
    """Encode a batch with every available modality; its configured cell is then a selection.

    Args:
        model: the model.
        batch: a collated batch; ``image_available`` / ``text_available`` (what the data has)
            default to ``image_present`` / ``text_present`` (what the configured cell keeps).

    Returns:
        ``(output, extra)``: the output of the configured cell (its features' masks are the
        cell's), and what a test grid collects: ``case_logits`` [B, 3, C] in
        :data:`CASE_ORDER`, ``image_available`` and ``text_available``.
    """
    image_available = batch.get("image_available", batch["image_present"])
    text_available = batch.get("text_available", batch["text_present"])
    features = model.encode(batch["image"], batch["text"], image_available, text_available)
    cases = model.case_logits(features)
    case_logits = torch.stack([cases[c] for c in CASE_ORDER], dim=1)  # shape = [B, 3, C]
    logits = select_case_logits(case_logits, batch["image_present"], batch["text_present"])
    seen = replace(
        features, image_present=batch["image_present"], text_present=batch["text_present"]
    )
    extra = {
        "case_logits": case_logits.float(),
        "image_available": image_available,
        "text_available": text_available,
    }
    mask = model.head.task_mask(seen.image_present, seen.text_present)  # specialists
    return CMPTOutput(logits=logits, features=seen, task_mask=mask), extra


def stage_metrics(
    stage: str,
    data: dict[str, torch.Tensor],
    *,
    task: Task,
    num_classes: int,
    thresholds: torch.Tensor | None = None,
) -> dict[str, float]:
    """An evaluation epoch's metrics: overall, per availability case, and the monitor's score.

    Args:
        stage: ``val`` or ``test``, the prefix of every name.
        data: the epoch's gathered ``logits``, ``label``, ``image_present``, ``text_present``.
        task: the task (its main metric is also logged as ``{stage}/score``).
        num_classes: number of classes.
        thresholds: multilabel: tuned thresholds, adding the ``f1_*_tuned`` metrics.

    Returns:
        ``{stage}/{metric}``, ``{stage}/score``, ``{stage}/{metric}_{case}`` for each case with
        samples and ``{stage}/count_{case}`` for each case; with per-sample proxy diagnostics
        in ``data`` (``proxy_*``, method ``cmpt``), their means where any sample has them
        (:mod:`.diagnostics`), ``{stage}/count_proxy_<side>`` and ``{stage}/proxy_gallery``.
    """
    overall = compute_metrics(task, data["logits"], data["label"], num_classes, thresholds)
    metrics = {f"{stage}/{k}": v for k, v in overall.items()}
    metrics[f"{stage}/score"] = overall[task.main_metric]  # task-agnostic monitor
    for case, rows in availability_case(data["image_present"], data["text_present"]).items():
        if bool(rows.any()):
            logits, labels = data["logits"][rows], data["label"][rows]
            values = compute_metrics(task, logits, labels, num_classes, thresholds)
            metrics.update({f"{stage}/{k}_{case.value}": v for k, v in values.items()})
        metrics[f"{stage}/count_{case.value}"] = float(rows.sum())
    if "proxy_cos_text" in data:
        diagnostics = proxy_metrics(data)  # logged where measured (like a case's metrics)
        metrics.update({f"{stage}/{k}": float(v) for k, v in diagnostics.items() if v == v})
        metrics[f"{stage}/proxy_gallery"] = float((~data["proxy_r1_text"].isnan()).sum())
    return metrics


def evaluate_cells(
    task: Task | str,
    num_classes: int,
    case_logits: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    real_image: torch.Tensor,
    real_text: torch.Tensor,
    plan: MissingPlan,
    rates: Sequence[float],
    types: Sequence[str],
    both_ratio: float,
    *,
    thresholds: torch.Tensor | None = None,
    proxy: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Metrics of every (type, rate) cell.

    Args:
        task: the task.
        num_classes: number of classes.
        case_logits: [N, 3, C] logits of the evaluated samples in :data:`CASE_ORDER`.
        labels: [N] or [N, C] targets.
        index: [N] positions of the evaluated samples in the split (the plan's order).
        real_image: bool [N], the data has the image.
        real_text: bool [N], the data has the text.
        plan: the protocol's ranking of the whole split.
        rates: missing rates.
        types: missing types.
        both_ratio: with ``both``, the fraction of missing samples that lose the image.
        thresholds: multilabel: tuned thresholds, adding ``f1_*_tuned`` to every cell.
        proxy: per-sample proxy diagnostics (``proxy_*`` of :func:`~.diagnostics.proxy_batch`
            and :func:`~.diagnostics.proxy_hits`); None (a baseline) leaves them out.

    Returns:
        One dict per cell: ``type``, ``rate``, the task's metrics, ``count_<case>`` per
        availability case and ``count_spared`` (samples whose only modality was kept); with
        ``proxy``, ``proxy_{cos,mse,r1}_<side>`` over the cell's samples whose ``side`` the
        proxy replaced (NaN when none did, e.g. at rate 0) and their ``count_proxy_<side>``.
    """
    rows: list[dict[str, Any]] = []
    index = index.long().cpu()
    for missing_type in types:
        for rate in rates:
            keep_img, keep_txt = plan.masks(rate, missing_type, both_ratio=both_ratio)
            img, txt, spared = combine_availability(
                real_image.cpu(), real_text.cpu(), keep_img[index], keep_txt[index]
            )
            logits = select_case_logits(case_logits, img, txt)
            row: dict[str, Any] = {"type": missing_type, "rate": rate}
            row.update(compute_metrics(task, logits, labels, num_classes, thresholds))
            counts = availability_counts(img, txt)
            row.update({f"count_{case.value}": counts[case.value] for case in CASE_ORDER})
            row["count_spared"] = int(spared.sum())
            if proxy is not None:  # the proxies this cell used, where the real one is known
                replaced = {
                    "text": img & ~txt & real_text.cpu(),
                    "image": txt & ~img & real_image.cpu(),
                }
                row.update(proxy_metrics(proxy, replaced))  # last: the landed columns first
            rows.append(row)
    return rows


def _print_table(rows: list[dict[str, Any]], metrics: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Test grid (one pass): test metrics per missing type and rate")
    for column in ["type", "rate", *metrics, "complete", "image_only", "text_only"]:
        table.add_column(column, justify="right")
    for row in rows:
        values = [f"{row[m]:.4f}" if not math.isnan(row[m]) else "nan" for m in metrics]
        counts = [str(row[f"count_{c.value}"]) for c in CASE_ORDER]
        table.add_row(row["type"], f"{row['rate']:g}", *values, *counts)
    Console().print(table)


#: Which Bayes ceiling bounds each availability case (the keys of ``world_tasks.ceilings``).
_CEILING_OF_CASE = {"complete": "both", "image_only": "image", "text_only": "text"}


def print_ceilings(
    metrics: Mapping[str, Any], ceilings: Mapping[str, float], metric: str, stage: str = "test"
) -> bool:
    """Print the main metric per availability case next to what is reachable at all.

    Args:
        metrics: the logged metrics (``trainer.callback_metrics``): ``<stage>/<metric>_<case>``
            and ``<stage>/count_<case>``.
        ceilings: the data's Bayes ceilings of ``metric``: ``image``, ``text``, ``both`` and
            ``chance`` (what ``WorldDataModule.ceilings`` returns).
        metric: the task's main metric (``acc``, ``f1_macro``, ``auroc``).
        stage: the metrics' prefix.

    Returns:
        Whether a table was printed (not when no case's metric was logged).
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{stage} {metric} against the Bayes ceiling",
        caption=f"chance (no input): {ceilings['chance']:.3f}",
    )
    for column in ("case", metric, "ceiling", "samples"):
        table.add_column(column, justify="right")
    shown = 0
    for case, source in _CEILING_OF_CASE.items():
        value, count = metrics.get(f"{stage}/{metric}_{case}"), metrics.get(f"{stage}/count_{case}")
        if value is None:
            continue
        samples = "" if count is None else str(int(float(count)))
        table.add_row(case, f"{float(value):.3f}", f"{ceilings[source]:.3f}", samples)
        shown += 1
    if shown:
        Console().print(table)
    return shown > 0


def _plot(rows: list[dict[str, Any]], metric: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for missing_type in dict.fromkeys(r["type"] for r in rows):
        cells = [r for r in rows if r["type"] == missing_type]
        ax.plot(
            [r["rate"] for r in cells], [r[metric] for r in cells], marker="o", label=missing_type
        )
    ax.set_xlabel("test missing rate")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against missing rate, per missing type")
    ax.grid(alpha=0.3)
    ax.legend(title="missing")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_sweep(
    rows: list[dict[str, Any]],
    directory: str | Path,
    *,
    main_metric: str,
    settings: dict[str, Any] | None = None,
    console: bool = True,
) -> dict[str, Path]:
    """Write ``sweep.csv`` (one row per cell), ``sweep.json`` and, with matplotlib, ``sweep.png``.

    Args:
        rows: the cells from :func:`evaluate_cells`.
        directory: the run directory.
        main_metric: the metric plotted against the rate.
        settings: protocol settings recorded in ``sweep.json`` (seed, both_ratio, ...).
        console: also print a rich table.

    Returns:
        The paths written, by kind (``csv``, ``json``, ``png``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"csv": directory / "sweep.csv", "json": directory / "sweep.json"}
    fields = list(rows[0])
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    payload = {"settings": settings or {}, "main_metric": main_metric, "cells": rows}
    paths["json"].write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    clean = [r for r in rows if r.get("corruption", "none") == "none"]  # see .corruption_pass
    if _plot(clean, main_metric, directory / "sweep.png"):
        paths["png"] = directory / "sweep.png"
    if console:
        keys = ("type", "rate", "corruption", "level")
        metrics = [k for k in fields if k not in keys and not k.startswith("count_")]
        _print_table(clean, metrics)
    return paths
