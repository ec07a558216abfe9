import copy
import pickle

import loralib
import open_clip
import pytest
import torch

from cmpt_lightning import CMPTModel
from cmpt_lightning.models import ProxyTokenHead, build_clip

ALL = torch.tensor([True, True, True, True])


@pytest.fixture
def model():
    return CMPTModel("cmpt-tiny", 5).eval()


def _perturb_lora(model):
    """Give every adapter non-zero B so that LoRA actually changes the towers."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)


def test_real_embeddings_equal_open_clip(model, batch):
    images, texts = batch
    reference = build_clip("cmpt-tiny", init_seed=0)
    with torch.no_grad():
        f = model.encode(images, texts, ALL, ALL)
        torch.testing.assert_close(f.image, reference.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(f.text, reference.encode_text(texts), atol=1e-5, rtol=0)


def test_real_embeddings_do_not_depend_on_the_proxy(model, batch):
    images, texts = batch
    _perturb_lora(model)
    with torch.no_grad():
        before = model.encode(images, texts, ALL, ALL)
        model.head.text_proxy_token.normal_()
        model.head.image_proxy_token.normal_()
        after = model.encode(images, texts, ALL, ALL)
    assert torch.equal(before.image, after.image)
    assert torch.equal(before.text, after.text)
    assert not torch.allclose(before.text_proxy, after.text_proxy)
    assert not torch.allclose(before.image_proxy, after.image_proxy)


def test_text_proxy_ignores_padding(model, tokenizer):
    """Tokens after end-of-text (id 0 padding) must not reach the proxy, whatever their ids."""
    texts = tokenizer(["a red square"])
    eot = int(texts.argmax())
    altered = texts.clone()
    altered[0, eot + 1 :] = 7  # garbage after the end of text
    images = torch.zeros(1, 3, 32, 32)
    present, absent = torch.tensor([True]), torch.tensor([False])
    with torch.no_grad():
        a = model.encode(images, texts, absent, present)
        b = model.encode(images, altered, absent, present)
    torch.testing.assert_close(a.image_proxy, b.image_proxy, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.text, b.text, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_absent_inputs_cannot_change_logits(model, batch, mode):
    images, texts = batch
    _perturb_lora(model)
    model.train(mode == "train")
    image_present = torch.tensor([True, False, True, True])
    text_present = torch.tensor([True, True, False, True])
    with torch.no_grad():
        base = model(images, texts, image_present, text_present).logits
        images2, texts2 = images.clone(), texts.clone()
        images2[1] = torch.randn(3, 32, 32) * 100
        texts2[2] = torch.randint(1, 49000, (texts.shape[1],))
        changed = model(images2, texts2, image_present, text_present).logits
    assert torch.equal(base, changed)


def test_both_absent_is_an_error(model, batch):
    images, texts = batch
    with pytest.raises(ValueError, match=r"batch positions \[1\] have neither image nor text"):
        model(
            images,
            texts,
            torch.tensor([True, False, True, True]),
            torch.tensor([True, False, True, True]),
        )


def test_bad_mask_dtype_is_an_error(model, batch):
    images, texts = batch
    with pytest.raises(ValueError, match="image_present must be a bool tensor"):
        model(images, texts, torch.ones(4), ALL)


def test_only_adapters_and_head_are_trainable(model):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for name in trainable:
        assert "lora_" in name or name.startswith("head."), name
    head = {n for n, _ in model.head.named_parameters()}
    assert {"text_proxy_token", "image_proxy_token", "classifier.weight", "gate.weight"} <= head
    assert all(p.requires_grad for p in model.head.parameters())
    frozen = [n for n, p in model.clip.named_parameters() if not p.requires_grad]
    assert any("in_proj.weight" in n for n in frozen)
    assert not any(p.requires_grad for n, p in model.clip.named_parameters() if "bias" in n)


def test_lora_parameter_count_vit_b16():
    model = CMPTModel("ViT-B-16", 10, lora_rank=1)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    # q and v of 12 vision blocks (width 768) and 12 text blocks (width 512):
    # each adapted projection has A [r, width] and B [width, r]
    assert lora == 12 * 2 * 2 * 768 + 12 * 2 * 2 * 512
    qkv = CMPTModel("cmpt-tiny", 3, lora_rank=2, lora_targets="qkv")
    count = sum(p.numel() for n, p in qkv.named_parameters() if "lora_" in n)
    assert count == 2 * (2 * 3 * 2 * 2 * 64)  # 2 towers x 2 blocks x 3 projections x (A + B)


def test_lora_all_targets_adapt_mlp():
    model = CMPTModel("cmpt-tiny", 3, lora_targets="all")
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any("mlp.c_fc" in n for n in names) and any("attn.out_proj" in n for n in names)


def test_checkpoint_keys_are_stable():
    """Checkpoints name the replaced attention as open_clip's block did (attn.in_proj, out_proj)."""
    keys = set(CMPTModel("cmpt-tiny", 3, lora_targets="all").state_dict())
    suffixes = ["attn.in_proj.weight", "attn.in_proj.bias", "attn.in_proj.lora_A"]
    suffixes += ["attn.in_proj.lora_B", "attn.out_proj.weight", "attn.out_proj.lora_A"]
    suffixes += ["mlp.c_fc.lora_A", "mlp.c_proj.lora_B"]
    for tower in ("clip.transformer", "clip.visual.transformer"):
        for suffix in suffixes:
            assert f"{tower}.resblocks.0.{suffix}" in keys


def test_model_pickles_and_deepcopies(model):
    clone = pickle.loads(pickle.dumps(model))
    copied = copy.deepcopy(model)
    assert isinstance(clone, CMPTModel) and isinstance(copied, CMPTModel)
    for module in model.modules():
        if isinstance(module, loralib.LoRALayer):
            assert isinstance(module.lora_dropout, torch.nn.Module)


def test_instance_is_used_as_is():
    clip = open_clip.create_model("cmpt-tiny")
    model = CMPTModel(clip, 3)
    assert model.clip is clip
    with pytest.raises(ValueError, match="pretrained is only used with a model name"):
        CMPTModel(open_clip.create_model("cmpt-tiny"), 3, pretrained="openai")


def test_unknown_model_and_missing_weights_file():
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Nope'"):
        CMPTModel("ViT-Nope", 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CMPTModel("cmpt-tiny", 3, pretrained="/nonexistent/weights.bin")


def test_pretrained_file_loads_before_adapters(tmp_path):
    source = build_clip("cmpt-tiny", init_seed=123)
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    model = CMPTModel("cmpt-tiny", 3, pretrained=str(path)).eval()
    images = torch.randn(2, 3, 32, 32)
    texts = open_clip.get_tokenizer("cmpt-tiny")(["a", "b c"])
    two = torch.tensor([True, True])
    with torch.no_grad():
        f = model.encode(images, texts, two, two)
        torch.testing.assert_close(f.image, source.encode_image(images), atol=1e-5, rtol=0)


def test_openai_named_file_gets_quickgelu(tmp_path, caplog):
    from open_clip.transformer import QuickGELU

    path = tmp_path / "ViT-tiny-openai.pt"
    torch.save(build_clip("cmpt-tiny", quick_gelu=True).state_dict(), path)
    model = CMPTModel("cmpt-tiny", 3, pretrained=str(path))
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    assert "looks like OpenAI CLIP weights" in caplog.text
    plain = CMPTModel("cmpt-tiny", 3, pretrained=str(path), quick_gelu=False)
    assert not any(isinstance(m, QuickGELU) for m in plain.modules())


def test_fusions_and_case_logits(batch):
    images, texts = batch
    for fusion in ("gated", "concat", "sum"):
        model = CMPTModel("cmpt-tiny", 4, fusion=fusion).eval()
        with torch.no_grad():
            out = model(images, texts, ALL, ALL)
            cases = model.case_logits(out.features)
            assert out.logits.shape == (4, 4)
            torch.testing.assert_close(cases["complete"], out.logits)
            missing_text = torch.tensor([False] * 4)
            text_missing = model(images, texts, ALL, missing_text).logits
            torch.testing.assert_close(cases["image_only"], text_missing)


def test_gate_starts_at_half():
    head = ProxyTokenHead(8, 8, 4, 3)
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(head.fuse(a, b), 0.5 * a + 0.5 * b)


def test_training_mode_skips_absent_rows_and_keeps_all_adapters_in_graph(batch):
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3).train()
    _perturb_lora(model)
    out = model(images, texts, ALL, torch.tensor([False] * 4))  # no text in the whole batch
    out.logits.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    text_lora = [g for n, g in grads.items() if n.startswith("clip.transformer") and "lora_" in n]
    assert text_lora and all(float(g.abs().sum()) == 0.0 for g in text_lora)


@pytest.mark.slow
def test_compiled_towers_match_eager(batch):
    images, texts = batch
    eager = CMPTModel("cmpt-tiny", 3).eval()
    compiled = CMPTModel("cmpt-tiny", 3, compile_towers=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(images, texts, ALL, ALL).logits,
            eager(images, texts, ALL, ALL).logits,
            atol=1e-5,
            rtol=1e-5,
        )
    pickle.dumps(compiled)  # compiled callables are dropped, not pickled


T, F = True, False
#: (image_present, text_present) of 4 samples: every availability case, then a batch with no
#: image (the image tower has zero rows to encode), one with no text, and a complete one.
AVAILABILITY = {
    "mixed": ([T, F, T, T], [T, T, F, F]),
    "no image": ([F, F, F, F], [T, T, T, T]),
    "no text": ([T, T, T, T], [F, F, F, F]),
    "complete": ([T, T, T, T], [T, T, T, T]),
}


@pytest.mark.parametrize("method", ["cmpt", "zero_fill", "learned_token", "cross_copy"])
def test_skipping_absent_towers_in_eval_gives_the_same_logits(batch, method):
    images, texts = batch
    default = CMPTModel("cmpt-tiny", 5, method=method).eval()
    _perturb_lora(default)
    skipping = CMPTModel("cmpt-tiny", 5, method=method, skip_absent_eval=True).eval()
    skipping.load_state_dict(default.state_dict())
    calls = {"vision": [], "text": []}
    original = skipping._tower

    def counting(name):  # record how many rows each tower encodes
        tower = original(name)

        def call(inputs, proxy):
            calls[name].append(inputs.shape[0])
            return tower(inputs, proxy)

        return call

    skipping._tower = counting
    for case, (image, text) in AVAILABILITY.items():
        image_present, text_present = torch.tensor(image), torch.tensor(text)
        with torch.no_grad():
            expected = default(images, texts, image_present, text_present)
            got = skipping(images, texts, image_present, text_present)
        torch.testing.assert_close(got.logits, expected.logits, atol=1e-6, rtol=1e-6, msg=case)
        for field in ("image", "text", "text_proxy", "image_proxy"):
            a, b = getattr(got.features, field), getattr(expected.features, field)
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=f"{case}: {field}")
        # only the present rows went through each tower (an empty selection runs one row)
        assert calls["vision"][-1] == max(sum(image), 1), case
        assert calls["text"][-1] == max(sum(text), 1), case


def test_training_without_any_image_in_the_batch(batch):
    """A batch of text-only samples trains (open_clip cannot embed zero images)."""
    images, texts = batch
    model = CMPTModel("cmpt-tiny", 3).train()
    _perturb_lora(model)
    out = model(images, texts, torch.tensor([False] * 4), ALL)
    assert bool((out.features.image == 0).all()) and out.logits.shape == (4, 3)
    out.logits.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    vision_lora = [g for n, g in grads.items() if n.startswith("clip.visual") and "lora_" in n]
    assert vision_lora and all(float(g.abs().sum()) == 0.0 for g in vision_lora)
