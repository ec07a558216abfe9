import copy
import math
import pickle
from collections import OrderedDict

import open_clip.transformer
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmpt_lightning.models import (
    AttentionAdapter,
    AttentionWeights,
    CallConvention,
    LoRAAttention,
    ProxyLayout,
    add_lora,
    attention_adapter,
    proxy_attention_mask,
    register_attention_adapter,
)
from cmpt_lightning.models import attention as attention_module

OPEN_CLIP_ATTENTION = getattr(open_clip.transformer, "Attention", None)


class MiniAttention(nn.Module):
    """The shape of open_clip main's ``Attention``: packed q/k/v, ``out_proj``, a tensor out."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * dim, dim) / math.sqrt(dim))
        self.in_proj_bias = nn.Parameter(torch.randn(3 * dim) * 0.1)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, k_x=None, v_x=None, attn_mask=None):
        assert k_x is None and v_x is None  # the block below only does self-attention
        n, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # explicit softmax, not SDPA
        if attn_mask is not None:
            scores = scores + attn_mask
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, width)
        return self.out_proj(out)


class MiniBlock(nn.Module):
    """A pre-norm block that calls its attention as open_clip main's ResidualAttentionBlock."""

    def __init__(self, dim, heads, attn=None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = MiniAttention(dim, heads) if attn is None else attn
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(dim, 2 * dim)),
                    ("gelu", nn.GELU()),
                    ("c_proj", nn.Linear(2 * dim, dim)),
                ]
            )
        )

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        attn_mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
        x = q_x + self.attn(self.ln_1(q_x), k_x=k_x, v_x=v_x, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class MiniTransformer(nn.Module):
    def __init__(self, dim=16, heads=4, layers=2):
        super().__init__()
        self.resblocks = nn.ModuleList([MiniBlock(dim, heads) for _ in range(layers)])

    def forward(self, x, attn_mask=None):
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


def read_mini(module):
    out = module.out_proj
    return AttentionWeights(
        module.in_proj_weight, module.in_proj_bias, out.weight, out.bias, module.num_heads
    )


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the adapter registry, with MiniAttention registered through the API."""
    monkeypatch.setattr(attention_module, "_ADAPTERS", dict(attention_module._ADAPTERS))
    register_attention_adapter(MiniAttention, AttentionAdapter(read_mini, CallConvention.TENSOR))


def _perturb_lora(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)


def _causal(length):
    return torch.full((length, length), float("-inf")).triu(1)


def test_lora_attention_matches_multihead_attention():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    attn = LoRAAttention.from_mha(mha, r=1, alpha=1.0, dropout=0.0, targets="qv")
    x = torch.randn(2, 5, 16)
    mask = torch.full((5, 5), float("-inf")).triu(1)
    torch.testing.assert_close(
        attn(x, x, x, attn_mask=mask)[0], mha(x, x, x, attn_mask=mask)[0], atol=1e-6, rtol=1e-5
    )


def test_lora_attention_takes_per_sample_masks_like_multihead_attention():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True, bias=False)
    attn = LoRAAttention.from_module(mha, r=1, alpha=1.0, dropout=0.0, targets="qkv")
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2 * 4, 5, 5).masked_fill(torch.rand(2 * 4, 5, 5) > 0.7, float("-inf"))
    mask[:, :, 0] = 0.0  # every query sees at least one key
    torch.testing.assert_close(
        attn(x, x, x, attn_mask=mask)[0], mha(x, x, x, attn_mask=mask)[0], atol=1e-6, rtol=1e-5
    )
    with pytest.raises(TypeError, match=r"additive float attn_mask.*got a bool mask"):
        attn(x, x, x, attn_mask=mask.isinf())
    with pytest.raises(ValueError, match="self-attention only: key must be the query or None"):
        attn(x, x.clone(), x)


@pytest.mark.parametrize(
    ("kwargs", "feature"),
    [
        ({"batch_first": False}, "batch_first=False"),
        ({"batch_first": True, "dropout": 0.1}, "dropout=0.1"),
        ({"batch_first": True, "add_bias_kv": True}, "add_bias_kv"),
        ({"batch_first": True, "add_zero_attn": True}, "add_zero_attn"),
        ({"batch_first": True, "kdim": 8, "vdim": 8}, "separate q/k/v weights"),
    ],
)
def test_multihead_adapter_refuses_what_it_cannot_reproduce(kwargs, feature):
    mha = torch.nn.MultiheadAttention(16, 4, **kwargs)
    with pytest.raises(TypeError, match=f"MultiheadAttention uses {feature}.*batch_first=True"):
        LoRAAttention.from_module(mha, r=1, alpha=1.0, dropout=0.0, targets="qv")


@pytest.mark.parametrize("targets", ["qv", "qkv", "all"])
@pytest.mark.parametrize("causal", [False, True])
def test_adapter_seam_starts_unchanged(registry, targets, causal):
    torch.manual_seed(0)
    reference = MiniTransformer().eval()
    model = copy.deepcopy(reference)
    assert add_lora(model, r=2, alpha=1.0, targets=targets) == 2
    attn = model.resblocks[0].attn
    assert isinstance(attn, LoRAAttention) and attn.convention == CallConvention.TENSOR
    keys = set(model.state_dict())
    assert {"resblocks.0.attn.in_proj.weight", "resblocks.0.attn.in_proj.lora_A"} <= keys
    assert "resblocks.1.attn.out_proj.weight" in keys
    x = torch.randn(3, 7, 16)
    mask = _causal(7) if causal else None
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), reference(x, mask), atol=1e-6, rtol=0)
    assert add_lora(model, r=2, targets=targets) == 2  # already adapted: left as is
    assert model.resblocks[0].attn is attn
    pickle.loads(pickle.dumps(model))


@pytest.mark.parametrize("causal", [False, True])
def test_adapter_seam_carries_the_proxy_layout(registry, causal):
    torch.manual_seed(0)
    reference = MiniTransformer().eval()
    model = copy.deepcopy(reference)
    add_lora(model, r=1)
    x = torch.randn(3, 6, 16)  # 5 real tokens + a proxy
    keys = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    real_mask = _causal(5) if causal else None
    layout = ProxyLayout(causal=causal, proxy_keys=keys)
    dense = proxy_attention_mask(real_mask, keys, dtype=torch.float32)  # [B, 1, L + 1, L + 1]
    with torch.no_grad():
        # at init, LoRA under the layout equals the original module under the dense mask
        expected = reference(x, dense)
        torch.testing.assert_close(model(x, layout), expected, atol=1e-6, rtol=0)
        _perturb_lora(model)
        with_proxy = model(x, layout)
        without = model(x[:, :-1], real_mask)
    torch.testing.assert_close(with_proxy[:, :-1], without, atol=1e-6, rtol=0)
    assert not torch.allclose(with_proxy[:, :-1], expected[:, :-1])  # the adapters do act


class OtherAttention(nn.Module):
    def forward(self, x, attn_mask=None):
        return x


def test_unsupported_attention_is_a_clear_type_error(registry):
    model = MiniTransformer()
    model.resblocks[1] = MiniBlock(16, 4, attn=OtherAttention())
    with pytest.raises(
        TypeError,
        match=r"block 1 \(MiniBlock\): no attention adapter for OtherAttention; CMPT can "
        r"replace: .*MiniAttention.*MultiheadAttention.*register_attention_adapter",
    ):
        add_lora(model)
    with pytest.raises(TypeError, match="no attention adapter for OtherAttention"):
        attention_adapter(OtherAttention())
    del model.resblocks[1].attn
    with pytest.raises(TypeError, match=r"block 1 \(MiniBlock\) has no attention module .attn"):
        add_lora(model)
    with pytest.raises(TypeError, match=r"expected an open_clip Transformer with \.resblocks"):
        add_lora(nn.Linear(2, 2))


def test_register_attention_adapter_checks_its_arguments(registry):
    adapter = AttentionAdapter(read_mini, CallConvention.TENSOR)
    with pytest.raises(TypeError, match=r"module_type must be an nn\.Module subclass, got 3"):
        register_attention_adapter(3, adapter)
    with pytest.raises(TypeError, match=r"adapter must be an AttentionAdapter.*got function"):
        register_attention_adapter(MiniAttention, read_mini)


class SubMiniAttention(MiniAttention):
    pass


def test_adapter_lookup_follows_subclasses(registry):
    assert attention_adapter(SubMiniAttention(16, 4)).read is read_mini
    assert attention_adapter(torch.nn.MultiheadAttention(16, 4)).convention == CallConvention.MHA


@pytest.mark.skipif(OPEN_CLIP_ATTENTION is None, reason="open_clip has no transformer.Attention")
@pytest.mark.parametrize("extra", [{}, {"scale_attn": True}, {"scale_fc": True}])
def test_open_clip_attention_adapter_starts_unchanged(extra):
    torch.manual_seed(0)
    reference = open_clip.transformer.Transformer(16, 2, 4, block_type="custom", **extra).eval()
    assert isinstance(reference.resblocks[0].attn, OPEN_CLIP_ATTENTION)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith("in_proj_bias"):
                p.normal_(0, 0.1)  # open_clip initialises it to zeros
    model = copy.deepcopy(reference)
    add_lora(model, r=1, targets="all")
    assert model.resblocks[0].attn.convention == CallConvention.TENSOR
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        for mask in (None, _causal(7)):
            torch.testing.assert_close(model(x, mask), reference(x, mask), atol=1e-6, rtol=0)


@pytest.mark.skipif(OPEN_CLIP_ATTENTION is None, reason="open_clip has no transformer.Attention")
@pytest.mark.parametrize(
    ("kwargs", "feature"),
    [
        ({"qk_norm": True}, "qk_norm"),
        ({"scaled_cosine_attn": True}, "scaled_cosine"),
        ({"scale_heads": True}, "scale_heads"),
        ({"scale_attn_inner": True}, "inner_norm"),
    ],
)
def test_open_clip_attention_adapter_refuses_what_it_cannot_reproduce(kwargs, feature):
    transformer = open_clip.transformer.Transformer(16, 2, 4, **kwargs)
    with pytest.raises(TypeError, match=rf"block 0 .*Attention uses {feature}, which CMPT"):
        add_lora(transformer)
    dropping = OPEN_CLIP_ATTENTION(16, 4, attn_drop=0.1, proj_drop=0.2)
    with pytest.raises(TypeError, match=r"uses attn_drop=0.1, proj_drop=0.2.*build the tower"):
        LoRAAttention.from_module(dropping, r=1, alpha=1.0, dropout=0.0, targets="qv")
