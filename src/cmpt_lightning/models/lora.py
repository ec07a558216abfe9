"""Low-rank adapters (LoRA, Hu et al. 2021) for open_clip's attention blocks, built on ``loralib``.

A frozen linear map ``W`` becomes ``W + (alpha / r) B A`` with ``A`` of shape [r, in] (Kaiming
uniform init) and ``B`` of shape [out, r] (zero init), so an adapted model starts exactly where
the pretrained one was. open_clip packs the query, key and value projections of a block in one
``nn.MultiheadAttention.in_proj_weight`` of shape [3 * width, width]; :class:`LoRAAttention`
replaces that module by an equivalent one whose packed projection is a ``loralib.MergedLinear``
with ``enable_lora`` selecting q, k and/or v. ``targets="all"`` also adapts the attention output
projection and both MLP linears with ``loralib.Linear``.

Two loralib behaviours are changed on purpose: weights are never merged (``merge_weights=False``:
Lightning's eval loop never calls ``.train()`` again, so merging would silently freeze LoRA), and
the identity "dropout" is an ``nn.Identity`` rather than loralib's lambda, which cannot be pickled
(``ddp_spawn``, ``deepcopy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import loralib
import torch
import torch.nn.functional as F
from torch import nn

from ..choices import Choice

__all__ = [
    "LoRAAttention",
    "LoRALinear",
    "LoRAMergedLinear",
    "LoRATargets",
    "ProxyLayout",
    "add_lora",
]


@dataclass(frozen=True)
class ProxyLayout:
    """The attention layout of L real tokens followed by one proxy, without a dense mask.

    Real tokens attend among themselves (causally for text) and never to the proxy; the proxy
    attends to the real keys allowed by ``proxy_keys`` and to itself. :class:`LoRAAttention`
    computes the real rows with no mask (or ``is_causal``), which lets PyTorch use its fused
    (flash / memory-efficient) kernels, and the proxy row as one extra query: the same
    arithmetic as the dense additive mask of
    :func:`~cmpt_lightning.models.towers.proxy_attention_mask`, which the tests compare it with.

    Attributes:
        causal: the real tokens attend causally (the text tower).
        proxy_keys: bool [B, L], the real keys the proxy may see; None: all of them.
    """

    causal: bool
    proxy_keys: torch.Tensor | None = None

    def to(self, *args: Any, **kwargs: Any) -> ProxyLayout:
        """Itself: open_clip's blocks cast masks to the activations' dtype."""
        return self


class LoRATargets(Choice):
    """Which projections of each block get adapters."""

    @classmethod
    def label(cls) -> str:
        """``lora targets``."""
        return "lora targets"

    QV = "qv"
    QKV = "qkv"
    ALL = "all"


def _fix_loralib(layer: loralib.LoRALayer) -> None:
    """Replace loralib's lambda identity dropout by a picklable ``nn.Identity``."""
    if not isinstance(layer.lora_dropout, nn.Module):
        layer.lora_dropout = nn.Identity()


class LoRAMergedLinear(loralib.MergedLinear):
    """``loralib.MergedLinear`` that never merges and computes ``x A^T B^T`` at rank cost.

    loralib's own forward materialises the full [out, in] update on every call; this one applies
    ``A`` then the grouped ``B`` directly, which is the same arithmetic for a rank-r update.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        r: int,
        alpha: float,
        dropout: float,
        enable_lora: list[bool],
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_features,
            out_features,
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            enable_lora=enable_lora,
            merge_weights=False,
            bias=bias,
        )
        _fix_loralib(self)
        if hasattr(self, "lora_ind"):  # a plain attribute in loralib: make it follow .to(device)
            ind = self.lora_ind
            del self.lora_ind
            self.register_buffer("lora_ind", ind, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``W x + b`` plus the scaled low-rank update on the enabled output chunks."""
        result = F.linear(x, self.weight, self.bias)
        if self.r == 0 or not hasattr(self, "lora_A"):
            return result
        n = sum(self.enable_lora)
        chunk = self.out_features // len(self.enable_lora)
        low = F.linear(self.lora_dropout(x), self.lora_A)  # shape = [*, n * r]
        low = low.unflatten(-1, (n, self.r))  # shape = [*, n, r]
        b = self.lora_B.view(n, chunk, self.r)  # shape = [n, chunk, r]
        delta = torch.einsum("...nr,ncr->...nc", low, b) * self.scaling  # shape = [*, n, chunk]
        parts = list(result.split(chunk, dim=-1))  # len(enable_lora) x [*, chunk]
        k = 0
        for i, enabled in enumerate(self.enable_lora):
            if enabled:
                parts[i] = parts[i] + delta[..., k, :]
                k += 1
        return torch.cat(parts, dim=-1)


class LoRALinear(loralib.Linear):
    """``loralib.Linear`` that never merges and has a picklable identity dropout."""

    def __init__(
        self, in_features: int, out_features: int, *, r: int, alpha: float, dropout: float
    ) -> None:
        super().__init__(
            in_features,
            out_features,
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            merge_weights=False,
        )
        _fix_loralib(self)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, r: int, alpha: float, dropout: float) -> LoRALinear:
        """Wrap an existing ``nn.Linear``, copying its weight and bias."""
        new = cls(linear.in_features, linear.out_features, r=r, alpha=alpha, dropout=dropout)
        new.to(linear.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None and new.bias is not None:
                new.bias.copy_(linear.bias)
        return new


class LoRAAttention(nn.Module):
    """Drop-in for open_clip's ``nn.MultiheadAttention`` (batch first, self-attention only).

    It takes the same call as the module it replaces, ``attn(x, x, x, need_weights=False,
    attn_mask=mask)``, and runs PyTorch's scaled-dot-product attention. ``attn_mask`` is an
    additive float mask of shape [L, L], [B, 1, L, L] or [B, heads, L, L] (``-inf`` blocks).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        r: int = 1,
        alpha: float = 1.0,
        dropout: float = 0.0,
        targets: LoRATargets | str = LoRATargets.QV,
    ) -> None:
        super().__init__()
        targets = LoRATargets(targets)
        if embed_dim % num_heads:
            msg = f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
            raise ValueError(msg)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        enable = [True, targets != LoRATargets.QV, True]
        self.in_proj = LoRAMergedLinear(
            embed_dim, 3 * embed_dim, r=r, alpha=alpha, dropout=dropout, enable_lora=enable
        )
        self.out_proj: nn.Linear
        if targets == LoRATargets.ALL and r > 0:
            self.out_proj = LoRALinear(embed_dim, embed_dim, r=r, alpha=alpha, dropout=dropout)
        else:
            self.out_proj = nn.Linear(embed_dim, embed_dim)

    @classmethod
    def from_mha(
        cls,
        mha: nn.MultiheadAttention,
        *,
        r: int,
        alpha: float,
        dropout: float,
        targets: LoRATargets | str,
    ) -> LoRAAttention:
        """Build from an ``nn.MultiheadAttention``, copying its projection weights."""
        if not mha.batch_first or mha.in_proj_weight is None or mha.in_proj_bias is None:
            msg = (
                "LoRAAttention replaces batch-first nn.MultiheadAttention with packed, biased "
                f"q/k/v projections; got {mha!r}"
            )
            raise TypeError(msg)
        new = cls(mha.embed_dim, mha.num_heads, r=r, alpha=alpha, dropout=dropout, targets=targets)
        new.to(mha.in_proj_weight.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(mha.in_proj_weight)
            new.in_proj.bias.copy_(mha.in_proj_bias)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            new.out_proj.bias.copy_(mha.out_proj.bias)
        return new

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | ProxyLayout | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Self-attention over ``query`` [B, L, width]; ``key``/``value`` must be it or None.

        ``attn_mask`` is an additive float mask, or a :class:`ProxyLayout` for a sequence whose
        last token is a proxy.
        """
        if (key is not None and key is not query) or (value is not None and value is not query):
            msg = "LoRAAttention implements self-attention only (key and value must be the query)"
            raise ValueError(msg)
        batch, length, width = query.shape
        qkv = self.in_proj(query)  # shape = [B, L, 3 * width]
        qkv = qkv.view(batch, length, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, heads, L, head_dim]
        if isinstance(attn_mask, ProxyLayout):
            out = _proxy_attention(q, k, v, attn_mask)
        else:
            if attn_mask is not None:
                attn_mask = attn_mask.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch, length, width)  # shape = [B, L, width]
        return self.out_proj(out), None


def _proxy_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: ProxyLayout
) -> torch.Tensor:
    """Attention of L real tokens and a last proxy token (all [B, heads, L + 1, head_dim])."""
    real = F.scaled_dot_product_attention(
        q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], is_causal=layout.causal
    )  # shape = [B, heads, L, head_dim]: the real tokens never see the proxy
    bias = None
    if layout.proxy_keys is not None:
        keys = F.pad(layout.proxy_keys, (0, 1), value=True)  # the proxy sees itself
        bias = torch.zeros(keys.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~keys, float("-inf"))[:, None, None, :]  # [B, 1, 1, L + 1]
    proxy = F.scaled_dot_product_attention(q[:, :, -1:], k, v, attn_mask=bias)
    return torch.cat([real, proxy], dim=2)  # shape = [B, heads, L + 1, head_dim]


def add_lora(
    transformer: nn.Module,
    *,
    r: int = 1,
    alpha: float = 1.0,
    dropout: float = 0.0,
    targets: LoRATargets | str = LoRATargets.QV,
) -> int:
    """Replace the attention of every block of an open_clip ``Transformer`` in place.

    Every ``resblocks[i].attn`` becomes a :class:`LoRAAttention` (always, so that per-sample
    float masks work the same with any rank); with ``targets="all"`` the MLP linears also become
    :class:`LoRALinear`. Call this after loading pretrained weights (open_clip loads strictly).

    Args:
        transformer: an ``open_clip.transformer.Transformer`` (``model.visual.transformer`` or
            the text transformer).
        r: adapter rank; 0 disables adapters.
        alpha: scaling numerator, the update is ``(alpha / r) B A``.
        dropout: dropout on the adapter input.
        targets: ``qv``, ``qkv`` or ``all``.

    Returns:
        The number of blocks adapted.

    Raises:
        TypeError: if a block is not open_clip's default ``ResidualAttentionBlock``.
    """
    if r < 0:
        msg = f"lora rank must be >= 0, got {r!r}"
        raise ValueError(msg)
    targets = LoRATargets(targets)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        msg = f"expected an open_clip Transformer with .resblocks, got {type(transformer).__name__}"
        raise TypeError(msg)
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention | LoRAAttention):
            msg = (
                f"block {i} is a {type(block).__name__} with attention {type(attn).__name__}; "
                "CMPT supports open_clip's default ResidualAttentionBlock (nn.MultiheadAttention), "
                "as in the ViT-*/RN-free CLIP configs"
            )
            raise TypeError(msg)
        if isinstance(attn, LoRAAttention):
            continue
        block.attn = LoRAAttention.from_mha(
            attn, r=r, alpha=alpha, dropout=dropout, targets=targets
        )
        if targets == LoRATargets.ALL and r > 0:
            for name in ("c_fc", "c_proj"):
                linear = getattr(block.mlp, name)
                setattr(
                    block.mlp,
                    name,
                    LoRALinear.from_linear(linear, r=r, alpha=alpha, dropout=dropout),
                )
    return len(blocks)
