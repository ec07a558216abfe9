import csv
import subprocess
import sys
from pathlib import Path

import pytest

from cmpt_lightning.main import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo_random.yaml")  # random-weight towers, synthetic data: fast
WORLD_DEMO = str(ROOT / "configs" / "demo.yaml")  # the README's demo: pretrained world towers
SMALL = [
    "--data.init_args.train_size",
    "48",
    "--data.init_args.val_size",
    "24",
    "--data.init_args.test_size",
    "24",
    "--data.init_args.batch_size",
    "12",
]


def _fast(tmp_path):
    return ["--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path), *SMALL]


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_demo_config_runs_every_subcommand(tmp_path, subcommand, capsys):
    main([subcommand, "--config", DEMO, *_fast(tmp_path)])
    if subcommand == "fit":  # test_after_fit: true in the demo config
        assert "test/acc_complete" in capsys.readouterr().out


def test_fit_then_test_from_checkpoint(tmp_path, capsys):
    args = [
        "--config",
        DEMO,
        *SMALL,
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
        "--test_after_fit",
        "false",
    ]
    main(["fit", *args])
    best = sorted(tmp_path.rglob("best-*.ckpt"))
    assert best, list(tmp_path.rglob("*"))
    assert best[0].stat().st_size < 1_000_000
    main(["test", *args, "--ckpt_path", str(best[0])])
    out = capsys.readouterr().out
    assert "test/acc_image_only" in out and "test/count_text_only" in out


def test_links_flow_num_classes_and_clip(tmp_path):
    from cmpt_lightning.datamodules.base import CMPTDataModule
    from cmpt_lightning.main import CMPTCLI
    from cmpt_lightning.module import CMPTModule

    cli = CMPTCLI(
        CMPTModule,
        CMPTDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config",
            DEMO,
            "--data.init_args.num_classes",
            "4",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
    )
    assert cli.model.num_classes == 4
    assert cli.model.model.head.classifier.out_features == 4
    assert cli.datamodule.clip_model == cli.model.hparams.clip == "cmpt-tiny"


def test_bad_config_value_names_the_field(tmp_path, capsys):
    with pytest.raises((SystemExit, ValueError)) as exc:
        main(
            [
                "fit",
                "--config",
                DEMO,
                "--data.init_args.train_missing.rate",
                "1.5",
                *_fast(tmp_path),
            ]
        )
    assert "missing rate must be in [0, 1], got 1.5" in str(exc.value) + capsys.readouterr().err
    assert not list(tmp_path.rglob("*.ckpt")), "nothing may run with a bad setting"


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def test_help_in_a_subprocess():
    results = []
    for cmd in (["cmpt", "--help"], [sys.executable, "-m", "cmpt_lightning", "fit", "--help"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "fit" in result.stdout or "--trainer" in result.stdout
        results.append(result)
    top = results[0]  # `cmpt --help`
    assert "{fit,validate,test,predict,sweep,study,data}" in top.stdout
    for line in (
        "run a grid of cmpt fit settings",
        "CMPT against the baselines",
        "cmpt data check",
    ):
        assert line in top.stdout, line


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["sweep", "run"], ["--grid", "--test_rates", "--dry_run", "--slurm.cpus_per_task"]),
        (["sweep", "collect"], ["RUN_DIR", "--metric", "--seed_keys"]),
        (["study"], ["--variants", "--train_rates", "--overrides", "--executor"]),
        (["data", "check", "csv"], ["--root", "--data_file", "--label_separator"]),
    ],
)
def test_every_command_has_generated_help_with_one_spelling(command, options, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text, option
    flags = [w for w in text.split() if w.startswith("--")]
    assert not [f for f in flags if "-" in f[2:].split("=")[0]], "flags are spelled with _"


def test_demo_learns_well_above_chance(tmp_path):
    """The README's demo (the world's objects task on the shipped pretrained tiny towers), in
    full (under a minute on 2 cores): fit then the test of the best checkpoint."""
    main(
        [
            "fit",
            "--config",
            WORLD_DEMO,
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            f'{{"class_path": "CSVLogger", "init_args": {{"save_dir": "{tmp_path}"}}}}',
        ]
    )
    rows = []
    for path in tmp_path.rglob("metrics.csv"):
        with path.open() as f:
            rows += [r for r in csv.DictReader(f) if r.get("test/acc")]
    assert rows, "no test metrics were written"
    metrics = {k: float(v) for k, v in rows[-1].items() if v and k.startswith("test/")}
    chance = 1 / 24  # Bayes ceilings: image 0.83, text 0.64, both 0.96
    assert metrics["test/acc"] > 8 * chance
    for case in ("complete", "image_only", "text_only"):
        assert metrics[f"test/acc_{case}"] > 6 * chance, case


def test_a_run_prints_none_of_the_known_harmless_notices(tmp_path):
    """No tensorboardX, litlogger, LeafSpec or deprecation notice, no random-weights log."""
    args = ["fit", "--config", DEMO, *SMALL, "--trainer.max_epochs", "1"]
    args += ["--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    result = subprocess.run(
        [sys.executable, "-m", "cmpt_lightning", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    for notice in ("tensorboardX", "litlogger", "LeafSpec", "No pretrained weights", "deprecated"):
        assert notice not in text, notice
