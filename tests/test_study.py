import csv
from pathlib import Path

import pytest

from cmpt_lightning.main import main
from cmpt_lightning.study import run_study

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TINY = [
    "--data.init_args.train_size",
    "48",
    "--data.init_args.val_size",
    "16",
    "--data.init_args.test_size",
    "24",
    "--data.init_args.batch_size",
    "16",
    "--trainer.max_epochs",
    "1",
]


def test_study_end_to_end_and_resumable(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "study",
                "--config",
                str(DEMO),
                "--out",
                str(tmp_path),
                "--seeds",
                "0",
                "1",
                "--variants",
                "cmpt",
                "zero_fill",
                "--train-rates",
                "0.5",
                "--test-rates",
                "0",
                "1",
                "--",
                *TINY,
            ]
        )
    assert exc.value.code == 0
    text = (tmp_path / "study.md").read_text()
    assert "| cmpt |" in text and "| zero_fill |" in text and "± " in text
    with (tmp_path / "study.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == {"cmpt", "zero_fill"}
    assert all(r["seeds"] == "2" for r in rows) and len(rows) == 2 * 3 * 2
    assert (tmp_path / "study.png").stat().st_size > 1000
    stamp = {p: p.stat().st_mtime for p in tmp_path.rglob("sweep.csv")}
    run_study(
        str(DEMO),
        tmp_path,
        variants=["cmpt", "zero_fill"],
        seeds=[0, 1],
        train_rates=[0.5],
        test_rates=[0, 1],
        extra=TINY,
    )
    assert {p: p.stat().st_mtime for p in tmp_path.rglob("sweep.csv")} == stamp  # nothing re-run


def test_study_rejects_unknown_variants(tmp_path):
    with pytest.raises(ValueError, match="unknown study variants"):
        run_study(str(DEMO), tmp_path, variants=["magic"])
