import pytest
import torch

from cmpt_lightning.models import LoRAAttention, ProxyLayout, proxy_attention, proxy_attention_mask


def test_proxy_mask_layout():
    keys = torch.tensor([[True, True, False]])
    causal = torch.full((3, 3), float("-inf")).triu(1)
    mask = proxy_attention_mask(causal, keys, dtype=torch.float32)[0, 0]
    assert mask.shape == (4, 4)
    assert torch.isinf(mask[:3, 3]).all()  # no real token attends to the proxy
    assert mask[3].tolist() == [0.0, 0.0, float("-inf"), 0.0]  # proxy: real, not padding
    assert torch.equal(mask[:3, :3], causal)


def test_proxy_mask_shared_keys_is_two_dimensional():
    mask = proxy_attention_mask(None, torch.tensor([True, False]), dtype=torch.float32)
    assert mask.shape == (3, 3)
    assert mask.tolist() == [
        [0.0, 0.0, float("-inf")],
        [0.0, 0.0, float("-inf")],
        [0.0, float("-inf"), 0.0],
    ]


@pytest.mark.parametrize("causal", [False, True])
def test_proxy_layout_equals_the_dense_mask(causal):
    torch.manual_seed(0)
    attn = LoRAAttention(16, 4, r=1)
    x = torch.randn(3, 6, 16)  # 5 real tokens + a proxy
    keys = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    real = torch.full((5, 5), float("-inf")).triu(1) if causal else None
    dense = proxy_attention_mask(real, keys, dtype=torch.float32)
    expected = attn(x, x, x, attn_mask=dense)[0]
    got = attn(x, x, x, attn_mask=ProxyLayout(causal=causal, proxy_keys=keys))[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_proxy_attention_leaves_real_rows_as_without_proxy(causal):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 6, 8).unbind(0)  # [B=2, heads=2, L + 1 = 6, head_dim=8]
    out = proxy_attention(q, k, v, ProxyLayout(causal=causal))
    alone = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], is_causal=causal
    )
    assert out.shape == (2, 2, 6, 8)
    torch.testing.assert_close(out[:, :, :-1], alone, atol=0, rtol=0)
    v2 = v.clone()
    v2[:, :, -1] += 100.0  # the proxy's own value reaches only the proxy row
    changed = proxy_attention(q, k, v2, ProxyLayout(causal=causal))
    assert torch.equal(changed[:, :, :-1], out[:, :, :-1])
    assert not torch.allclose(changed[:, :, -1], out[:, :, -1])


def test_proxy_layout_to_is_itself():
    layout = ProxyLayout(causal=True)
    assert layout.to(torch.float16) is layout
