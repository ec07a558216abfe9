"""The merged-weight LoRA forward: loralib's outputs and gradients, autocast dtypes, pickling."""

import copy
import pickle

import loralib
import pytest
import torch

from cmpt_lightning.models.attention import LoRAAttention
from cmpt_lightning.models.lora import (
    LoRALinear,
    LoRAMergedLinear,
    lora_linear,
    padded_b_index,
)

ENABLE = [[True, False, True], [True, True, True], [False, True, False]]


def _pair(enable, r, *, dropout=0.0, dtype=torch.float64):
    """Our LoRAMergedLinear and loralib's MergedLinear (never merged) with the same weights."""
    torch.manual_seed(0)
    ours = LoRAMergedLinear(6, 12, r=r, alpha=3.0, dropout=dropout, enable_lora=enable)
    theirs = loralib.MergedLinear(
        6, 12, r=r, lora_alpha=3.0, lora_dropout=dropout, enable_lora=enable, merge_weights=False
    )
    ours.to(dtype)
    theirs.to(dtype)
    with torch.no_grad():
        ours.lora_B.normal_()
        ours.bias.normal_()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _grads(layer, x):
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = layer(x)
    (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
    grads = {n: p.grad for n, p in layer.named_parameters() if p.requires_grad}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("r", [1, 2, 3])
@pytest.mark.parametrize("enable", ENABLE)
def test_merged_linear_outputs_and_gradients_equal_loralib_in_fp64(enable, r):
    ours, theirs = _pair(enable, r)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    out, gx, grads = _grads(ours, x)
    ref_out, ref_gx, ref_grads = _grads(theirs, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-12, atol=1e-12)
    assert grads.keys() == ref_grads.keys() == {"bias", "lora_A", "lora_B"}
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-12, atol=1e-12)
    assert ours.weight.grad is None  # the frozen W gets no gradient


@pytest.mark.parametrize("r", [1, 2])
def test_linear_outputs_and_gradients_equal_loralib_in_fp64(r):
    torch.manual_seed(0)
    ours = LoRALinear(6, 4, r=r, alpha=2.0, dropout=0.0).double()
    theirs = loralib.Linear(6, 4, r=r, lora_alpha=2.0, merge_weights=False).double()
    with torch.no_grad():
        ours.lora_B.normal_()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6, dtype=torch.float64)
    for a, b in zip(_grads(ours, x)[:2], _grads(theirs, x)[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grads, ref = _grads(ours, x)[2], _grads(theirs, x)[2]
    assert grads.keys() == ref.keys() == {"bias", "lora_A", "lora_B"}
    for name in grads:
        torch.testing.assert_close(grads[name], ref[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("enable", [*ENABLE, None])
def test_lora_linear_passes_gradcheck(enable):
    """Every input, an unfrozen W and bias included, against finite differences (fp64)."""
    gen = torch.Generator().manual_seed(0)
    r, chunk, n_in = 2, 3, 4
    n = 1 if enable is None else sum(enable)
    out = chunk if enable is None else chunk * len(enable)
    index = None if enable is None else padded_b_index(enable, chunk, r)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)

    x, w, b = leaf(2, 3, n_in), leaf(out, n_in), leaf(out)
    a = leaf(n * r, n_in)
    lora_b = leaf(out, r) if enable is None else leaf(n * chunk, r)
    assert torch.autograd.gradcheck(
        lambda *t: lora_linear(*t, 0.7, index), (x, w, b, a, lora_b), eps=1e-6, atol=1e-8
    )


def test_dropout_in_training_keeps_the_unmerged_form_of_loralib():
    ours, theirs = _pair([True, False, True], 2, dropout=0.5)
    ours.train()
    theirs.train()
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.manual_seed(1)
    got = _grads(ours, x)
    torch.manual_seed(1)
    ref = _grads(theirs, x)
    for a, b in zip(got[:2], ref[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for name in got[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-12, atol=1e-12)
    ours.eval()  # no dropout in eval mode: the merged form, loralib's eval output
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("targets", ["qv", "qkv", "all"])
def test_qkv_and_outputs_stay_bf16_under_autocast(targets, r):
    """At rank 1 a broadcast mul once left q/k/v in fp32 under bf16 autocast."""
    torch.manual_seed(0)
    attn = LoRAAttention(16, 2, r=r, targets=targets)
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if "lora_B" in name:
                p.normal_()
    seen = {}
    attn.in_proj.register_forward_hook(lambda m, i, out: seen.update(qkv=out.dtype))
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, x, x)[0]
        projected = attn.out_proj(x)
    assert seen["qkv"] == torch.bfloat16  # q, k and v are views of this output
    assert out.dtype == projected.dtype == torch.bfloat16
    reference = attn(x, x, x)[0]  # fp32, no autocast
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


def test_state_dict_keys_pickling_and_deepcopy_are_unchanged():
    layer = LoRAMergedLinear(8, 24, r=2, alpha=4.0, dropout=0.0, enable_lora=[True, False, True])
    assert list(layer.state_dict()) == ["weight", "bias", "lora_A", "lora_B"]
    assert layer.lora_B.shape == (16, 2) and layer.lora_A.shape == (4, 8)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 8)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)
    old = pickle.loads(pickle.dumps(layer))
    del old.lora_b_index  # a layer pickled before the index existed builds it on first use
    torch.testing.assert_close(old(x), layer(x), rtol=0, atol=0)
