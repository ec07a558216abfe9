"""The study's statistics (bootstrap, pairing, verdicts) and its selection on validation."""

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cmpt_lightning.study_results import read_study
from cmpt_lightning.study_stats import (
    RESAMPLES,
    PairingWarning,
    Verdict,
    bootstrap_ci,
    compare,
    estimate,
    pair_values,
)
from cmpt_lightning.study_tables import pair_rows, study_rows, write_outputs
from cmpt_lightning.sweep.grid import key_aliases

LR = "model.init_args.optimizer.init_args.lr"
SEED = "seed_everything"
TASK = "data.init_args.task"


def test_constant_differences_give_a_zero_width_interval_and_a_win():
    ours = {(s,): 0.6 + 0.01 * s for s in range(5)}
    theirs = {(s,): 0.5 + 0.01 * s for s in range(5)}
    difference, verdict = compare(ours, theirs)
    assert difference.mean == pytest.approx(0.1)
    assert difference.low == pytest.approx(0.1) and difference.high == pytest.approx(0.1)
    assert verdict is Verdict.WIN and difference.n == 5
    _, verdict = compare(theirs, ours)
    assert verdict is Verdict.LOSS


def test_symmetric_differences_tie_and_one_pair_has_no_interval():
    ours = {(s,): 0.5 + (0.05 if s % 2 else -0.05) for s in range(10)}
    theirs = {(s,): 0.5 for s in range(10)}
    difference, verdict = compare(ours, theirs)
    assert difference.mean == pytest.approx(0.0, abs=1e-12)
    assert difference.low < 0 < difference.high and verdict is Verdict.TIE
    single, verdict = compare({(0,): 0.7}, {(0,): 0.5})
    assert single.mean == pytest.approx(0.2) and math.isnan(single.low)
    assert verdict is Verdict.NA and single.text() == "0.200"


def test_the_bootstrap_is_the_seeded_percentile_of_resampled_means():
    values = [0.1, 0.4, 0.35, 0.8, 0.5, 0.45]
    rng = np.random.default_rng(0)
    means = np.asarray(values)[rng.integers(0, 6, size=(RESAMPLES, 6))].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5])
    assert bootstrap_ci(values) == pytest.approx(tuple(expected))
    assert bootstrap_ci(values) == bootstrap_ci(values)  # a fresh generator every time
    assert estimate([0.2, math.nan, 0.4]).n == 2  # nan values are dropped
    with pytest.raises(ValueError, match="confidence level"):
        bootstrap_ci(values, level=95)


def test_pairing_mismatched_seeds_warns_or_raises_naming_them():
    ours = {(0,): 0.5, (1,): 0.6, (2,): 0.7}
    theirs = {(1,): 0.5, (2,): 0.5, (3,): 0.1}
    with pytest.warns(PairingWarning, match=r"only cmpt has \[\(0,\)\].*only zero_fill has"):
        keys, diffs = pair_values(ours, theirs, names=("cmpt", "zero_fill"))
    assert keys == [(1,), (2,)] and diffs == pytest.approx([0.1, 0.2])
    with pytest.raises(ValueError, match="not run on the same seeds"):
        pair_values(ours, theirs, names=("cmpt", "zero_fill"), strict=True)


def _fake_study(out: Path, grid: dict, cells: dict) -> dict:
    """Cell directories with DONE markers, sweep.csv and sweep.json, and their manifest.

    ``cells`` maps each cell's grid values (a tuple in the order of ``grid``) to
    ``(val_score or None, rows, main metric)``.
    """
    keys = list(grid)
    varying = [k for k in keys if len(grid[k]) > 1]
    aliases = key_aliases(varying)
    manifest = {"grid": grid, "varying": varying, "seed_keys": [k for k in varying if k == SEED],
                "aliases": aliases, "cells": []}  # fmt: skip
    for values, (score, rows, metric) in cells.items():
        overrides = dict(zip(keys, values, strict=True))
        name = "__".join(f"{aliases[k]}={overrides[k]}" for k in varying)
        manifest["cells"].append({"name": name, "overrides": overrides})
        directory = out / name
        directory.mkdir(parents=True)
        with (directory / "sweep.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        info = {"main_metric": metric, "settings": {"samples": 500}}
        (directory / "sweep.json").write_text(json.dumps(info))
        done = {"sweep_csv": "sweep.csv"} | ({} if score is None else {"val_score": score})
        (directory / "DONE").write_text(json.dumps(done))
    return manifest


def _rows(complete: float, image_only: float, text_only: float, metric: str = "acc") -> list:
    return [
        {"type": "both", "rate": 0.0, metric: complete, "count_complete": 500},
        {"type": "text", "rate": 1.0, metric: image_only, "count_complete": 0},
        {"type": "image", "rate": 1.0, metric: text_only, "count_complete": 0},
    ]


def test_hyper_parameters_are_selected_on_validation_never_on_test(tmp_path):
    grid = {"variant": ["cmpt", "zero_fill"], LR: [0.1, 0.2], SEED: [0, 1, 2]}
    cells = {}
    for variant, lr, seed in itertools.product(*grid.values()):
        # lr 0.1: the best validation score; lr 0.2: the best test numbers (not to be chosen)
        val = (0.7 if lr == 0.1 else 0.6) + 0.01 * seed
        test = (0.5 if lr == 0.1 else 0.9) + 0.01 * seed + (0.1 if variant == "cmpt" else 0)
        cells[(variant, lr, seed)] = (val, _rows(test, test - 0.2, test - 0.1), "acc")
    manifest = _fake_study(tmp_path, grid, cells)
    results = read_study(tmp_path, manifest, [LR])
    assert {s.hparams for s in results.selections.values()} == {(0.1,)}
    chosen = results.selections[("", (), "cmpt")]
    assert chosen.val_score == pytest.approx(0.71) and chosen.candidates[(0.2,)] == 0.61
    rows = [r for r in study_rows(results) if r["case"] == "complete"]
    assert {r["optimizer.lr"] for r in rows} == {0.1}
    assert {r["variant"]: r["mean"] for r in rows} == pytest.approx(
        {"cmpt": 0.61, "zero_fill": 0.51}
    )
    pairs = pair_rows(results, "cmpt")
    assert {p["verdict"] for p in pairs} == {"win"} and {p["pairs"] for p in pairs} == {3}
    text = write_outputs(results, tmp_path, "cmpt", total=12).read_text()
    assert "| method | optimizer.lr | val |" in text and "| cmpt | 0.1 | 0.710 |" in text
    assert "| complete | zero_fill | +0.100 | [+0.100, +0.100] | **win** |" in text
    assert "10,000 resamples" in text and "500 sample(s)" in text and "(0, 1, 2)" in text
    # a tie on validation goes to the first combination in grid order
    for key in list(cells):
        cells[key] = (0.5, *cells[key][1:])
    tied = _fake_study(tmp_path / "tied", grid, cells)
    assert read_study(tmp_path / "tied", tied, [LR]).selections[("", (), "cmpt")].hparams == (0.1,)
    # markers without a validation score (older cmpt, no metrics.csv) cannot be selected on
    cells = {k: (None, *v[1:]) for k, v in cells.items()}
    old = _fake_study(tmp_path / "old", grid, cells)
    with pytest.raises(ValueError, match="record no validation score"):
        read_study(tmp_path / "old", old, [LR])


def test_tasks_controls_threshold_free_metrics_and_corruption_get_their_tables(tmp_path):
    grid = {"variant": ["cmpt", "text_specialist"], TASK: ["objects", "tags"], SEED: [0, 1]}
    cells = {}
    for variant, task, seed in itertools.product(*grid.values()):
        metric = "acc" if task == "objects" else "f1_macro"
        rows = _rows(0.8, 0.4 + 0.1 * seed, 0.6, metric)
        if task == "tags":
            for row in rows:
                row.update(map=0.7, auroc_macro=0.9)
        for row in rows:
            row.update(corruption="none", level="")
        noisy = [{**r, "corruption": "image_noise", "level": 0.5} for r in _rows(0.7, 0.3, 0.6)]
        cells[(variant, task, seed)] = (0.5, rows + (noisy if task == "objects" else []), metric)
    manifest = _fake_study(tmp_path, grid, cells)
    results = read_study(tmp_path, manifest, [])
    text = write_outputs(results, tmp_path, "cmpt", total=8).read_text()
    assert "## Task: objects (main metric: acc)" in text
    assert "## Task: tags (main metric: f1_macro)" in text
    assert "Test map (threshold-free):" in text and "Test auroc_macro (threshold-free):" in text
    assert "#### Test-time corruption: image_noise at level 0.5" in text
    # the text specialist: only judged with the image missing
    assert "| text_specialist | 0.500 | - | - | 0.600 [0.600, 0.600] |" in text
    pairs = pair_rows(results, "cmpt")
    assert {p["case"] for p in pairs} == {"image missing (text only)"}
    assert {p["metric"] for p in pairs if p["task"] == "tags"} == {"f1_macro", "map", "auroc_macro"}
    verdicts = {(p["corruption"], p["verdict"]) for p in pairs}
    assert verdicts == {("none", "tie"), ("image_noise", "tie")}
    with (tmp_path / "study_pairs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(pairs)
