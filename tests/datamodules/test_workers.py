"""``num_workers: null`` fits the machine; an explicit value is kept."""

import logging
import os

import pytest

from cmpt_lightning.datamodules import base
from cmpt_lightning.datamodules.base import default_num_workers, usable_cpus
from cmpt_lightning.datamodules.food101 import Food101DataModule
from cmpt_lightning.datamodules.synthetic import SyntheticDataModule

from .conftest import DATA

FOOD = DATA / "food101" / "header"


def _cores(monkeypatch, n):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (4, 3), (9, 8), (64, 8)])
def test_null_picks_one_worker_per_usable_core_less_one_at_most_8(monkeypatch, cores, workers):
    _cores(monkeypatch, cores)
    assert usable_cpus() == cores
    assert default_num_workers() == workers


def test_processes_of_one_machine_share_its_cores(monkeypatch):
    _cores(monkeypatch, 16)
    assert [default_num_workers(n) for n in (1, 2, 4, 8, 16)] == [8, 7, 3, 1, 0]


def test_without_affinity_all_cores_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus() == 6 and default_num_workers() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus() == 1 and default_num_workers() == 0


def test_file_modules_default_to_the_machine_and_the_demo_to_zero(monkeypatch):
    _cores(monkeypatch, 4)
    dm = Food101DataModule(root=str(FOOD), batch_size=4, val_fraction=0.2)
    assert dm.num_workers is None and dm.loader_workers() == 3
    assert dm.val_dataloader().num_workers == 3  # workers start only when it is iterated
    demo = SyntheticDataModule(train_size=4, val_size=4, test_size=4)
    assert demo.num_workers == 0 and demo.loader_workers() == 0


def test_more_workers_than_cores_are_kept_and_logged_once(monkeypatch, caplog):
    _cores(monkeypatch, 2)
    with caplog.at_level(logging.INFO, logger=base.__name__):
        dm = Food101DataModule(root=str(FOOD), num_workers=8)
    said = [r.getMessage() for r in caplog.records if "usable CPU cores" in r.getMessage()]
    assert said == [
        "num_workers=8 is more than the 2 usable CPU cores; kept as set "
        "(num_workers: null picks one per usable core, at most 8)"
    ]
    assert dm.loader_workers() == 8
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=base.__name__):
        Food101DataModule(root=str(FOOD), num_workers=2)
    assert "usable CPU cores" not in caplog.text


def test_negative_workers_are_refused():
    with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
        Food101DataModule(root=str(FOOD), num_workers=-1)
