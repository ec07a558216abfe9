"""`cmpt sweep collect`: seed means and spreads per train cell x test cell, tables and plots."""

import csv
import json
import math
import statistics

import pytest

from cmpt_lightning.sweep import plots
from cmpt_lightning.sweep.collect import collect_sweep
from tests.helpers import cmpt as main

RATE = "data.init_args.train_missing.rate"
SEED = "seed_everything"
TEST_CELLS = [("text", 0.0), ("text", 1.0), ("both", 0.5)]


def _acc(rate, seed, test_type, test_rate):
    """A made-up accuracy that depends on everything, so that a mix-up shows."""
    return round(0.9 - 0.3 * test_rate + 0.05 * rate + 0.01 * seed + (test_type == "both") * 0.1, 6)


def _sweep_dir(tmp_path, rates=(0.3, 0.7), seeds=(0, 1, 2), unfinished=()):
    """A run directory as `cmpt sweep` leaves it: manifest, cells with DONE and sweep.csv."""
    out = tmp_path / "sweep"
    cells = []
    for rate in rates:
        for seed in seeds:
            name = f"train_missing.rate={rate}__seed_everything={seed}"
            cells.append(
                {"name": name, "overrides": {RATE: rate, SEED: seed, "trainer.max_epochs": 1}}
            )
            if name in unfinished:
                continue
            run = out / name / "lightning_logs" / "version_0"
            run.mkdir(parents=True)
            with (run / "sweep.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["type", "rate", "acc", "f1", "count_complete"])
                for test_type, test_rate in TEST_CELLS:
                    acc = _acc(rate, seed, test_type, test_rate)
                    writer.writerow([test_type, test_rate, acc, acc / 2, 10])
            (run / "sweep.json").write_text(json.dumps({"main_metric": "acc"}))
            done = {"sweep_csv": "lightning_logs/version_0/sweep.csv"}
            (out / name / "DONE").write_text(json.dumps(done))
    manifest = {
        "varying": [RATE, SEED],
        "seed_keys": [SEED],
        "aliases": {RATE: "train_missing.rate", SEED: SEED},
        "cells": cells,
    }
    out.mkdir(exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_mean_and_std_over_seeds_per_train_and_test_cell(tmp_path):
    out = _sweep_dir(tmp_path)
    result = collect_sweep(out)
    assert result.main_metric == "acc" and result.metrics == ["acc", "f1"]
    assert result.train_columns == ["train_missing.rate"] and not result.missing
    rows = _rows(out / "results.csv")
    assert len(rows) == 2 * len(TEST_CELLS)
    assert list(rows[0]) == [
        "train_missing.rate", "test_type", "test_rate", "n_seeds", "acc_mean", "acc_std",
        "f1_mean", "f1_std",
    ]  # fmt: skip
    for row in rows:
        rate, test_type, test_rate = (
            float(row["train_missing.rate"]),
            row["test_type"],
            float(row["test_rate"]),
        )
        values = [_acc(rate, s, test_type, test_rate) for s in (0, 1, 2)]
        assert row["n_seeds"] == "3"
        assert float(row["acc_mean"]) == pytest.approx(statistics.mean(values), abs=1e-6)
        assert float(row["acc_std"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert [(r["test_type"], float(r["test_rate"])) for r in rows[:3]] == TEST_CELLS


def test_markdown_table_and_plots(tmp_path):
    out = _sweep_dir(tmp_path)
    result = collect_sweep(out)
    text = (out / "results.md").read_text()
    assert "| train_missing.rate | test type | test rate | acc | f1 | seeds |" in text
    assert "| 0.3 | text | 0 | 0.9250 ± 0.0100 |" in text
    assert set(result.paths) == {"csv", "md", "heatmap", "curves"}
    for name in ("heatmap.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_tables_are_still_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    out = _sweep_dir(tmp_path)
    assert main(["sweep", "collect", str(out)]) == 0
    assert (out / "results.csv").exists() and not (out / "heatmap.png").exists()
    assert "install matplotlib" in capsys.readouterr().out


def test_unfinished_cells_are_left_out_and_named(tmp_path):
    missing = "train_missing.rate=0.7__seed_everything=2"
    out = _sweep_dir(tmp_path, unfinished=[missing])
    result = collect_sweep(out)
    assert result.missing == [missing]
    counts = {(r["train_missing.rate"], r["n_seeds"]) for r in _rows(out / "results.csv")}
    assert counts == {("0.3", "3"), ("0.7", "2")}
    assert missing in (out / "results.md").read_text()


def test_a_single_seed_has_no_spread(tmp_path):
    out = _sweep_dir(tmp_path, seeds=(0,))
    collect_sweep(out)
    rows = _rows(out / "results.csv")
    assert {r["acc_std"] for r in rows} == {""} and {r["n_seeds"] for r in rows} == {"1"}
    assert "| 0.3 | text | 0 | 0.9150 | 0.4575 | 1 |" in (out / "results.md").read_text()


def test_seed_keys_and_metric_can_be_chosen(tmp_path):
    out = _sweep_dir(tmp_path)
    result = collect_sweep(out, metric="f1", seed_keys=[])
    assert result.main_metric == "f1"
    assert result.train_columns == ["train_missing.rate", SEED]
    assert {r["n_seeds"] for r in result.rows} == {1}
    assert all(math.isnan(r["f1_std"]) for r in result.rows)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"metric": "auroc"}, "metric 'auroc'.*acc"), ({"seed_keys": ["seed"]}, "seed key")],
)
def test_bad_choices_fail_with_the_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        collect_sweep(_sweep_dir(tmp_path), **kwargs)


def test_not_a_sweep_or_nothing_finished(tmp_path, capsys):
    assert main(["sweep", "collect", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err
    names = [f"train_missing.rate=0.3__seed_everything={s}" for s in (0, 1)]
    out = _sweep_dir(tmp_path, rates=(0.3,), seeds=(0, 1), unfinished=names)
    with pytest.raises(ValueError, match=r"no cell .* has finished"):
        collect_sweep(out)


def test_cli_seed_keys_alone_averages_over_nothing(tmp_path, capsys):
    out = _sweep_dir(tmp_path, seeds=(0, 1))
    assert main(["sweep", "collect", str(out), "--seed_keys", "[]"]) == 0
    rows = _rows(out / "results.csv")
    assert {r["n_seeds"] for r in rows} == {"1"} and "seed_everything" in rows[0]
    assert "heatmap: " in capsys.readouterr().out


def test_the_0_1_seed_keys_flag_alone_still_works(tmp_path):
    out = _sweep_dir(tmp_path, seeds=(0, 1))
    with pytest.warns(FutureWarning, match="--seed-keys is deprecated"):
        assert main(["sweep", "collect", str(out), "--seed-keys"]) == 0
    assert {r["n_seeds"] for r in _rows(out / "results.csv")} == {"1"}
