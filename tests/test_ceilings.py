"""The demo's test metrics per availability case, printed next to the world's Bayes ceilings."""

from pathlib import Path

import numpy as np
import torch

from cmpt_lightning.datamodules.world import WorldDataModule
from cmpt_lightning.datasets.world import VALUES
from cmpt_lightning.datasets.world_tasks import LABEL_ATTRIBUTES, WorldScenesDataset, ceilings
from cmpt_lightning.evaluation import print_ceilings
from tests.helpers import cmpt
from tests.test_world import said_values

ROOT = Path(__file__).resolve().parents[1]
CEILINGS = {"image": 0.8333, "text": 0.6432, "both": 0.9583, "chance": 0.0417}


def test_print_ceilings_puts_each_case_next_to_its_ceiling(capsys):
    metrics = {
        "test/acc_complete": torch.tensor(0.5),
        "test/acc_image_only": torch.tensor(0.25),
        "test/acc_text_only": torch.tensor(0.125),
        "test/count_complete": torch.tensor(10.0),
        "test/count_image_only": 11.0,
        "test/count_text_only": 12.0,
    }
    assert print_ceilings(metrics, CEILINGS, "acc")
    lines = capsys.readouterr().out.splitlines()
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    row = {c[0]: c[1:] for c in cells}
    assert row["complete"] == ["0.500", "0.958", "10"]  # metric, ceiling (both), samples
    assert row["image_only"] == ["0.250", "0.833", "11"]  # the image alone
    assert row["text_only"] == ["0.125", "0.643", "12"]  # the text alone
    assert any("chance (no input): 0.042" in line for line in lines)
    assert not print_ceilings({"test/loss": 1.0}, CEILINGS, "acc")  # no case, no table


def test_the_demo_prints_its_ceilings_after_the_test(tmp_path, capfd):
    args = [
        "fit", "--config", ROOT / "configs" / "demo.yaml",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", tmp_path,
        "--data.init_args.train_size", "32", "--data.init_args.val_size", "16",
        "--data.init_args.test_size", "32", "--data.init_args.batch_size", "16",
    ]  # fmt: skip
    assert cmpt(args) == 0
    out = capfd.readouterr().out
    expected = WorldDataModule().ceilings()  # the exact ceilings of the demo's task
    assert "test acc against the Bayes ceiling" in out
    for case, source in (("complete", "both"), ("image_only", "image"), ("text_only", "text")):
        line = next(line for line in out.splitlines() if f" {case} " in line and "│" in line)
        assert f"{expected[source]:.3f}" in line, line
    assert f"chance (no input): {expected['chance']:.3f}" in out


def test_the_scenes_ceilings_are_those_of_a_perfect_reader():
    """Monte Carlo: a reader that sees every visible attribute and reads every stated one
    (from the caption's words), and guesses the rest uniformly, scores the exact ceilings."""
    n = 600  # a per-sample score has sd < 0.35: a standard error of about 0.014
    data = WorldScenesDataset(n, "test", lambda image: image, lambda texts: texts, (32, 32))
    attributes = LABEL_ATTRIBUTES[data.task]
    scores: dict[str, list[float]] = {"image": [], "text": [], "both": []}
    for i in range(n):
        scene, text = data.scene(i), data.load_text(i)
        seen = {a for a in attributes if scene.visible(a)}
        read = {a for a in attributes if said_values(text, a) == {getattr(scene, a)}}
        for source, known in (("image", seen), ("text", read), ("both", seen | read)):
            scores[source].append(
                float(np.prod([1.0 if a in known else 1 / len(VALUES[a]) for a in attributes]))
            )
    exact = ceilings("scenes", data.world)
    for source, values in scores.items():
        assert abs(np.mean(values) - exact[source]) < 0.045, (source, np.mean(values), exact)
    # the task's point: each direction loses much, and comparably
    assert abs(exact["image"] - exact["text"]) < 0.15
    assert exact["both"] - max(exact["image"], exact["text"]) > 0.25
    assert min(exact["image"], exact["text"]) > 5 * exact["chance"]
