import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTModel, CMPTModule, SweepConfig, SyntheticDataModule, TestGrid
from cmpt_lightning.evaluation import one_pass
from cmpt_lightning.models import build_clip

ALL = torch.tensor([True, True, True, True])
NO_TEXT = torch.tensor([False, False, False, False])


BASELINES = ["zero_fill", "learned_token", "modality_dropout", "cross_copy"]


@pytest.mark.parametrize("method", BASELINES)
def test_baselines_have_no_proxies_and_plain_towers(method, batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method=method).eval()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("proxy" in n for n in names)
    assert ("head.missing_text" in names) == (method == "learned_token")
    reference = build_clip("cmpt-tiny", init_seed=0)
    with torch.no_grad():
        f = model.encode(images, texts, ALL, ALL)
        torch.testing.assert_close(f.image, reference.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(f.text, reference.encode_text(texts), atol=1e-5, rtol=0)


def test_zero_fill_uses_zeros_and_learned_token_its_vector(batch):
    images, texts = batch
    zero = CMPTModel("cmpt-tiny", 3, method="zero_fill").eval()
    learned = CMPTModel("cmpt-tiny", 3, method="learned_token").eval()
    with torch.no_grad():
        learned.head.missing_text.normal_()
        out = zero(images, texts, ALL, NO_TEXT)
        expected = zero.head.classify(out.features.image, torch.zeros_like(out.features.image))
        torch.testing.assert_close(out.logits, expected)
        out = learned(images, texts, ALL, NO_TEXT)
        filled = learned.head.missing_text.expand(4, -1)
        torch.testing.assert_close(out.logits, learned.head.classify(out.features.image, filled))


def test_cross_copy_stands_in_with_the_other_towers_projected_clip_embedding(batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method="cross_copy").eval()
    assert model.method == "cross_copy" and not model.method.uses_proxies
    with torch.no_grad():
        model.head.classifier.weight.normal_()
        model.head.gate.weight.normal_(0, 0.3)  # a gate that tells its two inputs apart
    reference = build_clip("cmpt-tiny", init_seed=0)
    image_present = torch.tensor([True, False, True, True])
    text_present = torch.tensor([True, True, False, True])
    fused = []
    fuse = model.head.fuse
    model.head.fuse = lambda a, b: fused.append((a, b)) or fuse(a, b)
    with torch.no_grad():
        # the shared CLIP space: each tower's output after its final projection
        h_v, h_t = reference.encode_image(images), reference.encode_text(texts)
        out = model(images, texts, image_present, text_present)
    a, b = fused[-1]  # the fusion's image side and text side
    torch.testing.assert_close(a[1], h_t[1], atol=1e-5, rtol=0)  # image missing: a = h_T
    torch.testing.assert_close(b[1], h_t[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[2], h_v[2], atol=1e-5, rtol=0)  # text missing: b = h_V
    torch.testing.assert_close(b[2], h_v[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[[0, 3]], h_v[[0, 3]], atol=1e-5, rtol=0)  # complete: real ones
    torch.testing.assert_close(b[[0, 3]], h_t[[0, 3]], atol=1e-5, rtol=0)
    with torch.no_grad():
        expected = torch.stack(
            [
                model.head.classify(h_v[:1], h_t[:1])[0],
                model.head.classify(h_t[1:2], h_t[1:2])[0],
                model.head.classify(h_v[2:3], h_v[2:3])[0],
                model.head.classify(h_v[3:], h_t[3:])[0],
            ]
        )
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.logits[1], model.head.classify(h_v[1:2], h_t[1:2])[0])
    with pytest.raises(RuntimeError, match="use stand_ins"):
        model.head.substitutes(4, h_v)


def test_cross_copy_in_the_one_pass_evaluation(batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3, method="cross_copy").eval()
    with torch.no_grad():
        model.head.gate.weight.normal_(0, 0.3)
        present = torch.tensor([True, True, False, True])
        cell = {"image_present": ALL, "text_present": present}  # the configured cell
        data = {"image_available": ALL, "text_available": ALL}  # what the data has
        out, extra = one_pass(model, {"image": images, "text": texts, **cell, **data})
        h_v, h_t = out.features.image, out.features.text
        complete, image_only, text_only = extra["case_logits"].unbind(1)  # CASE_ORDER
        torch.testing.assert_close(complete, model.head.classify(h_v, h_t))
        torch.testing.assert_close(image_only, model.head.classify(h_v, h_v))
        torch.testing.assert_close(text_only, model.head.classify(h_t, h_t))
        torch.testing.assert_close(out.logits[2], image_only[2])  # the configured cell


def test_modality_dropout_only_touches_complete_samples():
    seed_everything(0)
    module = CMPTModule(num_classes=3, method="modality_dropout")
    assert module.modality_dropout == 0.3 and module.loss.align_weight == 0.0
    n = 4000
    image = torch.ones(n, dtype=torch.bool)
    text = torch.arange(n) % 4 != 0  # a quarter are image-only already
    out = module.drop_modalities({"image_present": image, "text_present": text})
    assert bool((out["image_present"] | out["text_present"]).all())
    assert bool(out["image_present"][~text].all()), "an image-only sample lost its image"
    dropped = (~out["image_present"] | ~out["text_present"]) & text
    assert abs(float(dropped.sum()) / float(text.sum()) - 0.3) < 0.03
    assert CMPTModule(num_classes=3).modality_dropout == 0.0


@pytest.mark.parametrize("method", BASELINES)
def test_baselines_train_and_test_grid(method, tmp_path):
    seed_everything(0)
    module = CMPTModule(num_classes=6, method=method, test_grid=TestGrid(rates=[0.0, 1.0]))
    data = SyntheticDataModule(train_size=32, val_size=16, test_size=16, batch_size=16)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=2,
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
    trainer.test(module, datamodule=data, verbose=False)
    assert len(module.test_grid_results) == 6


def test_deprecated_sweep_spelling_still_works_and_warns(tmp_path):
    with pytest.deprecated_call(match="model.init_args.sweep is deprecated, use .*test_grid"):
        module = CMPTModule(num_classes=6, sweep=SweepConfig(rates=[0.0, 1.0], types=["text"]))
    assert SweepConfig is TestGrid
    assert module.test_grid == TestGrid(rates=[0.0, 1.0], types=["text"])
    data = SyntheticDataModule(train_size=16, val_size=16, test_size=16, batch_size=16)
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.test(module, datamodule=data, verbose=False)
    assert module.sweep_results is module.test_grid_results and len(module.sweep_results) == 2
    assert (tmp_path / "sweep.csv").exists()
    with pytest.raises(ValueError, match="keep only test_grid"):
        CMPTModule(num_classes=6, sweep=TestGrid(), test_grid=TestGrid())
    grid = TestGrid(rates=[0.5])
    with pytest.deprecated_call(match="CMPTModule.sweep is deprecated"):
        module.sweep = grid  # the attribute too
    assert module.test_grid is grid and module.sweep is grid


def test_unknown_method_and_bad_dropout():
    with pytest.raises(ValueError, match="unknown method 'magic'; choose one of: cmpt, zero_fill"):
        CMPTModule(num_classes=3, method="magic")
    with pytest.raises(ValueError, match="modality_dropout must be in"):
        CMPTModule(num_classes=3, modality_dropout=2.0)
