"""The proxy task loss (mu): off by default and exactly absent, on complete samples only."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTLoss, CMPTModule, SyntheticDataModule
from cmpt_lightning.models.cmpt import CMPTFeatures, CMPTOutput
from cmpt_lightning.models.head import AvailabilityCase

CASES = (AvailabilityCase.COMPLETE, AvailabilityCase.IMAGE_ONLY, AvailabilityCase.TEXT_ONLY)


def _output(complete):
    n = len(complete)
    feats = CMPTFeatures(
        image=torch.randn(n, 4),
        text=torch.randn(n, 4),
        text_proxy=torch.randn(n, 4, requires_grad=True),
        image_proxy=torch.randn(n, 4, requires_grad=True),
        image_present=torch.tensor(complete),
        text_present=torch.ones(n, dtype=torch.bool),
    )
    return CMPTOutput(logits=torch.randn(n, 3, requires_grad=True), features=feats)


def _cases(n):
    return {case: torch.randn(n, 3, requires_grad=True) for case in CASES}


def test_proxy_task_loss_is_the_task_loss_of_both_proxy_cases_of_complete_samples():
    out, cases, target = _output([True, False, True]), _cases(3), torch.tensor([0, 1, 2])
    parts = CMPTLoss("multiclass", align_weight=0.2, proxy_task_weight=0.5)(out, target, cases)
    rows = torch.tensor([0, 2])  # the complete samples
    image_only = F.cross_entropy(cases[AvailabilityCase.IMAGE_ONLY][rows], target[rows])
    text_only = F.cross_entropy(cases[AvailabilityCase.TEXT_ONLY][rows], target[rows])
    torch.testing.assert_close(parts.proxy_task, (image_only + text_only) / 2)
    torch.testing.assert_close(parts.total, parts.task + 0.2 * parts.align + 0.5 * parts.proxy_task)
    parts.total.backward()
    assert cases[AvailabilityCase.COMPLETE].grad is None  # the configured logits are out.logits
    grad = cases[AvailabilityCase.IMAGE_ONLY].grad
    assert float(grad[1].abs().sum()) == 0.0 and float(grad[0].abs().sum()) > 0.0


def test_proxy_task_loss_without_complete_samples_is_zero_but_differentiable():
    out, cases = _output([False, False]), _cases(2)
    parts = CMPTLoss("multiclass", proxy_task_weight=1.0)(out, torch.tensor([0, 1]), cases)
    assert float(parts.proxy_task.detach()) == 0.0
    parts.total.backward()
    assert cases[AvailabilityCase.TEXT_ONLY].grad is not None


def test_proxy_task_weight_is_validated_and_needs_the_case_logits():
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match=r"proxy_task_weight \(mu\) must be >= 0, got"):
            CMPTLoss("multiclass", proxy_task_weight=bad)
    with pytest.raises(ValueError, match=r"proxy_task_weight \(mu\) must be >= 0, got -1.0"):
        CMPTModule(num_classes=3, proxy_task_weight=-1.0)
    loss = CMPTLoss("multiclass", proxy_task_weight=0.5)
    with pytest.raises(ValueError, match=r"pass model.case_logits\(output.features\)"):
        loss(_output([True]), torch.tensor([0]))


def _train_batch(n=6):
    gen = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(n, 3, 32, 32, generator=gen),
        "text": torch.randint(1, 400, (n, 16), generator=gen),
        "image_present": torch.tensor([True, True, False, True, True, True])[:n],
        "text_present": torch.tensor([True, False, True, True, True, True])[:n],
        "label": torch.tensor([0, 1, 2, 0, 1, 2])[:n],
    }


def _perturbed(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name or "gate.weight" in name:
                p.normal_(0, 0.1)
    return module.train()


def test_default_mu_leaves_the_loss_and_its_gradients_exactly_as_without_the_term():
    module = _perturbed(CMPTModule(num_classes=3))
    batch = _train_batch()
    output = module(batch)
    parts = module._loss(output, batch["label"])
    # the objective without the term: L_task + lambda * L_align, computed by hand
    reference = F.cross_entropy(output.logits, batch["label"]) + 0.2 * module.loss.alignment(output)
    assert torch.equal(parts.total, reference) and float(parts.proxy_task) == 0.0
    params = [p for p in module.parameters() if p.requires_grad]
    got = torch.autograd.grad(parts.total, params, retain_graph=True, allow_unused=True)
    expected = torch.autograd.grad(reference, params, allow_unused=True)
    for g, e in zip(got, expected, strict=True):
        assert (g is None and e is None) or torch.equal(g, e)
    assert module.hparams.proxy_task_weight == 0.0


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_mu_trains_the_proxies_through_the_substituted_logits(mu):
    """Without alignment, only the proxy task loss can reach the proxies of complete samples."""
    module = _perturbed(CMPTModule(num_classes=3, align_weight=0.0, proxy_task_weight=mu))
    batch = {**_train_batch(), "image_present": torch.ones(6, dtype=torch.bool)}
    batch["text_present"] = torch.ones(6, dtype=torch.bool)
    output = module(batch)
    parts = module._loss(output, batch["label"])
    parts.total.backward()
    head = module.model.head
    proxies = {
        "text_proxy_token": head.text_proxy_token,
        "image_proxy_token": head.image_proxy_token,
        "text_proxy_map": head.text_proxy_map.weight,
        "image_proxy_map": head.image_proxy_map.weight,
    }
    for name, p in proxies.items():
        norm = 0.0 if p.grad is None else float(p.grad.abs().sum())
        assert (norm > 0) == (mu > 0), (name, norm)
    if mu > 0:
        cases = module.model.case_logits(output.features.detach())
        y = batch["label"]
        expected = 0.5 * (
            F.cross_entropy(cases[AvailabilityCase.IMAGE_ONLY], y)
            + F.cross_entropy(cases[AvailabilityCase.TEXT_ONLY], y)
        )
        torch.testing.assert_close(parts.proxy_task, expected)


def test_fit_logs_the_proxy_task_loss_as_its_own_part(tmp_path):
    seed_everything(0)
    module = CMPTModule(num_classes=6, proxy_task_weight=0.5)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=SyntheticDataModule(train_size=32, val_size=16, batch_size=16))
    logged = trainer.callback_metrics
    assert float(logged["train/proxy_task_loss"]) > 0.0 and "val/loss" in logged
    assert module.hparams.proxy_task_weight == 0.5
