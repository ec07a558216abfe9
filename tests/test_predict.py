import csv
from pathlib import Path

from cmpt_lightning.main import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "csv"


def test_predict_writes_a_file_and_reports_samples_without_inputs(tmp_path):
    common = [
        "--config",
        str(ROOT / "configs" / "demo_random.yaml"),
        "--data",
        "MultimodalCSVDataModule",
        "--data.root",
        str(DATA),
        "--data.data_file",
        "data.csv",
        "--data.predict_file",
        "predict.csv",
        "--data.batch_size",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    main(["fit", *common, "--trainer.max_steps", "2", "--test_after_fit", "false"])
    (ckpt,) = tmp_path.rglob("last.ckpt")
    main(["predict", *common, "--ckpt_path", str(ckpt)])
    (path,) = tmp_path.rglob("predictions.csv")
    with path.open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"p0", "p1", "p2", "p3"}
    assert rows["p0"]["prediction"] in {"bird", "cat", "dog"}
    probs = [float(rows["p0"][f"p_{c}"]) for c in ("bird", "cat", "dog")]
    assert abs(sum(probs) - 1) < 1e-4 and float(rows["p0"]["score"]) == max(probs)
    assert (rows["p1"]["image_present"], rows["p1"]["text_present"]) == ("False", "True")
    assert (rows["p2"]["image_present"], rows["p2"]["text_present"]) == ("True", "False")
    assert rows["p3"]["prediction"] == "" and "neither an image nor a text" in rows["p3"]["note"]


def test_predict_reads_new_data_for_a_dataset_family(tmp_path):
    """`--data.init_args.predict_file` for Food-101 (was refused; predict ran on the test split)."""
    food = ROOT / "tests" / "data" / "food101" / "header"
    table = tmp_path / "new.csv"
    table.write_text(
        "image,text\n"
        "images/test/donuts/donuts_100.jpg,a glazed ring\n"
        ",\n"  # line 3: neither an image nor a text
        ",a slice of pie with cream\n"
    )
    main([
        "predict",
        "--config", str(ROOT / "configs" / "food101.yaml"),
        "--model.init_args.clip", "cmpt-tiny",
        "--model.init_args.pretrained", "null",
        "--data.init_args.root", str(food),
        "--data.init_args.predict_file", str(table),
        "--data.init_args.num_workers", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.precision", "32-true",
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    (path,) = tmp_path.rglob("predictions.csv")
    with path.open() as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["2", "4", "3"]  # ids are line numbers; the listed row comes last
    assert rows["2"]["prediction"] in {"apple_pie", "beef_tartare", "caesar_salad", "donuts"}
    assert (rows["4"]["image_present"], rows["4"]["text_present"]) == ("False", "True")
    assert rows["3"]["prediction"] == "" and "neither an image nor a text" in rows["3"]["note"]
