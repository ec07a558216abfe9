"""``cmpt study``'s outputs: ``study.csv``, ``study_pairs.csv``, ``study.md`` and ``study.png``.

From a study's cells selected on validation (:mod:`cmpt_lightning.study_results`):

- ``study.csv``: one row per (task, regime, method, selected hyper-parameters, test cell,
  metric) with the mean over replicates, its bootstrap 95% interval, the standard deviation and
  the number of replicates;
- ``study_pairs.csv``: one row per (task, regime, test cell, metric, method) with CMPT's mean
  paired difference against the method, its interval, the number of pairs and the verdict;
- ``study.md``: the header (replicates, test-set size, bootstrap, selection rule), then per task
  and regime the methods' table and the "CMPT against each method" table, and one pair of tables
  per test-time corruption level;
- ``study.png``: the main metric against the test missing rate per method (the first task's).
"""

from __future__ import annotations

import csv
import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .study_results import CASES, CLEAN, Selection, StudyResults, TestCell
from .study_stats import (
    BOOTSTRAP_SEED,
    LEVEL,
    RESAMPLES,
    PairingWarning,
    compare,
    estimate,
    pair_values,
)

__all__ = [
    "CONTROLS",
    "EXTRA_METRICS",
    "controls_of",
    "pair_rows",
    "study_rows",
    "write_outputs",
]

#: Threshold-free metrics shown beside a multi-label task's main metric, when the cells have them.
EXTRA_METRICS = ("map", "auroc_macro")
#: Controls judged on one case only: method -> the case (single-modality specialists).
CONTROLS = {
    "text_specialist": "image missing (text only)",
    "image_specialist": "text missing (image only)",
}
TRAIN_RATE_ALIAS = "train_missing.rate"
METHOD = "model.init_args.method"


def controls_of(variants: Mapping[str, Mapping[str, Any]] | None) -> dict[str, str]:
    """The controls among a grid's variants (by name, or by the method they set): -> case."""
    found = dict(CONTROLS)
    for name, bundle in (variants or {}).items():
        method = str(bundle.get(METHOD, name))
        if method in CONTROLS:
            found[name] = CONTROLS[method]
    return {name: case for name, case in found.items() if variants is None or name in variants}


def _regime_columns(regime: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A regime's columns (``train_rate`` for the training missing rate, as before)."""
    return {("train_rate" if a == TRAIN_RATE_ALIAS else a): v for a, v in regime}


def _regime_title(regime: Sequence[tuple[str, Any]]) -> str:
    parts = []
    for alias, value in regime:
        if alias == TRAIN_RATE_ALIAS and isinstance(value, int | float):
            parts.append(f"trained with {value:.0%} of samples missing a modality")
        else:
            parts.append(f"{alias}={value}")
    text = "; ".join(parts) or "one training regime"
    return text[0].upper() + text[1:]


def _hparams(results: StudyResults, selection: Selection) -> dict[str, Any]:
    return {
        results.aliases[k]: v for k, v in zip(results.hparam_keys, selection.hparams, strict=True)
    }


def _judged(method: str, test: TestCell, controls: Mapping[str, str]) -> bool:
    """A control is judged on its one case only; every other method everywhere."""
    return method not in controls or test.case == controls[method]


def _metrics(results: StudyResults, task: str) -> list[str]:
    main = results.metric(task)
    found = results.metrics(task)
    return [main, *(m for m in EXTRA_METRICS if m in found and m != main)]


def study_rows(results: StudyResults) -> list[dict[str, Any]]:
    """The rows of ``study.csv``: the selected hyper-parameters' test numbers only."""
    rows = []
    for (task, regime, method), selection in results.selections.items():
        head = {"task": task, **_regime_columns(regime), "variant": method}
        head.update(_hparams(results, selection), val_score=selection.val_score)
        for test in results.test_cells(task):
            for metric in _metrics(results, task):
                values = [v for v in selection.values(test, metric).values() if not math.isnan(v)]
                if not selection.values(test, metric):
                    continue
                value = estimate(values)
                std = statistics.stdev(values) if len(values) > 1 else math.nan
                rows.append(
                    {
                        **head,
                        "corruption": test.corruption,
                        "level": test.level,
                        "type": test.type,
                        "rate": test.rate,
                        "case": test.case,
                        "metric": metric,
                        "mean": value.mean,
                        "low": value.low,
                        "high": value.high,
                        "std": std,
                        "seeds": value.n,
                    }
                )
    return rows


def _hparam_text(results: StudyResults, selection: Selection) -> str:
    return ", ".join(f"{k}={v}" for k, v in _hparams(results, selection).items())


def pair_rows(
    results: StudyResults, reference: str, controls: Mapping[str, str] = CONTROLS
) -> list[dict[str, Any]]:
    """The rows of ``study_pairs.csv``: ``reference`` against every other method, paired.

    Args:
        results: the study's selected cells.
        reference: the method compared with all others (``cmpt``).
        controls: methods judged on one case only (see :data:`CONTROLS`).
    """
    rows = []
    for task in results.tasks:
        for regime in results.regimes(task):
            ours = results.selections.get((task, regime, reference))
            if ours is None:
                continue
            for method in results.methods(task):
                theirs = results.selections.get((task, regime, method))
                if method == reference or theirs is None:
                    continue
                where = f" ({task or 'the study'}, {_regime_title(regime).lower()})"
                pair_values(  # one warning per method if the replicates differ
                    {c.replicate: 0.0 for c in ours.cells},
                    {c.replicate: 0.0 for c in theirs.cells},
                    names=(reference, method + where),
                )
                for test in results.test_cells(task):
                    if not _judged(method, test, controls):
                        continue
                    for metric in _metrics(results, task):
                        with warnings.catch_warnings():  # warned once above
                            warnings.simplefilter("ignore", PairingWarning)
                            difference, verdict = compare(
                                ours.values(test, metric),
                                theirs.values(test, metric),
                                names=(reference, method),
                            )
                        rows.append(
                            {
                                "task": task,
                                **_regime_columns(regime),
                                "corruption": test.corruption,
                                "level": test.level,
                                "type": test.type,
                                "rate": test.rate,
                                "case": test.case,
                                "metric": metric,
                                "reference": reference,
                                "reference_hparams": _hparam_text(results, ours),
                                "method": method,
                                "method_hparams": _hparam_text(results, theirs),
                                "pairs": difference.n,
                                "mean_difference": difference.mean,
                                "low": difference.low,
                                "high": difference.high,
                                "verdict": verdict.value,
                            }
                        )
    return rows


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                             for k, v in row.items()})  # fmt: skip


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _signed(value: float) -> str:
    """``+0.034`` (``+0.000`` for a difference that rounds to zero, never ``-0.000``)."""
    return "-" if math.isnan(value) else f"{round(value, 3) + 0.0:+.3f}"


def _header(
    results: StudyResults, reference: str, total: int, controls: Mapping[str, str]
) -> list[str]:
    seeds = [
        f"`{results.aliases.get(k, k)}` {len(v)} value(s) ({', '.join(map(str, v))})"
        for k, v in results.seed_values.items()
    ]
    replicates = math.prod(len(v) for v in results.seed_values.values())
    samples = results.samples()
    size = ", ".join(map(str, samples)) if samples else "not recorded"
    hparams = ", ".join(f"`{results.aliases.get(k, k)}`" for k in results.hparam_keys) or "none"
    world = "data.init_args.seed" in results.seed_values
    judged = "; ".join(f"`{m}` is judged on *{c}* only" for m, c in controls.items())
    return [
        "# CMPT against the baselines",
        "",
        f"Written by `cmpt study` from {len(results.cells)} finished cell(s) of {total}.",
        "",
        f"- **Replicates**: {' x '.join(seeds) or 'a single seed'} = {replicates} per "
        "(task, regime, method, hyper-parameters)"
        + ("; the world seed (`data.init_args.seed`) draws the world" if world else "")
        + "; where `study.csv` counts fewer (`seeds`), cells have not finished (listed at the "
        "end).",
        f"- **Test set**: {size} sample(s) per test cell.",
        f"- **Intervals**: mean [{LEVEL:.0%} CI] over the replicates; the CI is the percentile "
        f"bootstrap of the mean ({RESAMPLES:,} resamples with replacement, numpy "
        f"`default_rng({BOOTSTRAP_SEED})` for every interval).",
        f"- **Paired comparison**: `{reference}` minus each method on the same replicates (same "
        "seeds, so the same world, data and masks); the CI is the bootstrap over the pairs. "
        f"Verdict `win` if the CI lies above 0, `loss` if below, `tie` if it contains 0, `n/a` "
        "with fewer than 2 pairs. With few pairs the percentile bootstrap is too narrow (with "
        "2 it takes only 3 values): read a verdict at its stated level from about 10 pairs on. "
        "Every test cell's pairs are in `study_pairs.csv`.",
        f"- **Selection on validation, never on test**: every method runs the same grid of "
        f"hyper-parameters ({hparams}); for each (task, regime, method) the combination with "
        "the best mean validation score over the replicates (the score the checkpoint callback "
        "monitored, at its best epoch) is kept, ties going to the first in grid order. Only "
        "its test numbers are reported; the `val` column is that mean validation score.",
        *([f"- **Controls**: {judged} (`-` elsewhere)."] if judged else []),
    ]


def _cases(tests: Sequence[TestCell], corruption: str, level: float) -> list[TestCell]:
    """The columns of a table: the availability cases, then ``both`` rates above 0."""
    mine = [t for t in tests if (t.corruption, t.level) == (corruption, level)]
    cases = [t for label in CASES for t in mine if t.case == label]
    return cases + [t for t in mine if t.type == "both" and t.rate > 0 and t not in cases]


def _method_table(
    results: StudyResults,
    task: str,
    regime: Any,
    columns: Sequence[TestCell],
    metric: str,
    controls: Mapping[str, str],
) -> list[str]:
    header = ["method", *(results.aliases[k] for k in results.hparam_keys), "val"]
    body = []
    for method in results.methods(task):
        selection = results.selections.get((task, regime, method))
        if selection is None:
            continue
        val = "-" if math.isnan(selection.val_score) else f"{selection.val_score:.3f}"
        row = [method, *(str(v) for v in selection.hparams), val]
        for test in columns:
            judged = _judged(method, test, controls)
            row.append(estimate(selection.values(test, metric).values()).text() if judged else "-")
        body.append(row)
    return _table([*header, *(t.case for t in columns)], body)


def _verdict_table(
    pairs: Sequence[dict[str, Any]], columns: Sequence[TestCell], metric: str
) -> list[str]:
    body = []
    for test in columns:
        for row in pairs:
            spot = (row["corruption"], row["level"], row["type"], row["rate"], row["metric"])
            if spot == (test.corruption, test.level, test.type, test.rate, metric):
                low, high = row["low"], row["high"]
                ci = "-" if math.isnan(low) else f"[{_signed(low)}, {_signed(high)}]"
                body.append(
                    [test.case, row["method"], _signed(row["mean_difference"]), ci,
                     f"**{row['verdict']}**" if row["verdict"] == "win" else row["verdict"]]
                )  # fmt: skip
    return _table(["case", "method", "mean difference", f"{LEVEL:.0%} CI", "verdict"], body)


def _markdown(
    results: StudyResults,
    pairs: list[dict[str, Any]],
    reference: str,
    total: int,
    controls: Mapping[str, str],
) -> str:
    lines = _header(results, reference, total, controls)
    for task in results.tasks:
        metric, tests = results.metric(task), results.test_cells(task)
        lines += [
            "",
            f"## Task: {task} (main metric: {metric})" if task else f"## Main metric: {metric}",
        ]
        for regime in results.regimes(task):
            lines += ["", f"### {_regime_title(regime)}", ""]
            mine = [p for p in pairs if p["task"] == task and _regime_of(p, regime)]
            clean = _cases(tests, CLEAN, 0.0)
            lines += [f"Test {metric}, mean [{LEVEL:.0%} CI] over the replicates:", ""]
            lines += _method_table(results, task, regime, clean, metric, controls)
            for extra in _metrics(results, task)[1:]:
                lines += ["", f"Test {extra} (threshold-free):", ""]
                lines += _method_table(results, task, regime, clean, extra, controls)
            judged = [
                t for t in clean if t.type != "both" or t.rate == 0 or t.rate in _rates(regime)
            ]
            lines += ["", f"`{reference}` against each method ({metric}):", ""]
            lines += _verdict_table(mine, judged, metric)
            for kind, level in sorted({(t.corruption, t.level) for t in tests} - {(CLEAN, 0.0)}):
                columns = _cases(tests, kind, level)
                lines += ["", f"#### Test-time corruption: {kind} at level {level:g}", ""]
                lines += _method_table(results, task, regime, columns, metric, controls)
                lines += ["", f"`{reference}` against each method ({kind} {level:g}):", ""]
                lines += _verdict_table(mine, columns, metric)
    if results.missing:
        lines += ["", f"Not finished (left out): {', '.join(results.missing)}."]
    return "\n".join(lines) + "\n"


def _rates(regime: Sequence[tuple[str, Any]]) -> set[float]:
    """The training missing rate of a regime (the ``both`` rate judged beside the cases)."""
    return {float(v) for a, v in regime if a == TRAIN_RATE_ALIAS and isinstance(v, int | float)}


def _regime_of(row: Mapping[str, Any], regime: Sequence[tuple[str, Any]]) -> bool:
    return all(row.get(k) == v for k, v in _regime_columns(regime).items())


def _plot_rows(results: StudyResults) -> list[dict[str, Any]]:
    """The rows :func:`~cmpt_lightning.sweep.plots.plot_study` draws: the first task, clean."""
    task, out = results.tasks[0], []
    for row in study_rows(results):
        if (
            row["task"] == task
            and row["corruption"] == CLEAN
            and row["metric"] == results.metric(task)
        ):
            rate = row.get("train_rate")
            out.append({**row, "train_rate": float(rate) if rate is not None else math.nan})
    return out


def write_outputs(
    results: StudyResults,
    out: Path,
    reference: str,
    total: int,
    controls: Mapping[str, str] = CONTROLS,
) -> Path:
    """Write ``study.csv``, ``study_pairs.csv``, ``study.md`` and ``study.png`` into ``out``.

    Args:
        results: the study's selected cells.
        out: the study directory.
        reference: the method compared with all others (``cmpt``).
        total: the number of cells of the study's grid.
        controls: methods judged on one case only, method -> its case (see :data:`CONTROLS`).

    Returns:
        The path of ``study.md``.
    """
    _write_csv(study_rows(results), out / "study.csv")
    pairs = pair_rows(results, reference, controls)
    if pairs:
        _write_csv(pairs, out / "study_pairs.csv")
    (out / "study.md").write_text(_markdown(results, pairs, reference, total, controls))
    from .sweep.plots import plot_study

    rows = _plot_rows(results)
    if rows:
        plot_study(rows, out / "study.png")
    return out / "study.md"
