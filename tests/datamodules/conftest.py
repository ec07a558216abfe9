"""Fixtures of the data module tests: fit then test the tiny model on a data module."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from cmpt_lightning.module import CMPTModule

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def fit_and_test(tmp_path):
    """Run ``Trainer(fast_dev_run=True)`` fit then test of the tiny CMPT on a data module."""

    def run(dm):
        model = CMPTModule(clip="cmpt-tiny", num_classes=dm.num_classes, task=dm.task.value)
        trainer = Trainer(
            fast_dev_run=True,
            accelerator="cpu",
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=dm)
        (metrics,) = trainer.test(model, datamodule=dm, verbose=False)
        return metrics

    return run
