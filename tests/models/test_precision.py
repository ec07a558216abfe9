"""Frozen tower weights stored in bf16 under bf16 precision; trainable ones and checkpoints fp32."""

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from cmpt_lightning import CMPTModel, CMPTModule, SyntheticDataModule
from cmpt_lightning.models.precision import autocast_cast_weights, cast_frozen


def _trainer(tmp_path, precision, **kwargs):
    return Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _data():
    return SyntheticDataModule(train_size=16, val_size=8, test_size=8, batch_size=8)


def _frozen_dtypes(module):
    return {p.dtype for _, p in autocast_cast_weights(module.model.clip)}


class _SeenDtypes(Callback):
    """The frozen weights' dtypes while the trainer's batches run."""

    def __init__(self):
        self.seen = set()

    def on_train_batch_start(self, trainer, pl_module, *args):
        self.seen |= _frozen_dtypes(pl_module)

    def on_test_batch_start(self, trainer, pl_module, *args):
        self.seen |= _frozen_dtypes(pl_module)


def test_bf16_mixed_fit_keeps_frozen_towers_in_bf16_and_trainable_weights_in_fp32(tmp_path, batch):
    seed_everything(0)
    module = CMPTModule(num_classes=6)
    seen = _SeenDtypes()
    trainer = _trainer(tmp_path, "bf16-mixed", enable_checkpointing=True, callbacks=[seen])
    trainer.fit(module, datamodule=_data())
    assert seen.seen == {torch.bfloat16}
    # fp32 again after the trainer call: the module runs outside autocast
    assert _frozen_dtypes(module) == {torch.float32}
    images, texts = batch
    present = torch.ones(images.shape[0], dtype=torch.bool)
    assert module.model(images, texts, present, present).logits.dtype == torch.float32
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert any("lora_A" in n for n in trainable) and any("head" in n for n in trainable)
    saved = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert set(saved["state_dict"]) == set(trainable)
    assert all(v.dtype == torch.float32 for v in saved["state_dict"].values())


def test_checkpoint_of_fp32_training_loads_under_bf16_mixed(tmp_path):
    seed_everything(0)
    trainer = _trainer(tmp_path, "32-true", enable_checkpointing=True)
    trainer.fit(CMPTModule(num_classes=6), datamodule=_data())
    path = trainer.checkpoint_callback.best_model_path
    saved = torch.load(path, weights_only=True)["state_dict"]
    module = CMPTModule.load_from_checkpoint(path)
    seen = _SeenDtypes()
    trainer = _trainer(tmp_path, "bf16-mixed", callbacks=[seen])
    result = trainer.test(module, datamodule=_data(), verbose=False)
    assert torch.isfinite(torch.tensor(result[0]["test/loss"]))
    assert seen.seen == {torch.bfloat16}
    own = dict(module.named_parameters())
    for name, value in saved.items():  # the trainable weights loaded exactly, in fp32
        assert own[name].dtype == torch.float32 and torch.equal(own[name], value), name


def test_bf16_frozen_weights_give_the_same_logits_under_autocast(batch):
    images, texts = batch
    torch.manual_seed(0)
    model = CMPTModel("cmpt-tiny", 3).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    present = torch.tensor([True, True, False, True]), torch.tensor([True, False, True, True])
    with torch.no_grad():
        reference = model(images, texts, *present).logits.float()  # fp32, no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fp32_stored = model(images, texts, *present).logits.float()
            assert cast_frozen(model.clip, torch.bfloat16) > 0
            bf16_stored = model(images, texts, *present).logits.float()
    assert _frozen_dtypes(type("M", (), {"model": model})) == {torch.bfloat16}
    scale = reference.abs().max()
    torch.testing.assert_close(bf16_stored, fp32_stored, atol=0.02 * scale, rtol=0)
    torch.testing.assert_close(bf16_stored, reference, atol=0.03 * scale, rtol=0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable)


def test_cast_frozen_round_trip_and_refusals():
    torch.manual_seed(0)
    model = CMPTModel("cmpt-tiny", 3)
    names = [n for n, _ in autocast_cast_weights(model.clip)]
    assert any(n.endswith("in_proj.weight") for n in names)  # the LoRA layers' frozen W
    assert any(n.endswith("proj") for n in names) and not any("lora_" in n for n in names)
    count = cast_frozen(model.clip, torch.bfloat16)
    assert count == len(names) and cast_frozen(model.clip, torch.bfloat16) == 0
    assert cast_frozen(model.clip, torch.float32) == count
    model.double()
    assert cast_frozen(model.clip, torch.bfloat16) == 0  # a float64 model is left alone
    with pytest.raises(ValueError, match=r"float32 or torch.bfloat16, got torch.float16"):
        cast_frozen(model.clip, torch.float16)
