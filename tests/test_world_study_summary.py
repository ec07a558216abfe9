"""scripts/summarize_world_study.py gathers the study's runs into one table per task and case."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "summarize_world_study.py"


def _script():
    spec = importlib.util.spec_from_file_location("summarize_world_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_tables_hold_each_runs_mean_and_spread(tmp_path):
    runs = tmp_path / "runs"
    run = runs / "objects-1024"
    run.mkdir(parents=True)
    rows = ["train_rate,variant,type,rate,metric,mean,std,seeds"]
    for train_rate in (0.0, 0.7):
        for kind, rate, mean in (("image", 1.0, 0.55), ("text", 1.0, 0.43), ("both", 0.0, 0.64)):
            rows.append(f"{train_rate},cmpt,{kind},{rate},acc,{mean + train_rate},0.02,3")
    (run / "study.csv").write_text("\n".join(rows) + "\n")
    (run / "study.md").write_text("# table\n")
    summary = _script().summarize(runs, tmp_path / "out").read_text()
    assert (tmp_path / "out" / "objects-1024.md").read_text() == "# table\n"
    image = summary.split("## objects (accuracy), image missing")[1].split("##")[0]
    assert "| cmpt | 0.550 ± 0.020 | 1.250 ± 0.020 |" in image
    assert "| zero_fill | - | - |" in image  # a variant the run lacks is marked, not invented
    assert "## tags (F1 macro)\n\nNot run." in summary
