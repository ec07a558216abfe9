"""The attention module CMPT puts into each open_clip block, and the seam that reads foreign ones.

:func:`add_lora` replaces every block's attention by a :class:`LoRAAttention`: the same frozen
projections with LoRA on the packed q/k/v one, run with PyTorch's scaled-dot-product attention
and aware of the proxy's :class:`~cmpt_lightning.models.proxy.ProxyLayout`. A registry of
:class:`AttentionAdapter` says which modules it can replace: an adapter reads one module type's
:class:`AttentionWeights` (refusing with a ``TypeError`` any setting :class:`LoRAAttention` would
not reproduce exactly) and how its block calls it (:class:`CallConvention`). Shipped adapters:

- ``nn.MultiheadAttention`` (open_clip 3.3's ``ResidualAttentionBlock``), called
  ``attn(x, x, x, need_weights=False, attn_mask=mask)[0]``;
- ``open_clip.transformer.Attention`` if open_clip has it (3.3's ``CustomResidualAttentionBlock``,
  every block on open_clip's main branch), called ``attn(x, k_x=None, v_x=None, attn_mask=mask)``
  and returning a tensor. It refuses ``qk_norm``, ``scaled_cosine``, ``scale_heads``,
  ``inner_norm`` and separate q/k/v weights (cross-attention only).

Dropout inside attention is refused, not ignored: CMPT trains with the towers in train mode, where
the replaced module would drop and :class:`LoRAAttention` would not (open_clip's CLIP blocks use
none). Other module types: ``register_attention_adapter(MyAttention, adapter)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import open_clip.transformer
import torch
import torch.nn.functional as F
from torch import nn

from ..choices import Choice
from .lora import LoRALinear, LoRAMergedLinear, LoRATargets, copy_linear, wrap_linears
from .proxy import CausalLayout, ProxyLayout, proxy_attention

__all__ = [
    "AttentionAdapter",
    "AttentionWeights",
    "CallConvention",
    "LoRAAttention",
    "add_lora",
    "attention_adapter",
    "register_attention_adapter",
]


class CallConvention(Choice):
    """How a block calls its attention module (the arguments and what comes back).

    ``mha``: ``attn(x, x, x, need_weights=False, attn_mask=mask)`` returns ``(out, None)``, as
    ``nn.MultiheadAttention`` does. ``tensor``: ``attn(x, k_x=None, v_x=None, attn_mask=mask)``
    (or ``attn(x, attn_mask=mask)``) returns ``out``, as ``open_clip.transformer.Attention`` does.
    """

    MHA = "mha"
    TENSOR = "tensor"


@dataclass(frozen=True)
class AttentionWeights:
    """The projections :class:`LoRAAttention` copies from an attention module (width d).

    Attributes:
        in_proj_weight: the packed query, key and value projections, [3 * d, d].
        in_proj_bias: their biases, [3 * d], or None (no bias).
        out_proj_weight: the output projection, [d, d].
        out_proj_bias: its bias, [d], or None.
        num_heads: the number of attention heads (d must be divisible by it).
    """

    in_proj_weight: torch.Tensor
    in_proj_bias: torch.Tensor | None
    out_proj_weight: torch.Tensor
    out_proj_bias: torch.Tensor | None
    num_heads: int


@dataclass(frozen=True)
class AttentionAdapter:
    """How to replace one attention module type by a :class:`LoRAAttention`.

    Attributes:
        read: reads the module's :class:`AttentionWeights`; raises ``TypeError`` for a setting
            that plain scaled-dot-product self-attention would not reproduce exactly.
        convention: how the module's block calls it.
    """

    read: Callable[[Any], AttentionWeights]
    convention: CallConvention


_ADAPTERS: dict[type[nn.Module], AttentionAdapter] = {}


def register_attention_adapter(module_type: type[nn.Module], adapter: AttentionAdapter) -> None:
    """Let :func:`add_lora` replace attention modules of ``module_type`` (and its subclasses).

    Args:
        module_type: the attention module class a block holds as ``.attn``.
        adapter: how to read its weights and how its block calls it; replaces any adapter
            registered for the same type.

    Raises:
        TypeError: if ``module_type`` is not an ``nn.Module`` subclass or ``adapter`` is not an
            :class:`AttentionAdapter`.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        msg = f"module_type must be an nn.Module subclass, got {module_type!r}"
        raise TypeError(msg)
    if not isinstance(adapter, AttentionAdapter):
        msg = f"adapter must be an AttentionAdapter(read, convention), got {type(adapter).__name__}"
        raise TypeError(msg)
    _ADAPTERS[module_type] = adapter


def attention_adapter(module: nn.Module) -> AttentionAdapter:
    """The adapter registered for ``module``'s class or its nearest registered base class.

    Raises:
        TypeError: if no adapter is registered for it.
    """
    for cls in type(module).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    known = ", ".join(sorted(cls.__qualname__ for cls in _ADAPTERS))
    msg = (
        f"no attention adapter for {type(module).__qualname__}; CMPT can replace: {known}. "
        "Register one with cmpt_lightning.models.register_attention_adapter"
    )
    raise TypeError(msg)


def _refuse(module: nn.Module, unsupported: dict[str, bool], fix: str) -> None:
    """Raise a TypeError naming each feature of ``module`` switched on in ``unsupported``."""
    found = [name for name, used in unsupported.items() if used]
    if found:
        msg = (
            f"{type(module).__name__} uses {', '.join(found)}, which CMPT's LoRAAttention does "
            f"not reproduce; {fix}"
        )
        raise TypeError(msg)


def _read_multihead(mha: nn.MultiheadAttention) -> AttentionWeights:
    """Read a batch-first ``nn.MultiheadAttention`` with packed q/k/v projections."""
    unsupported = {
        "batch_first=False": not mha.batch_first,
        "separate q/k/v weights (kdim or vdim != embed_dim)": mha.in_proj_weight is None,
        "add_bias_kv": mha.bias_k is not None,
        "add_zero_attn": mha.add_zero_attn,
        f"dropout={mha.dropout}": mha.dropout > 0,
    }
    fix = "build it as open_clip does: nn.MultiheadAttention(width, heads, batch_first=True)"
    _refuse(mha, unsupported, fix)
    out = mha.out_proj
    return AttentionWeights(
        mha.in_proj_weight, mha.in_proj_bias, out.weight, out.bias, mha.num_heads
    )


def _read_open_clip(module: nn.Module) -> AttentionWeights:
    """Read an ``open_clip.transformer.Attention`` (open_clip 3.3 and main) without extras."""
    attn: Any = module  # open_clip is untyped; the attributes below exist in 3.3 and main
    attn_drop = float(attn.attn_drop.p)
    proj_drop = float(attn.out_drop.p)
    unsupported = {
        "qk_norm": not isinstance(attn.ln_q, nn.Identity),
        "scaled_cosine": attn.logit_scale is not None,
        "scale_heads": attn.head_scale is not None,
        "inner_norm": not isinstance(attn.ln_inner, nn.Identity),
        "separate q/k/v weights (kdim or vdim != dim)": attn.in_proj_weight is None,
        f"attn_drop={attn_drop}": attn_drop > 0,
        f"proj_drop={proj_drop}": proj_drop > 0,
    }
    fix = "build the tower without these options (open_clip's CLIP configs use none of them)"
    _refuse(module, unsupported, fix)
    out: nn.Linear = attn.out_proj
    return AttentionWeights(
        attn.in_proj_weight, attn.in_proj_bias, out.weight, out.bias, int(attn.num_heads)
    )


class LoRAAttention(nn.Module):
    """Self-attention with LoRA on its projections, a drop-in for the module it replaces.

    Its projections are ``in_proj`` (a :class:`LoRAMergedLinear`, q/k/v packed) and ``out_proj``
    (a :class:`LoRALinear` with ``targets="all"``, else an ``nn.Linear``). It takes the call of
    the module it replaces (``convention``) and runs PyTorch's scaled-dot-product attention.
    ``attn_mask`` is an additive float mask of shape [L, L], [B * heads, L, L], [B, 1, L, L] or
    [B, heads, L, L] (``-inf`` blocks), a :class:`ProxyLayout` (one fused call under its mask)
    or a :class:`~cmpt_lightning.models.proxy.CausalLayout` (``is_causal``, no mask).

    Args:
        embed_dim: the width d of the residual stream.
        num_heads: the number of heads (d must be divisible by it).
        r: adapter rank; 0 disables adapters.
        alpha: scaling numerator, the update is ``(alpha / r) B A``.
        dropout: dropout on the adapters' input.
        targets: ``qv``, ``qkv`` or ``all`` (also the output projection).
        convention: how the block calls this module, ``mha`` or ``tensor``.
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
        convention: CallConvention | str = CallConvention.MHA,
    ) -> None:
        super().__init__()
        targets = LoRATargets(targets)
        if embed_dim % num_heads:
            msg = f"embed_dim {embed_dim} must be divisible by num_heads, got {num_heads}"
            raise ValueError(msg)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.convention = CallConvention(convention)
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
    def from_module(
        cls,
        module: nn.Module,
        *,
        r: int,
        alpha: float,
        dropout: float,
        targets: LoRATargets | str,
    ) -> LoRAAttention:
        """Build from any attention module with a registered adapter, copying its projections.

        Raises:
            TypeError: if no adapter is registered for ``module``'s type, or the adapter
                refuses one of its settings.
            ValueError: if the adapter reads a q/k/v weight that is not [3 * d, d].
        """
        adapter = attention_adapter(module)
        w = adapter.read(module)
        width = w.in_proj_weight.shape[-1]
        if w.in_proj_weight.shape != (3 * width, width):
            msg = (
                f"{type(module).__name__}: the packed q/k/v weight must be [3 * d, d], got "
                f"{list(w.in_proj_weight.shape)}; fix the adapter's read function"
            )
            raise ValueError(msg)
        lora: dict[str, Any] = {"r": r, "alpha": alpha, "dropout": dropout, "targets": targets}
        new = cls(width, w.num_heads, convention=adapter.convention, **lora)
        new.to(device=w.in_proj_weight.device, dtype=w.in_proj_weight.dtype)
        copy_linear(new.in_proj, w.in_proj_weight, w.in_proj_bias)
        copy_linear(new.out_proj, w.out_proj_weight, w.out_proj_bias)
        return new

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention, **kwargs: Any) -> LoRAAttention:
        """Build from an ``nn.MultiheadAttention``: :meth:`from_module`, kept for old callers."""
        return cls.from_module(mha, **kwargs)

    def extra_repr(self) -> str:
        """The width, head count and call convention."""
        return f"{self.embed_dim}, num_heads={self.num_heads}, convention={self.convention.value}"

    def _float_mask(self, mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """``mask`` as an additive float mask that broadcasts to [B, heads, L, L]."""
        if mask.dtype == torch.bool:
            msg = (
                "LoRAAttention takes an additive float attn_mask (0 attends, -inf blocks), got a "
                "bool mask; convert it with torch.zeros(...).masked_fill(blocked, float('-inf'))"
            )
            raise TypeError(msg)
        if mask.ndim == 3:  # shape = [B * heads, L, L], as nn.MultiheadAttention takes it
            mask = mask.view(batch, self.num_heads, length, length)  # [B, heads, L, L]
        return mask

    def attend(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | ProxyLayout | CausalLayout | None = None,
    ) -> torch.Tensor:
        """Self-attention over ``x`` [B, L, d] under ``attn_mask``; returns [B, L, d]."""
        batch, length, width = x.shape
        qkv = self.in_proj(x)  # shape = [B, L, 3 * width]
        qkv = qkv.view(batch, length, 3, self.num_heads, width // self.num_heads)
        # shape = [B, L, 3, heads, head_dim]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, heads, L, head_dim]
        if isinstance(attn_mask, ProxyLayout):
            out = proxy_attention(q, k, v, attn_mask)
        elif isinstance(attn_mask, CausalLayout):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            if attn_mask is not None:
                attn_mask = self._float_mask(attn_mask, batch, length).to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch, length, width)  # shape = [B, L, width]
        return self.out_proj(out)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | ProxyLayout | CausalLayout | None = None,
        *,
        k_x: torch.Tensor | None = None,
        v_x: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        """Self-attention over ``query`` [B, L, width], called as the replaced module was.

        ``mha``: ``attn(x, x, x, need_weights=False, attn_mask=mask)`` returns ``(out, None)``.
        ``tensor``: ``attn(x, k_x=None, v_x=None, attn_mask=mask)`` returns ``out``. Keys and
        values (``key``/``value`` or ``k_x``/``v_x``) must be the query or None, and no
        attention weights are returned.
        """
        for name, other in (("key", key), ("value", value), ("k_x", k_x), ("v_x", v_x)):
            if other is not None and other is not query:
                msg = f"LoRAAttention is self-attention only: {name} must be the query or None"
                raise ValueError(msg)
        out = self.attend(query, attn_mask)
        return (out, None) if self.convention == CallConvention.MHA else out


register_attention_adapter(
    nn.MultiheadAttention, AttentionAdapter(_read_multihead, CallConvention.MHA)
)
_OPEN_CLIP_ATTENTION = getattr(open_clip.transformer, "Attention", None)
if isinstance(_OPEN_CLIP_ATTENTION, type) and issubclass(_OPEN_CLIP_ATTENTION, nn.Module):
    register_attention_adapter(
        _OPEN_CLIP_ATTENTION, AttentionAdapter(_read_open_clip, CallConvention.TENSOR)
    )


def add_lora(
    transformer: nn.Module,
    *,
    r: int = 1,
    alpha: float = 1.0,
    dropout: float = 0.0,
    targets: LoRATargets | str = LoRATargets.QV,
) -> int:
    """Replace the attention of every block of an open_clip ``Transformer`` in place.

    Every ``resblocks[i].attn`` becomes a :class:`LoRAAttention` (even at rank 0, for the masks
    and the proxy layout), read through the adapter registered for its type; ``targets="all"``
    also adapts the MLP's ``c_fc`` and ``c_proj``. Blocks already adapted are left as they are.
    Call this after loading pretrained weights (open_clip loads strictly).

    Args:
        transformer: an ``open_clip.transformer.Transformer`` (``model.visual.transformer`` or
            the text transformer), or any module whose ``.resblocks`` hold ``.attn``.
        r: adapter rank; 0 disables adapters.
        alpha: scaling numerator, the update is ``(alpha / r) B A``.
        dropout: dropout on the adapter input.
        targets: ``qv``, ``qkv`` or ``all``.

    Returns:
        The number of blocks.

    Raises:
        TypeError: if ``transformer`` has no ``.resblocks``, or a block's attention has no
            registered adapter or uses a setting its adapter refuses.
        ValueError: if ``r`` is negative.
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
        if isinstance(attn, LoRAAttention):
            continue
        if not isinstance(attn, nn.Module):
            msg = f"block {i} ({type(block).__name__}) has no attention module .attn"
            raise TypeError(msg)
        try:
            new = LoRAAttention.from_module(
                attn, r=r, alpha=alpha, dropout=dropout, targets=targets
            )
        except TypeError as err:
            msg = f"block {i} ({type(block).__name__}): {err}"
            raise TypeError(msg) from err
        block.attn = new
        if targets == LoRATargets.ALL and r > 0:
            wrap_linears(block.mlp, ("c_fc", "c_proj"), r=r, alpha=alpha, dropout=dropout)
    return len(blocks)
