"""The proxy token's place in attention: its layout, its attention, and the dense reference mask.

A tower encodes L real tokens followed by one proxy at index L. In additive-mask terms (``0``:
may attend, ``-inf``: may not)::

                keys:  real 0..L-1           proxy L
    query real   [ tower's own mask ]        -inf     <- no real token sees the proxy
    query proxy  [ 0 on allowed keys, -inf ]  0       <- the proxy sees allowed real keys, itself

Because no real token attends to the proxy, the real outputs are exactly those of the tower
without it. :class:`ProxyLayout` describes this layout without materialising the mask, and
:func:`proxy_attention` computes it with PyTorch's fused scaled-dot-product kernels;
:func:`proxy_attention_mask` builds the same layout as a dense mask, the reference the tests
compare :func:`proxy_attention` with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["ProxyLayout", "proxy_attention", "proxy_attention_mask"]


@dataclass(frozen=True)
class ProxyLayout:
    """The attention layout of L real tokens followed by one proxy, without a dense mask.

    Real tokens attend among themselves (causally for text) and never to the proxy; the proxy
    attends to the real keys allowed by ``proxy_keys`` and to itself. The towers pass it down
    open_clip's blocks as their ``attn_mask``; :class:`~cmpt_lightning.models.LoRAAttention`
    recognises it and calls :func:`proxy_attention`.

    Attributes:
        causal: the real tokens attend causally (the text tower).
        proxy_keys: bool [B, L], the real keys the proxy may see; None: all of them.
    """

    causal: bool
    proxy_keys: torch.Tensor | None = None

    def to(self, *args: Any, **kwargs: Any) -> ProxyLayout:
        """Itself: open_clip's blocks cast masks to the activations' dtype."""
        return self


def proxy_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: ProxyLayout
) -> torch.Tensor:
    """Scaled-dot-product attention of L real tokens and a last proxy token.

    The real rows run without a mask (or with ``is_causal``), which lets PyTorch pick its fused
    (flash / memory-efficient) kernels; the proxy row runs as one extra query over every key.
    The result equals attention under :func:`proxy_attention_mask`'s dense mask.

    Args:
        q: queries [B, heads, L + 1, head_dim], the proxy last.
        k: keys, same shape.
        v: values, same shape.
        layout: whether the real tokens attend causally and which real keys the proxy sees.

    Returns:
        The attention output [B, heads, L + 1, head_dim].
    """
    real = F.scaled_dot_product_attention(
        q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], is_causal=layout.causal
    )  # shape = [B, heads, L, head_dim]: the real tokens never see the proxy
    bias = None
    if layout.proxy_keys is not None:
        keys = F.pad(layout.proxy_keys, (0, 1), value=True)  # shape = [B, L + 1]: sees itself
        bias = torch.zeros(keys.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~keys, float("-inf"))[:, None, None, :]  # [B, 1, 1, L + 1]
    proxy = F.scaled_dot_product_attention(q[:, :, -1:], k, v, attn_mask=bias)
    # shape = [B, heads, 1, head_dim]
    return torch.cat([real, proxy], dim=2)  # shape = [B, heads, L + 1, head_dim]


def proxy_attention_mask(
    real_mask: torch.Tensor | None,
    proxy_keys: torch.Tensor,
    *,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The additive [*, L + 1, L + 1] mask for L real tokens followed by one proxy.

    Args:
        real_mask: the tower's own additive mask over the real tokens, [L, L] (causal for text)
            or None for full attention.
        proxy_keys: bool, which real keys the proxy may attend to: [L] (same for every sample)
            or [B, L].
        dtype: the float dtype of the mask.

    Returns:
        [L + 1, L + 1] when ``proxy_keys`` is [L], else [B, 1, L + 1, L + 1] (broadcast over
        heads). Real queries see the real mask and ``-inf`` on the proxy; the proxy sees itself
        and the allowed real keys.
    """
    length = proxy_keys.shape[-1]
    lead = proxy_keys.shape[:-1]
    device = proxy_keys.device
    neg_inf = float("-inf")
    mask = torch.zeros(*lead, length + 1, length + 1, dtype=dtype, device=device)
    # shape = [*, L + 1, L + 1]
    if real_mask is not None:
        mask[..., :length, :length] = real_mask[:length, :length].to(dtype)  # real x real
    mask[..., :length, length] = neg_inf  # real x proxy: no real token attends to the proxy
    proxy_row = torch.zeros(*lead, length, dtype=dtype, device=device)  # shape = [*, L]
    proxy_row.masked_fill_(~proxy_keys, neg_inf)
    mask[..., length, :length] = proxy_row  # proxy x real: only the allowed real tokens
    if lead:
        mask = mask.unsqueeze(1)  # shape = [B, 1, L + 1, L + 1]
    return mask
