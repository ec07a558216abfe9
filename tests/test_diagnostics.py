import math

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTLoss, CMPTModule, SyntheticDataModule
from cmpt_lightning.diagnostics import proxy_batch, proxy_hits, proxy_metrics, retrieval_hits
from cmpt_lightning.evaluation import TestGrid
from cmpt_lightning.models.cmpt import CMPTFeatures, CMPTOutput


def _features():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    text = torch.tensor([[0.0, 1.0], [0.0, 1.0], [3.0, 0.0]])
    text_proxy = torch.tensor([[1.0, 1.0], [0.0, 3.0], [0.0, 0.0]])  # stands for `text`
    image_proxy = torch.tensor([[2.0, 0.0], [0.0, -2.0], [0.0, 0.0]])  # stands for `image`
    present = torch.tensor([True, True, False])
    return CMPTFeatures(image, text, text_proxy, image_proxy, torch.ones(3, dtype=bool), present)


def test_distances_equal_hand_computations():
    f = _features()
    index = torch.tensor([0, 5, 9])
    per_sample, gallery = proxy_batch(f, index, f.image_present, f.text_present, gallery_size=4)
    # sample 0: text (0, 1), its proxy (1, 1): cos 1/sqrt(2), mse (1 + 0) / 2
    # sample 1: text (0, 1), its proxy (0, 3): cos 1, mse (0 + 4) / 2
    cos, mse = per_sample["proxy_cos_text"], per_sample["proxy_mse_text"]
    assert cos[:2].tolist() == pytest.approx([1 / math.sqrt(2), 1.0])
    assert mse[:2].tolist() == pytest.approx([0.5, 2.0])
    # image (1, 0) vs proxy (2, 0): cos 1, mse 0.5; image (0, 2) vs proxy (0, -2): cos -1, mse 8
    assert per_sample["proxy_cos_image"][:2].tolist() == pytest.approx([1.0, -1.0])
    assert per_sample["proxy_mse_image"][:2].tolist() == pytest.approx([0.5, 8.0])
    assert all(math.isnan(v[2]) for v in per_sample.values())  # sample 2 has no text
    assert gallery["index"].tolist() == [0]  # both modalities and index < 4
    assert torch.equal(gallery["proxy_text"], f.text_proxy[:1])
    means = proxy_metrics({**per_sample, **proxy_hits(index, gallery)})
    assert means["proxy_mse_text"] == pytest.approx(1.25) and means["count_proxy_text"] == 2
    assert means["proxy_r1_text"] == 1.0  # a gallery of one: its own real embedding


def test_mse_diagnostic_is_the_alignment_loss():
    f = _features()
    per_sample, _ = proxy_batch(f, torch.arange(3), f.image_present, f.text_present)
    loss = CMPTLoss("multiclass", align_loss="mse").alignment(CMPTOutput(torch.zeros(3, 2), f))
    means = proxy_metrics({**per_sample, **proxy_hits(torch.arange(3), {"index": torch.zeros(0)})})
    assert float(loss) == pytest.approx(means["proxy_mse_text"] + means["proxy_mse_image"])
    assert math.isnan(means["proxy_r1_text"])  # no gallery: no recall


def test_recall_at_one():
    real = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert retrieval_hits(real.clone(), real).all()  # identical proxies: recall 1
    swapped = real[[1, 0, *range(2, 50)]]
    hits = retrieval_hits(swapped, real)
    assert hits.tolist() == [False, False] + [True] * 48
    same = torch.ones(3, 4)  # every real embedding alike: a tie is a miss
    assert not retrieval_hits(same, same).any()


def _trainer(tmp_path):
    return Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def test_diagnostics_logged_for_cmpt_and_in_test_grid_cells(tmp_path):
    seed_everything(0)
    data = SyntheticDataModule(train_size=32, val_size=16, test_size=24, batch_size=8)
    grid = TestGrid(rates=[0.0, 1.0], types=["text", "image"])
    module = CMPTModule(num_classes=6, test_grid=grid)
    trainer = _trainer(tmp_path)
    trainer.fit(module, datamodule=data)
    assert "val/proxy_cos_text" in trainer.callback_metrics
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    assert metrics["test/proxy_gallery"] == 24 and metrics["test/count_proxy_image"] == 24
    assert -1 <= metrics["test/proxy_cos_text"] <= 1 and metrics["test/proxy_mse_image"] > 0
    assert 0 <= metrics["test/proxy_r1_text"] <= 1
    cells = {(c["type"], c["rate"]): c for c in module.test_grid_results}
    assert math.isnan(cells["text", 0.0]["proxy_cos_text"])  # nothing replaced at rate 0
    assert cells["text", 0.0]["count_proxy_text"] == 0
    for side in ("text", "image"):  # at rate 1 every sample's `side` is its proxy
        cell = cells[side, 1.0]
        assert cell[f"count_proxy_{side}"] == 24
        for name in ("cos", "mse", "r1"):
            key = f"proxy_{name}_{side}"
            assert cell[key] == pytest.approx(metrics[f"test/{key}"], abs=1e-6)
    csv_header = (tmp_path / "sweep.csv").read_text().splitlines()[0]
    assert "proxy_r1_text" in csv_header


def test_baselines_log_no_proxy_diagnostics(tmp_path):
    seed_everything(0)
    data = SyntheticDataModule(train_size=16, val_size=8, test_size=8, batch_size=8)
    module = CMPTModule(num_classes=6, method="zero_fill")
    trainer = _trainer(tmp_path)
    trainer.fit(module, datamodule=data)
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    assert "test/acc" in metrics
    assert not [k for k in metrics if "proxy" in k]
