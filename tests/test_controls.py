"""The two controls beside the baselines: the single-modality specialists and align_distill."""

import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTModel, CMPTModule, SyntheticDataModule
from cmpt_lightning.evaluation import one_pass
from cmpt_lightning.losses import CMPTLoss
from cmpt_lightning.models import Method, build_clip

ALL = torch.tensor([True, True, True, True])
SOME_IMAGES = torch.tensor([True, False, True, True])
SOME_TEXTS = torch.tensor([True, True, False, True])
CONTROLS = ["image_specialist", "text_specialist", "align_distill"]
FUSION = ["head.gate.weight", "head.gate.bias", "head.classifier.weight", "head.classifier.bias"]


def _head_keys(method: str) -> tuple[list[str], set[str]]:
    keys = CMPTModel("cmpt-tiny", 3, method=method).trainable_state_dict()
    towers = {k.split(".")[1] for k in keys if k.startswith("clip.")}  # visual / transformer
    return sorted(k for k in keys if not k.startswith("clip.")), towers


def test_controls_parse_from_a_config_and_existing_checkpoint_keys_are_unchanged():
    parser = ArgumentParser()
    parser.add_class_arguments(CMPTModule, "model")
    for name in CONTROLS:
        parsed = parser.parse_string(f"model:\n  method: {name}\n")
        assert Method(parsed.model.method) is Method(name)
    # the checkpoint keys of the existing methods, as saved before the controls existed
    maps = [f"head.{side}_proxy_map.{p}" for side in ("text", "image") for p in ("weight", "bias")]
    expected = {
        "cmpt": sorted([*FUSION, *maps, "head.text_proxy_token", "head.image_proxy_token"]),
        "learned_token": sorted([*FUSION, "head.missing_image", "head.missing_text"]),
        "cross_copy": sorted(FUSION),
    }
    for method, keys in expected.items():
        assert _head_keys(method) == (keys, {"visual", "transformer"}), method
    distill = [f"head.{s}_distill_map.{p}" for s in ("text", "image") for p in ("weight", "bias")]
    assert _head_keys("align_distill") == (sorted([*FUSION, *distill]), {"visual", "transformer"})
    # a specialist trains only its own tower's adapters
    assert _head_keys("image_specialist") == (sorted(FUSION), {"visual"})
    assert _head_keys("text_specialist") == (sorted(FUSION), {"transformer"})


@pytest.mark.parametrize("method", ["image_specialist", "text_specialist"])
def test_a_specialists_logits_never_depend_on_the_other_modality(method, batch, tokenizer):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method=method).eval()
    with torch.no_grad():
        model.head.classifier.weight.normal_()
        model.head.gate.weight.normal_(0, 0.3)  # a gate that tells its two inputs apart
    other_images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    other_texts = tokenizer(["zebra", "q", "a green triangle on the left", "the end"])
    own = "image" if method == "image_specialist" else "text"
    with torch.no_grad():
        reference = model(images, texts, ALL, ALL).logits
        if own == "image":  # the text changed, or gone
            variants = [(images, other_texts, ALL, ALL), (images, texts, ALL, SOME_TEXTS)]
        else:
            variants = [(other_images, texts, ALL, ALL), (images, texts, SOME_IMAGES, ALL)]
        for args in variants:
            assert torch.equal(model(*args).logits, reference)
        # a sample without the specialist's modality gets the logits of a zero input: the bias
        if own == "image":
            lacking, row = model(images, texts, SOME_IMAGES, ALL).logits, 1
        else:
            lacking, row = model(images, texts, ALL, SOME_TEXTS).logits, 2
        torch.testing.assert_close(lacking[row], model.head.classifier.bias)
        # the one-pass evaluation gives every case the same logits as forward
        data = {"image": images, "text": texts, "image_present": ALL, "text_present": ALL}
        complete, image_only, text_only = one_pass(model, data)[1]["case_logits"].unbind(1)
        kept = image_only if own == "image" else text_only
        assert torch.equal(complete, reference) and torch.equal(kept, reference)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_specialists_task_loss_ignores_samples_without_its_modality(task, batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method="image_specialist")
    loss = CMPTLoss(task, align_weight=0.0)
    out = model(images, texts, SOME_IMAGES, ALL)
    assert torch.equal(out.task_mask, SOME_IMAGES)
    if task == "multiclass":
        target, other = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 2, 2, 1])
        expected = F.cross_entropy(out.logits[SOME_IMAGES], target[SOME_IMAGES])
    else:
        target = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
        other = target.clone()
        other[1] = 1 - other[1]
        expected = F.binary_cross_entropy_with_logits(
            out.logits[SOME_IMAGES], target[SOME_IMAGES].float()
        )
    task_loss = loss(out, target).task
    torch.testing.assert_close(task_loss, expected)
    torch.testing.assert_close(loss(out, other).task, task_loss)  # sample 1 has no image
    none = model(images, texts, torch.zeros(4, dtype=torch.bool), ALL)
    zero = loss(none, target).task  # no sample has an image: a zero that keeps the graph
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    module = CMPTModule(num_classes=3, method="image_specialist")
    assert module.loss.align_weight == 0.0 and module.modality_dropout == 0.0


def test_align_distill_regresses_the_present_embedding_onto_the_absent_one(batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method="align_distill")
    assert model.head.text_proxy_token is None and model.head.image_proxy_token is None
    reference = build_clip("cmpt-tiny", init_seed=0)
    out = model(images, texts, SOME_IMAGES, SOME_TEXTS)
    f = out.features
    with torch.no_grad():  # the towers run as open_clip's
        h_v, h_t = reference.encode_image(images), reference.encode_text(texts)
    torch.testing.assert_close(f.image[SOME_IMAGES], h_v[SOME_IMAGES], atol=1e-5, rtol=0)
    torch.testing.assert_close(f.text[SOME_TEXTS], h_t[SOME_TEXTS], atol=1e-5, rtol=0)
    # identity maps at init: the stand-in is the present embedding (cross_copy); zero if absent
    assert torch.equal(f.text_proxy, f.image) and torch.equal(f.image_proxy, f.text)
    assert not f.text_proxy[1].any() and not f.image_proxy[2].any()
    module = CMPTModule(num_classes=3, method="align_distill", align_weight=0.3)
    assert module.loss.align_weight == 0.3 and module.modality_dropout == 0.0
    align = module.loss.alignment(out)
    assert float(align.detach()) > 0
    align.backward()
    moved = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    assert {"head.text_distill_map.weight", "head.image_distill_map.weight"} <= moved
    assert all("distill_map" in n or "lora_" in n for n in moved), moved  # nothing else
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    f = model(images, texts, ALL, ALL).features
    assert not torch.allclose(f.text_proxy, f.image)


@pytest.mark.parametrize("method", CONTROLS)
def test_controls_fit_one_step(method, tmp_path):
    seed_everything(0)
    module = CMPTModule(num_classes=6, method=method)
    data = SyntheticDataModule(train_size=16, val_size=16, test_size=16, batch_size=16)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=1,
        default_root_dir=tmp_path,
    )
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    trainer.fit(module, datamodule=data)
    assert any(
        not torch.equal(p, before[n]) for n, p in module.named_parameters() if p.requires_grad
    )
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    # the proxy diagnostics are measured for align_distill's stand-ins, not for a specialist
    assert ("val/proxy_cos_text" in metrics) == (method == "align_distill")
    if method == "align_distill":
        assert float(metrics["train/align_loss"]) > 0
