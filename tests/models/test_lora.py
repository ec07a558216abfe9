import pytest
import torch
import torch.nn.functional as F

from cmpt_lightning.models.lora import LoRALinear, LoRAMergedLinear, wrap_linears


def test_lora_merged_linear_matches_loralib_update():
    torch.manual_seed(0)
    layer = LoRAMergedLinear(8, 24, r=2, alpha=4.0, dropout=0.0, enable_lora=[True, False, True])
    layer.lora_B.data.normal_()
    x = torch.randn(5, 8)
    delta = layer.zero_pad(
        F.conv1d(layer.lora_A.unsqueeze(0), layer.lora_B.unsqueeze(-1), groups=2).squeeze(0)
    )
    expected = F.linear(x, layer.weight + delta * layer.scaling, layer.bias)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("bias", [True, False])
def test_wrap_linears_starts_unchanged(bias):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential()
    mlp.c_fc = torch.nn.Linear(8, 16, bias=bias)
    mlp.c_proj = torch.nn.Linear(16, 8, bias=bias)
    x = torch.randn(3, 8)
    expected = mlp.c_proj(mlp.c_fc(x))
    assert wrap_linears(mlp, ("c_fc", "c_proj"), r=2, alpha=1.0, dropout=0.0) == 2
    assert isinstance(mlp.c_fc, LoRALinear) and isinstance(mlp.c_proj, LoRALinear)
    torch.testing.assert_close(mlp.c_proj(mlp.c_fc(x)), expected, atol=1e-6, rtol=0)
    assert wrap_linears(mlp, ("c_fc", "c_proj"), r=2, alpha=1.0, dropout=0.0) == 0  # idempotent


def test_wrap_linears_rejects_non_linear():
    mlp = torch.nn.Sequential()
    mlp.c_fc = torch.nn.Conv1d(8, 16, 1)
    with pytest.raises(TypeError, match=r"Sequential.c_fc must be an nn.Linear.*got Conv1d"):
        wrap_linears(mlp, ("c_fc",), r=1, alpha=1.0, dropout=0.0)
