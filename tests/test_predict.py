import csv
from pathlib import Path

from cmpt_lightning.main import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "csv"


def test_predict_writes_a_file_and_reports_samples_without_inputs(tmp_path):
    common = [
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
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
