"""The proxy token's place in attention: its layout, its attention, and the dense reference mask.

A tower encodes L real tokens followed by one proxy at index L. In additive-mask terms (``0``:
may attend, ``-inf``: may not)::

                keys:  real 0..L-1           proxy L
    query real   [ tower's own mask ]        -inf     <- no real token sees the proxy
    query proxy  [ 0 on allowed keys, -inf ]  0       <- the proxy sees allowed real keys, itself

Because no real token attends to the proxy, the real outputs are those of the tower without it
(up to the rounding of a kernel that sees one more, fully masked, key). :class:`ProxyLayout`
describes this layout; :meth:`ProxyLayout.build` makes its additive mask once per tower call, so
that every layer reuses it, and :func:`proxy_attention` runs one fused scaled-dot-product call
over the L + 1 tokens with it (one kernel and one q/k/v gradient per layer, instead of a call
for the real rows, one for the proxy row, a concatenation and its slice gradients).
:func:`proxy_attention_mask` builds the same layout from a tower's dense mask, the reference the
tests compare :func:`proxy_attention` with. :class:`CausalLayout` stands for plain causal
attention (the baselines' text tower): it runs with ``is_causal`` instead of a dense mask, which
lets PyTorch choose its flash kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["CausalLayout", "ProxyLayout", "proxy_attention", "proxy_attention_mask", "proxy_bias"]


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
        bias: the layout's additive mask, [L + 1, L + 1] or [B, 1, L + 1, L + 1], as
            :func:`proxy_bias` makes it; None: :func:`proxy_attention` builds it at each call.
            Made once per tower call by :meth:`build`, shared by every layer.
    """

    causal: bool
    proxy_keys: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        length: int,
        *,
        causal: bool,
        proxy_keys: torch.Tensor | None = None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> ProxyLayout:
        """The layout of ``length`` real tokens and a proxy, with its mask made once.

        Args:
            length: L, the number of real tokens.
            causal: the real tokens attend causally.
            proxy_keys: bool [B, L], the real keys the proxy may see; None: all of them.
            dtype: the dtype of the attention's queries (the autocast dtype under autocast).
            device: the device of the activations.
        """
        bias = proxy_bias(length, causal=causal, proxy_keys=proxy_keys, dtype=dtype, device=device)
        return cls(causal, proxy_keys, bias)

    def to(self, *args: Any, **kwargs: Any) -> ProxyLayout:
        """Itself: open_clip's blocks cast masks to the activations' dtype."""
        return self


@dataclass(frozen=True)
class CausalLayout:
    """Causal self-attention without a proxy, passed down open_clip's blocks as ``attn_mask``.

    :class:`~cmpt_lightning.models.LoRAAttention` runs it with ``is_causal=True``: the same
    attention as open_clip's dense [L, L] causal mask (up to rounding), without reading a mask,
    so that PyTorch may pick its flash kernel.
    """

    def to(self, *args: Any, **kwargs: Any) -> CausalLayout:
        """Itself: open_clip's blocks cast masks to the activations' dtype."""
        return self


#: Elements the rows of a mask are padded to: the memory-efficient CUDA kernel copies (pads) an
#: attention bias whose strides are not multiples of its alignment (8) at every call.
_MASK_ALIGNMENT = 16


def proxy_bias(
    length: int,
    *,
    causal: bool,
    proxy_keys: torch.Tensor | None = None,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The additive mask of L real tokens followed by one proxy, without host synchronisation.

    Args:
        length: L, the number of real tokens.
        causal: the real tokens attend causally.
        proxy_keys: bool [B, L], the real keys the proxy may see; None: all of them.
        dtype: the mask's float dtype (that of the queries it is used with).
        device: the mask's device.

    Returns:
        [L + 1, L + 1] when ``proxy_keys`` is None, else [B, 1, L + 1, L + 1] (broadcast over
        heads); ``0`` where a query may attend, ``-inf`` where not. Its rows are padded in
        memory to a multiple of 16 elements (a view of the first L + 1 columns), so that fused
        kernels take it as it is.
    """
    size = length + 1
    padded = -(-size // _MASK_ALIGNMENT) * _MASK_ALIGNMENT
    position = torch.arange(size, device=device)
    query, key = position[:, None], position[None, :]  # shapes = [L + 1, 1], [1, L + 1]
    blocked = (key == length) & (query < length)  # shape = [L + 1, L + 1]: real x proxy
    if causal:
        blocked = blocked | (key > query)  # the proxy row (query L) blocks no key by this
    lead: tuple[int, ...] = ()
    if proxy_keys is not None:
        lead = (proxy_keys.shape[0], 1)
        proxy_row = F.pad(~proxy_keys, (0, 1), value=False)  # shape = [B, L + 1]: sees itself
        real_rows = blocked[:length].expand(proxy_keys.shape[0], length, size)
        blocked = torch.cat([real_rows, proxy_row[:, None]], dim=1)  # shape = [B, L + 1, L + 1]
        blocked = blocked[:, None]  # shape = [B, 1, L + 1, L + 1]
    bias = torch.zeros(*lead, size, padded, dtype=dtype, device=device)[..., :size]
    return bias.masked_fill_(blocked, float("-inf"))  # shape = [*lead, L + 1, L + 1]


def proxy_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: ProxyLayout
) -> torch.Tensor:
    """Scaled-dot-product attention of L real tokens and a last proxy token, in one call.

    One fused call over the L + 1 tokens under the layout's additive mask (its ``bias``, made
    here if the layout has none, cast if its dtype is not the queries'). The result equals
    attention under :func:`proxy_attention_mask`'s dense mask; a real row's output does not
    depend on the proxy's query, key or value (its key is masked with ``-inf`` for every real
    query, so it adds exact zeros).

    Args:
        q: queries [B, heads, L + 1, head_dim], the proxy last.
        k: keys, same shape.
        v: values, same shape.
        layout: whether the real tokens attend causally and which real keys the proxy sees.

    Returns:
        The attention output [B, heads, L + 1, head_dim].
    """
    bias = layout.bias
    if bias is None:
        length = q.shape[-2] - 1
        keys = layout.proxy_keys
        bias = proxy_bias(
            length, causal=layout.causal, proxy_keys=keys, dtype=q.dtype, device=q.device
        )
    elif bias.dtype != q.dtype:
        bias = bias.to(q.dtype)  # built for another dtype: cast (once per layer)
    # bias: [L + 1, L + 1] or [B, 1, L + 1, L + 1]; the real rows are -inf on the proxy's key
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, heads, L + 1, head_dim]


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
