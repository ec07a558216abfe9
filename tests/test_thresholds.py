import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from cmpt_lightning import CMPTModule, SyntheticDataModule
from cmpt_lightning.metrics import compute_metrics
from cmpt_lightning.thresholds import select_thresholds

# per class (columns), scores sorted high to low; the best cut is known by hand:
# class 0: positives 0.9, 0.4 -> cut between 0.4 and 0.3 (F1 1; 2/3 at 0.5): midpoint 0.35
# class 1: positives 0.8, 0.7, 0.6 -> 0.5 already gives F1 1: it is kept
# class 2: positives 0.95, 0.9 -> cut between 0.9 and 0.6 (F1 1; 2/3 at 0.5): midpoint 0.75
PROBS = torch.tensor([[0.9, 0.8, 0.95], [0.4, 0.7, 0.9], [0.3, 0.6, 0.6], [0.2, 0.1, 0.55]])
TARGET = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0]])


def test_per_class_thresholds_on_hand_made_scores():
    thresholds = select_thresholds(torch.logit(PROBS), TARGET, "per_class")
    assert torch.allclose(thresholds, torch.tensor([0.35, 0.5, 0.75]), atol=1e-6)
    tuned = compute_metrics("multilabel", torch.logit(PROBS), TARGET, 3, thresholds)
    assert tuned["f1_macro_tuned"] == pytest.approx(1.0)
    assert tuned["f1_macro"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


def test_global_threshold_on_hand_made_scores():
    # one t for all: in [0.3, 0.4) F1 is 1, 1, 2/3 (mean 0.889), the best of every cut
    # (at 0.5: 2/3, 1, 2/3; in [0.6, 0.7): 2/3, 0.8, 1; in [0.2, 0.3): 0.8, 1, 2/3)
    thresholds = select_thresholds(torch.logit(PROBS), TARGET, "global")
    assert torch.allclose(thresholds, torch.full((3,), 0.35), atol=1e-6)
    tuned = compute_metrics("multilabel", torch.logit(PROBS), TARGET, 3, thresholds)
    assert tuned["f1_macro_tuned"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_fixed_mode_and_ties_keep_one_half():
    logits = torch.logit(PROBS)
    assert torch.equal(select_thresholds(logits, TARGET, "fixed"), torch.full((3,), 0.5))
    # equal scores cannot be split: the only cuts predict both or neither
    tied = torch.logit(torch.tensor([[0.7], [0.7]]))
    assert select_thresholds(tied, torch.tensor([[1], [0]]), "per_class").item() < 0.7
    # a class without positives: every cut scores 0, so 0.5 stays
    none = select_thresholds(logits[:, :1], torch.zeros(4, 1), "per_class")
    assert none.item() == 0.5


@pytest.mark.parametrize("mode", ["global", "per_class"])
def test_a_cut_between_adjacent_float32_scores_is_kept(mode):
    # two logits whose probabilities are adjacent float32 values: their midpoint rounds onto
    # the upper one, which `p > t` would then leave out
    logit = torch.tensor(1.2)
    while True:
        above = torch.nextafter(logit, torch.tensor(9.0))
        low, high = torch.sigmoid(logit), torch.sigmoid(above)
        if high > low and torch.nextafter(low, torch.tensor(2.0)) == high:
            break
        logit = above
    logits = torch.stack([above, logit]).reshape(2, 1).repeat(1, 2)  # shape = [2, 2]
    target = torch.tensor([[1, 1], [0, 0]])
    thresholds = select_thresholds(logits, target, mode)
    assert torch.equal(torch.sigmoid(logits) > thresholds, target.bool())


@pytest.mark.parametrize("mode", ["global", "per_class"])
def test_tuned_f1_is_the_best_on_random_scores(mode):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(9, 3, generator=gen).mul(2).round()  # many ties
        target = (torch.rand(9, 3, generator=gen) < 0.4).long()
        thresholds = select_thresholds(logits, target, mode)
        tuned = compute_metrics("multilabel", logits, target, 3, thresholds)["f1_macro_tuned"]
        probs = torch.sigmoid(logits).unique()
        grid = torch.cat([probs, (probs[1:] + probs[:-1]) / 2, torch.tensor([0.0, 0.5, 1.0])])
        if mode == "global":
            best = max(
                compute_metrics("multilabel", logits, target, 3, torch.full((3,), float(t)))[
                    "f1_macro_tuned"
                ]
                for t in grid
            )
        else:  # each class on its own: the classes' best F1, averaged
            best = 0.0
            for c in range(3):
                pred = torch.sigmoid(logits[:, c : c + 1]) > grid  # shape = [9, G]
                true = target[:, c : c + 1].bool()
                denom = pred.sum(0) + true.sum()
                f1 = torch.where(denom > 0, 2 * (pred & true).sum(0) / denom.clamp(min=1), 0.0)
                best += float(f1.max()) / 3
        assert tuned == pytest.approx(best, abs=1e-6)


def _multilabel(data, num_classes):
    def to_task(batch, dataloader_idx=0):
        batch = SyntheticDataModule.on_before_batch_transfer(data, batch, dataloader_idx)
        one_hot = torch.nn.functional.one_hot(batch["label"] % num_classes, num_classes)
        second = torch.nn.functional.one_hot((batch["label"] + 1) % num_classes, num_classes)
        batch["label"] = (one_hot + second * (batch["label"] % 2).unsqueeze(1)).float()
        return batch

    data.on_before_batch_transfer = to_task
    return data


def _test_logits(module, data):
    module.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in data.test_dataloader():
            batch = data.on_before_batch_transfer(batch, 0)
            logits.append(module(batch).logits)
            labels.append(batch["label"])
    return torch.cat(logits), torch.cat(labels)


def test_thresholds_tuned_on_validation_checkpointed_and_used_on_test(tmp_path):
    seed_everything(0)
    data = _multilabel(
        SyntheticDataModule(train_size=32, val_size=32, test_size=24, batch_size=16), 4
    )
    module = CMPTModule(num_classes=4, task="multilabel", threshold_mode="per_class")
    every = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[every],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    tuned = module.thresholds.clone()
    assert not torch.equal(tuned, torch.full((4,), 0.5)), "tuning must move a threshold"
    saved = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)["state_dict"]["thresholds"]
    assert torch.equal(saved, tuned)  # the last validation's thresholds, in its checkpoint
    first = torch.load(tmp_path / "epoch=0.ckpt", weights_only=True)["state_dict"]["thresholds"]

    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    assert torch.equal(module.thresholds, tuned), "never selected on test"
    logits, labels = _test_logits(module, data)
    expected = compute_metrics("multilabel", logits, labels, 4, tuned)
    assert metrics["test/f1_macro_tuned"] == pytest.approx(expected["f1_macro_tuned"], abs=1e-6)
    assert metrics["test/f1_macro"] == pytest.approx(expected["f1_macro"], abs=1e-6)
    assert metrics["test/map"] == pytest.approx(expected["map"], abs=1e-6)
    assert "test/auroc_macro" in metrics and "test/f1_macro_tuned_complete" in metrics

    # a fresh module restores the thresholds of the checkpoint it tests
    fresh = CMPTModule(num_classes=4, task="multilabel", threshold_mode="per_class")
    trainer.test(fresh, datamodule=data, ckpt_path=tmp_path / "epoch=0.ckpt", verbose=False)
    assert torch.equal(fresh.thresholds, first)
    loaded = CMPTModule.load_from_checkpoint(tmp_path / "epoch=1.ckpt")
    assert torch.equal(loaded.thresholds, tuned)
    # validate outside a fit does not re-tune either
    trainer.validate(loaded, datamodule=data, verbose=False)
    assert torch.equal(loaded.thresholds, tuned)


def test_fixed_thresholds_change_nothing_and_need_a_multilabel_task():
    module = CMPTModule(num_classes=4, task="multilabel")
    assert "thresholds" not in module.state_dict()
    with pytest.raises(ValueError, match="threshold_mode"):
        CMPTModule(num_classes=4, task="multiclass", threshold_mode="global")
