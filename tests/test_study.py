import csv
import json
from pathlib import Path

import pytest
import yaml

from cmpt_lightning.models.head import Method
from cmpt_lightning.study import VARIANTS, StudyGrid, load_study_grid, run_study, study_grid
from cmpt_lightning.sweep.grid import ConfigResolver, Grid, expand_grid, load_grid
from tests.helpers import cmpt

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_random.yaml"
TINY = {
    "data.init_args.train_size": 48,
    "data.init_args.val_size": 16,
    "data.init_args.test_size": 24,
    "data.init_args.batch_size": 16,
    "trainer.max_epochs": 1,
}


LR = "model.init_args.optimizer.init_args.lr"
#: one hyper-parameter combination (the same for every variant), recorded in the tables
HPARAMS = {LR: [0.01], "trainer.max_epochs": [1]}
FIXED = {k: v for k, v in TINY.items() if k != "trainer.max_epochs"}


def test_study_end_to_end_and_resumable(tmp_path, capsys):
    code = cmpt(
        [
            "study",
            "--config", str(DEMO),
            "--out", str(tmp_path),
            "--seeds", "[0, 1]",
            "--variants", "[cmpt, zero_fill]",
            "--train_rates", "[0.5]",
            "--test_rates", "[0, 1]",
            "--hparams", yaml.safe_dump(HPARAMS, default_flow_style=True),
            "--overrides", yaml.safe_dump(FIXED, default_flow_style=True),
        ]
    )  # fmt: skip
    assert code == 0
    assert "the study has 4 fits (2 variant x 2 seed_everything)" in capsys.readouterr().out
    text = (tmp_path / "study.md").read_text()
    assert "| method | optimizer.lr | trainer.max_epochs | val |" in text
    assert "| cmpt | 0.01 | 1 |" in text and "| zero_fill | 0.01 | 1 |" in text
    assert "| case | method | mean difference | 95% CI | verdict |" in text
    assert "| complete | zero_fill |" in text and "10,000 resamples" in text
    with (tmp_path / "study.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == {"cmpt", "zero_fill"}
    assert all(r["seeds"] == "2" for r in rows) and len(rows) == 2 * 3 * 2
    assert {r["train_rate"] for r in rows} == {"0.5"} and {r["metric"] for r in rows} == {"acc"}
    assert {r["optimizer.lr"] for r in rows} == {"0.01"} and all(r["low"] for r in rows)
    with (tmp_path / "study_pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert len(pairs) == 3 * 2 and {p["pairs"] for p in pairs} == {"2"}
    assert {p["verdict"] for p in pairs} <= {"win", "tie", "loss"}
    assert (tmp_path / "study.png").stat().st_size > 1000
    # the study is a sweep: one cell per (variant, seed), collected by `cmpt sweep collect`
    cells = sorted(p.name for p in tmp_path.iterdir() if (p / "DONE").is_file())
    assert cells == [f"variant={v}__seed_everything={s}" for v in ("cmpt", "zero_fill")
                     for s in (0, 1)]  # fmt: skip
    assert (tmp_path / "results.csv").is_file()
    done = json.loads((tmp_path / cells[0] / "DONE").read_text())
    assert isinstance(done["val_score"], float) and done["val_monitor"] == "val/score"
    # an interrupted study: a re-run runs exactly the cells without a DONE marker
    stamp = {p.parent: p.stat().st_mtime for p in tmp_path.rglob("sweep.csv")}
    (tmp_path / cells[1] / "DONE").unlink()
    study = StudyGrid(variants=["cmpt", "zero_fill"], seeds=[0, 1], train_rates=[0.5])
    study.overrides, study.hparams = dict(FIXED), dict(HPARAMS)
    run_study(DEMO, tmp_path, study, test_rates=[0, 1])
    again = {p.parent: p.stat().st_mtime for p in tmp_path.rglob("sweep.csv")}
    ran = sorted(p.relative_to(tmp_path).parts[0] for p in again if again[p] != stamp.get(p))
    assert ran == [cells[1]]
    # it resumed from the finished fit's last.ckpt: the best validation score is still recorded
    assert isinstance(json.loads((tmp_path / cells[1] / "DONE").read_text())["val_score"], float)


def _printed_grid(text: str, tmp_path: Path) -> Grid:
    """The grid a study's dry run printed (everything after its "the study's grid" line)."""
    path = tmp_path / "printed.yaml"
    path.write_text(text.split("when the study runs):\n", 1)[1])
    return load_grid(path)


def test_the_0_1_spelling_of_study_still_works(tmp_path, capsys):
    args = ["--data.init_args.train_size", "48", "--trainer.max_epochs", "1"]
    out = tmp_path / "study"
    with pytest.warns(FutureWarning, match="deprecated"):
        code = cmpt(
            ["study", "--config", str(DEMO), "--out", str(out), "--seeds", "0",
             "--variants", "cmpt", "--train-rates", "0.5", "--test-rates", "0", "1",
             "--dry_run", "--", *args]
        )  # fmt: skip
    assert code == 0
    assert not out.exists()  # a dry run writes nothing: it prints the grid
    printed = capsys.readouterr().out
    assert "the study has 1 fit (one cell)" in printed
    grid = _printed_grid(printed, tmp_path)
    assert grid.axes["trainer.max_epochs"] == [1] and grid.axes["seed_everything"] == [0]
    assert grid.axes["data.init_args.train_size"] == [48] and grid.variants == {"cmpt": {}}


def test_the_built_in_study_is_the_shipped_grid():
    shipped = load_grid(ROOT / "configs" / "grids" / "study.yaml")
    built_in = study_grid(StudyGrid())
    assert shipped.variants == built_in.variants == VARIANTS
    assert shipped.axes == built_in.axes


def test_a_study_grid_file_with_its_own_variants(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "variants:\n  a: {}\n  b: {model.init_args.fusion: sum}\nseed_everything: [0]\n"
    )
    grid = study_grid(StudyGrid(grid=path, variants=["b"], seeds=[3]))
    assert grid.variants == {"b": {"model.init_args.fusion": "sum"}}
    assert grid.axes["seed_everything"] == [3]


def test_study_rejects_unknown_variants(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown study variants"):
        run_study(DEMO, tmp_path, StudyGrid(variants=["magic"]))
    assert cmpt(["study", "--out", str(tmp_path), "--variants", "[magic]"]) == 2
    assert "unknown study variants ['magic']" in capsys.readouterr().err


def test_the_study_compares_cross_copy_and_the_proxy_task_variant(tmp_path, capsys):
    assert VARIANTS["cross_copy"] == {"model.init_args.method": "cross_copy"}
    assert VARIANTS["cmpt_proxy_task"] == {"model.init_args.proxy_task_weight": 0.5}
    assert {"cross_copy", "cmpt_proxy_task"} <= set(study_grid(StudyGrid()).variants)
    study = StudyGrid(variants=["cross_copy", "cmpt_proxy_task"], seeds=[0], train_rates=[0.5])
    # a dry run parses every cell's config: the overrides are keys of the fit command
    assert run_study(DEMO, tmp_path / "study", study, dry_run=True) is None
    assert not (tmp_path / "study").exists()
    grid = _printed_grid(capsys.readouterr().out, tmp_path)
    assert grid.variants == {k: VARIANTS[k] for k in ("cross_copy", "cmpt_proxy_task")}
    typo = StudyGrid(variants=["cmpt"], seeds=[0], overrides={"model.init_args.proxy_task": 1})
    with pytest.raises(ValueError, match="proxy_task"):
        run_study(DEMO, tmp_path / "typo", typo, dry_run=True)


def test_a_dry_run_and_a_refused_rerun_leave_grid_yaml_as_it_was(tmp_path, capsys, monkeypatch):
    from cmpt_lightning.sweep import job as job_module

    def fit(config: Path) -> None:  # the training replaced by a sweep.csv writer
        run = config.parent / "lightning_logs" / "version_0"
        run.mkdir(parents=True, exist_ok=True)
        (run / "sweep.csv").write_text("type,rate,acc,count_complete\ntext,0.0,0.5,4\n")

    monkeypatch.setattr(job_module, "_fit", fit)
    out = tmp_path / "study"
    study = StudyGrid(variants=["cmpt"], seeds=[0], train_rates=[0.5], overrides=dict(TINY))
    run_study(DEMO, out, study, test_rates=[0])
    ran = (out / "grid.yaml").read_bytes()
    assert load_grid(out / "grid.yaml").variants == {"cmpt": {}}
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # a dry run of another grid: printed, nothing written into the study directory
    other = StudyGrid(variants=["zero_fill"], seeds=[1], train_rates=[0.5], overrides=dict(TINY))
    assert run_study(DEMO, out, other, dry_run=True, test_rates=[0]) is None
    assert "zero_fill" in capsys.readouterr().out
    assert cmpt(["study", "--config", DEMO, "--out", out, "--variants", "[zero_fill]",
                 "--seeds", "[1]", "--dry_run"]) == 0  # fmt: skip
    # a re-run refused for a different config of a finished cell
    changed = StudyGrid(variants=["cmpt"], seeds=[0], train_rates=[0.5],
                        overrides={**TINY, "trainer.max_epochs": 2})  # fmt: skip
    with pytest.raises(ValueError, match="different config"):
        run_study(DEMO, out, changed, test_rates=[0])
    # a grid that does not parse
    typo = StudyGrid(variants=["cmpt"], seeds=[0], overrides={"model.init_args.proxy_task": 1})
    with pytest.raises(ValueError, match="proxy_task"):
        run_study(DEMO, out, typo, test_rates=[0])
    assert (out / "grid.yaml").read_bytes() == ran
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert not list(out.glob(".grid.yaml.*"))  # no temporary file left behind


def test_hparams_cross_every_variant_and_are_kept_apart_in_grid_yaml(tmp_path, capsys):
    study = StudyGrid(variants=["cmpt", "zero_fill"], seeds=[0, 1], hparams={LR: [0.003, 0.01]})
    study.train_rates = [0.5]
    grid = study_grid(study)
    assert list(grid.axes)[-2:] == [LR, "seed_everything"]  # hparams before the seeds
    assert len(expand_grid(grid)) == 2 * 2 * 2
    with pytest.raises(ValueError, match="also set as grid axes or --overrides"):
        study_grid(StudyGrid(hparams={LR: [0.01]}, overrides={LR: 0.02}))
    with pytest.raises(TypeError, match="non-empty list"):
        study_grid(StudyGrid(hparams={LR: 0.01}))
    with pytest.raises(ValueError, match="seed or the variant"):
        study_grid(StudyGrid(hparams={"seed_everything": [0, 1]}))
    # the grid a dry run prints (and grid.yaml) keeps them in their own section
    one = StudyGrid(variants=["cmpt"], seeds=[0], hparams={LR: [0.003, 0.01]}, train_rates=[0.5])
    assert cmpt(["study", "--config", str(DEMO), "--out", str(tmp_path / "s"), "--variants",
                 "[cmpt]", "--seeds", "[0]", "--hparams", f"{{{LR}: [0.003, 0.01]}}",
                 "--train_rates", "[0.5]", "--dry_run"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "the study has 2 fits (2 optimizer.lr)" in printed
    path = tmp_path / "printed.yaml"
    path.write_text(printed.split("when the study runs):\n", 1)[1])
    loaded, hparams = load_study_grid(path)
    assert hparams == {LR: [0.003, 0.01]} and LR not in loaded.axes
    assert study_grid(StudyGrid(grid=path)).axes == study_grid(one).axes


def test_the_shipped_world_study_grid():
    path = ROOT / "configs" / "grids" / "world_study.yaml"
    grid, hparams = load_study_grid(path)
    assert hparams == {LR: [0.003, 0.01], "trainer.max_epochs": [5, 10]}
    assert list(grid.variants or {}) == [
        "cmpt", "cmpt_no_align", "zero_fill", "learned_token", "modality_dropout", "cross_copy",
        "align_distill", "text_specialist", "image_specialist",
    ]  # fmt: skip
    assert grid.axes["seed_everything"] == list(range(10))
    assert grid.axes["data.init_args.seed"] == [0, 1, 2]
    assert grid.axes["data.init_args.train_missing.rate"] == [0.0, 0.7]
    assert grid.axes["data.init_args.test_size"] == [5000]
    full = study_grid(StudyGrid(grid=path))
    tasks = len(grid.axes["data.init_args.task"])
    assert len(expand_grid(full)) == 9 * 4 * 10 * 3 * 2 * tasks
    # every axis value applies to the demo config: a cell of the first values, one of the last
    resolver = ConfigResolver([ROOT / "configs" / "demo.yaml"])
    variants = grid.variants or {}
    for pick, variant in ((0, "cmpt_no_align"), (-1, "zero_fill")):
        cell = {k: v[pick] for k, v in full.axes.items() if k != "variant"}
        resolver.parse({**cell, **variants[variant]})
    pending = {"align_distill", "text_specialist", "image_specialist"}  # methods being added
    methods = {b.get("model.init_args.method", "cmpt") for b in variants.values()}
    assert methods - pending <= {m.value for m in Method}
