import inspect
import logging
import os
import shutil

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTLoss, CMPTModel, CMPTModule, MissingConfig, SyntheticDataModule
from cmpt_lightning.errors import UserInputError
from cmpt_lightning.models import build_clip
from cmpt_lightning.models.cmpt import CMPTFeatures, CMPTOutput


def _trainer(tmp_path, **kwargs):
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    defaults.update(kwargs)
    return Trainer(**defaults)


def _data(**kwargs):
    defaults = {"train_size": 64, "val_size": 32, "test_size": 40, "batch_size": 16}
    defaults.update(kwargs)
    return SyntheticDataModule(**defaults)


def test_fit_changes_lora_and_not_frozen_weights(tmp_path):
    seed_everything(0)
    module = CMPTModule(num_classes=6)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    data = _data(train_missing=MissingConfig(rate=0.5, type="both"))
    trainer = _trainer(tmp_path, max_steps=6, val_check_interval=3, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 6
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    lora_b = {n for n in before if "lora_B" in n}
    assert lora_b and lora_b <= changed, "every LoRA B must have moved from zero"
    assert "model.head.text_proxy_token" in changed and "model.head.image_proxy_token" in changed
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    assert frozen and not (frozen & changed)


def test_checkpoint_round_trip_and_size(tmp_path):
    seed_everything(0)
    module = CMPTModule(num_classes=6)
    data = _data()
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # loads without unpickling project classes
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable
    bytes_trainable = sum(module.state_dict()[n].numel() * 4 for n in trainable)
    assert os.path.getsize(path) < 3 * bytes_trainable + 200_000  # weights + Adam states

    reloaded = CMPTModule.load_from_checkpoint(path).eval()
    # plain PyTorch: a new module takes the checkpoint's trainable-only state dict
    fresh = CMPTModule(num_classes=6)
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.eval()
    module.eval()
    batch = next(iter(data.test_dataloader()))
    batch = data.apply_missing(batch, "test")
    with torch.no_grad():
        expected = module(batch).logits
        assert not torch.equal(expected, CMPTModule(num_classes=6).eval()(batch).logits)
        assert torch.equal(expected, reloaded(batch).logits)
        assert torch.equal(expected, fresh(batch).logits)
    # a checkpoint from before proxy_task_weight and skip_absent_eval loads with their defaults
    for key in ("proxy_task_weight", "skip_absent_eval"):
        del ckpt["hyper_parameters"][key]
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = CMPTModule.load_from_checkpoint(tmp_path / "old.ckpt").eval()
    assert old.loss.proxy_task_weight == 0.0 and not old.model.skip_absent_eval
    with torch.no_grad():
        assert torch.equal(expected, old(batch).logits)


def test_checkpoint_of_vit_b16_is_small(tmp_path):
    module = CMPTModule(num_classes=101, clip="ViT-B-16")
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path / "weights.pt"
    torch.save(checkpoint["state_dict"], path)
    assert os.path.getsize(path) < 6_000_000  # the full model is ~600 MB


def test_checkpoint_with_other_lora_settings_is_refused(tmp_path):
    module = CMPTModule(num_classes=3, lora_rank=1)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    other = CMPTModule(num_classes=3, lora_targets="all")
    with pytest.raises(KeyError, match=r"lacks .* trainable weights"):
        other.on_load_checkpoint(checkpoint)


def _trained_state(module):
    """Move every trainable weight away from its initial value; return the checkpoint's state."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    return checkpoint["state_dict"]


def _logits(module, batch):
    images, texts = batch
    image_present = torch.tensor([True, True, False, True])
    text_present = torch.tensor([True, False, True, True])
    inputs = {"image": images, "text": texts}
    with torch.no_grad():
        return module.eval()(
            {**inputs, "image_present": image_present, "text_present": text_present}
        ).logits


def test_load_state_dict_takes_trainable_only_or_full_state(batch):
    saved = CMPTModule(num_classes=3)
    trainable = _trained_state(saved)
    assert len(trainable) < len(saved.state_dict())  # the frozen towers are left out
    expected = _logits(saved, batch)
    for state in (trainable, saved.state_dict()):
        module = CMPTModule(num_classes=3)
        assert not torch.equal(_logits(module, batch), expected)
        result = module.load_state_dict(state)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(_logits(module, batch), expected)


def test_load_state_dict_stays_strict_about_trainable_and_unknown_keys():
    saved = CMPTModule(num_classes=3)
    state = _trained_state(saved)
    lacking = {k: v for k, v in state.items() if k != "model.head.text_proxy_token"}
    with pytest.raises(
        RuntimeError,
        match=r"lacks 1 trainable weights .*text_proxy_token.*"
        r"CMPTModule\.load_from_checkpoint",
    ):
        CMPTModule(num_classes=3).load_state_dict(lacking)
    with pytest.raises(RuntimeError, match=r"1 keys this CMPTModule does not have .*'extra'"):
        CMPTModule(num_classes=3).load_state_dict({**state, "extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"whole checkpoint.*checkpoint\['state_dict'\]"):
        CMPTModule(num_classes=3).load_state_dict({"state_dict": state, "epoch": 0})
    model_keys = {k.removeprefix("model."): v for k, v in state.items()}
    with pytest.raises(RuntimeError, match=r"lack the 'model\.' prefix"):
        CMPTModule(num_classes=3).load_state_dict(model_keys)
    with pytest.raises(RuntimeError, match="size mismatch"):  # torch's own check still runs
        CMPTModule(num_classes=4).load_state_dict(state)
    # not strict: what matches loads, the rest is reported as torch does
    module = CMPTModule(num_classes=3)
    result = module.load_state_dict({**lacking, "extra": torch.zeros(1)}, strict=False)
    assert result.missing_keys == ["model.head.text_proxy_token"]
    assert result.unexpected_keys == ["extra"]
    assert torch.equal(module.model.head.image_proxy_token, saved.model.head.image_proxy_token)


def test_checkpoint_keeps_pretrained_as_given_and_names_the_fix_when_moved(tmp_path, monkeypatch):
    clip = build_clip("cmpt-tiny", init_seed=5)
    torch.save(clip.state_dict(), tmp_path / "w.bin")
    monkeypatch.chdir(tmp_path)
    module = CMPTModule(num_classes=6, pretrained="w.bin")
    conv = module.model.clip.visual.conv1.weight
    assert torch.equal(conv, clip.visual.conv1.weight)  # open_clip loaded the file
    assert not torch.equal(conv, CMPTModule(num_classes=6).model.clip.visual.conv1.weight)
    data = _data()
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["pretrained"] == "w.bin"

    (tmp_path / "moved").mkdir()
    shutil.move(tmp_path / "w.bin", tmp_path / "moved" / "place.bin")
    with pytest.raises(FileNotFoundError, match=r"'w\.bin' does not exist") as error:
        CMPTModule.load_from_checkpoint(path)
    message = str(error.value)
    assert "load_from_checkpoint(ckpt_path, pretrained=" in message
    assert "--model.init_args.pretrained" in message
    assert isinstance(error.value, UserInputError)  # the CLI prints it as one message

    reloaded = CMPTModule.load_from_checkpoint(path, pretrained="moved/place.bin").eval()
    module.eval()
    batch = data.apply_missing(next(iter(data.test_dataloader())), "test")
    with torch.no_grad():
        assert torch.equal(module(batch).logits, reloaded(batch).logits)


def test_random_weights_do_not_log_open_clips_warning(caplog):
    import open_clip

    message = "No pretrained weights loaded"
    caplog.set_level(logging.DEBUG)
    open_clip.create_model("cmpt-tiny")  # the control: open_clip itself logs it
    assert any(message in r.getMessage() for r in caplog.records)
    caplog.clear()
    filters = list(logging.getLogger().filters)
    CMPTModule(num_classes=3)
    assert not any(message in r.getMessage() for r in caplog.records)
    assert logging.getLogger().filters == filters  # the filter was scoped to the build


@pytest.mark.parametrize("task,num_classes", [("multilabel", 4), ("binary", 1)])
def test_other_tasks_train_and_evaluate(tmp_path, task, num_classes):
    module = CMPTModule(num_classes=num_classes, task=task)
    data = _data()
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1, enable_checkpointing=False)

    def to_task(batch, dataloader_idx=0):
        batch = SyntheticDataModule.on_before_batch_transfer(data, batch, dataloader_idx)
        if task == "binary":
            batch["label"] = (batch["label"] % 2).long()
        else:
            batch["label"] = torch.nn.functional.one_hot(
                batch["label"] % num_classes, num_classes
            ).float()
        return batch

    data.on_before_batch_transfer = to_task
    trainer.fit(module, datamodule=data)
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    expected = {"multilabel": "test/f1_macro", "binary": "test/auroc"}[task]
    assert expected in metrics and "test/score" in metrics


def _output(complete):
    n = len(complete)
    feats = CMPTFeatures(
        image=torch.randn(n, 4, requires_grad=True),
        text=torch.randn(n, 4, requires_grad=True),
        text_proxy=torch.randn(n, 4, requires_grad=True),
        image_proxy=torch.randn(n, 4, requires_grad=True),
        image_present=torch.tensor(complete),
        text_present=torch.ones(n, dtype=torch.bool),
    )
    return CMPTOutput(logits=torch.randn(n, 3, requires_grad=True), features=feats)


def test_loss_alignment_on_complete_samples_only():
    out = _output([True, False, True])
    loss = CMPTLoss("multiclass", align_weight=0.5)
    parts = loss(out, torch.tensor([0, 1, 2]))
    f = out.features
    rows = torch.tensor([0, 2])
    expected = ((f.text_proxy[rows] - f.text[rows]) ** 2).mean(-1) + (
        (f.image_proxy[rows] - f.image[rows]) ** 2
    ).mean(-1)
    torch.testing.assert_close(parts.align, expected.mean())
    torch.testing.assert_close(parts.total, parts.task + 0.5 * parts.align)
    parts.total.backward()
    assert f.text.grad is None or float(f.text.grad.abs().sum()) == 0.0  # target detached


def test_loss_without_complete_samples_is_zero_but_differentiable():
    out = _output([False, False])
    parts = CMPTLoss("multiclass")(out, torch.tensor([0, 1]))
    assert float(parts.align) == 0.0
    parts.total.backward()


def test_loss_cosine_and_undetached():
    out = _output([True])
    parts = CMPTLoss("multiclass", align_loss="cosine", detach_target=False)(out, torch.tensor([1]))
    parts.total.backward()
    assert out.features.text.grad is not None and float(out.features.text.grad.abs().sum()) > 0


def test_bad_module_settings():
    with pytest.raises(ValueError, match="warmup_ratio"):
        CMPTModule(num_classes=3, warmup_ratio=1.5)
    with pytest.raises(ValueError, match="align_weight must be >= 0"):
        CMPTModule(num_classes=3, align_weight=-1.0)
    with pytest.raises(ValueError, match="binary task has 1 or 2 classes"):
        CMPTModule(num_classes=5, task="binary")


def test_head_learning_rate_scale(tmp_path):
    module = CMPTModule(num_classes=6, head_lr_scale=10.0)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, datamodule=_data())
    groups = trainer.optimizers[0].param_groups
    head = {id(p) for p in module.model.head.parameters()}
    assert len(groups) == 2 and all(id(p) in head for p in groups[1]["params"])
    assert not any(id(p) in head for p in groups[0]["params"])
    assert groups[1]["initial_lr"] == pytest.approx(10 * groups[0]["initial_lr"])
    with pytest.raises(ValueError, match="head_lr_scale must be > 0"):
        CMPTModule(num_classes=3, head_lr_scale=0.0)


#: CMPTModel's settings that CMPTModule passes through with **kwargs
FORWARDED = [
    "pretrained",
    "quick_gelu",
    "init_seed",
    "tower_seed",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "skip_absent",
    "skip_absent_eval",
    "grad_checkpointing",
    "compile_towers",
]


def test_forwarded_model_settings_are_typed_options_and_saved_with_defaults():
    parser = ArgumentParser()
    parser.add_class_arguments(CMPTModule, "model")
    defaults = parser.get_defaults()
    signature = inspect.signature(CMPTModel).parameters
    actions = {a.dest: a for a in parser._actions}
    for name in FORWARDED:
        assert defaults[f"model.{name}"] == signature[name].default, name
        assert actions[f"model.{name}"].help, f"{name} has no help"
    assert parser.parse_args(["--model.lora_rank", "4"]).model.lora_rank == 4
    with pytest.raises(SystemExit):  # a typed option: "x" is not an int
        parser.parse_args(["--model.lora_rank", "x"])
    hparams = CMPTModule(num_classes=3, lora_alpha=2.0).hparams
    assert {name: hparams[name] for name in FORWARDED} == {
        **{name: signature[name].default for name in FORWARDED},
        "lora_alpha": 2.0,
        "init_seed": int(os.environ.get("PL_GLOBAL_SEED", 0)),  # saved as resolved
        "tower_seed": 0,
    }
    with pytest.raises(TypeError, match=r"unknown arguments \['lora_rnak'\].*lora_rank"):
        CMPTModule(num_classes=3, lora_rnak=2)
