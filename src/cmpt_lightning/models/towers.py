"""open_clip towers run with one extra proxy token appended to their token sequence.

The proxy attends to the real tokens of its tower; no real token attends to the proxy, so the
real outputs are exactly those of plain open_clip (the mask column of the proxy is ``-inf`` for
every real query; see :mod:`cmpt_lightning.models.proxy`). Both towers read open_clip's own
modules (``_embeds``, ``_pool``, the text layers) so that the real path is open_clip's code, not a
copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool
from torch import nn

from .proxy import CausalLayout, ProxyLayout

__all__ = ["TextTower", "VisionTower"]


_CUSTOM_MASK = "CMPT supports causal or full attention in the text tower, not a custom mask"


def _mask_kind(mask: torch.Tensor | None) -> str:
    """``none``, ``causal`` (``-inf`` above the diagonal, 0 elsewhere) or ``custom``.

    Compares the mask's values (a host synchronisation on a GPU): call it once, when the tower
    is built, never inside a training step or a compiled graph.
    """
    if mask is None:
        return "none"
    expected = torch.full_like(mask, float("-inf")).triu(1)
    return "causal" if torch.equal(mask, expected) else "custom"


def _attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the attention's queries will have: the autocast dtype under autocast."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class VisionTower:
    """An open_clip ``VisionTransformer`` that also encodes a proxy token.

    Returns the image class embedding exactly as ``visual(images)`` does (``ln_post`` then
    ``proj``) and the proxy's output through the same ``ln_post`` and ``proj``. A view, not a
    module: the weights stay registered under the CLIP model that owns them.
    """

    def __init__(self, visual: nn.Module) -> None:
        self.visual: Any
        if not isinstance(visual, VisionTransformer):
            msg = (
                f"CMPT needs open_clip's VisionTransformer image tower, got "
                f"{type(visual).__name__} (ResNet and timm towers are not supported)"
            )
            raise TypeError(msg)
        if visual.attn_pool is not None or visual.pool_type != "tok":
            msg = "CMPT needs a class-token ViT (pool_type 'tok', no attentional pooler)"
            raise TypeError(msg)
        self.visual = visual

    @property
    def width(self) -> int:
        """Width of the tower's residual stream."""
        return int(self.visual.class_embedding.shape[0])

    def initial_proxy(self) -> torch.Tensor:
        """The class token's input (after ``ln_pre``), a natural start for a proxy token."""
        with torch.no_grad():
            cls = self.visual.class_embedding + self.visual.positional_embedding[0]
            return self.visual.ln_pre(cls[None])[0].detach().clone()

    def __call__(
        self, images: torch.Tensor, proxy: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode ``images`` [B, 3, H, W] with ``proxy`` [width] appended.

        Returns:
            (class embedding [B, D], proxy embedding [B, D]); with ``proxy=None`` the tower
            runs exactly as open_clip's (the baselines) and the second item is None.
        """
        x = self.visual._embeds(images)  # shape = [B, grid ** 2 + 1, width]
        if proxy is None:
            pooled, _ = self.visual._pool(self.visual.transformer(x))
            return (pooled @ self.visual.proj if self.visual.proj is not None else pooled), None
        batch, length = x.shape[0], x.shape[1]
        x = torch.cat([x, proxy.to(x.dtype).expand(batch, 1, -1)], dim=1)
        # shape = [B, grid ** 2 + 2, width]
        # real tokens: full attention among themselves; the proxy: every real token and itself
        dtype, device = _attention_dtype(x), x.device
        layout = ProxyLayout.build(length, causal=False, dtype=dtype, device=device)
        x = self.visual.transformer(x, attn_mask=layout)  # one [L + 1, L + 1] mask, every layer
        pooled, _ = self.visual._pool(x[:, :-1])  # open_clip's own pooling of the real tokens
        proxy_out = self.visual.ln_post(x[:, -1])  # shape = [B, width]
        if self.visual.proj is not None:
            pooled = pooled @ self.visual.proj
            proxy_out = proxy_out @ self.visual.proj
        return pooled, proxy_out


@dataclass
class _TextParts:
    token_embedding: Any
    positional_embedding: Any
    transformer: Any
    ln_final: Any
    text_projection: Any
    pool_type: str
    eos_id: int | None


class TextTower:
    """The text tower of an open_clip ``CLIP`` (or ``CustomTextCLIP``) with a proxy token.

    Returns the text embedding at the pooled position exactly as ``encode_text`` does and the
    proxy's output through the same ``ln_final`` and projection. The proxy attends to the real
    tokens up to the pooled (end-of-text) position only: never to the padding after it (id 0 is
    also a real word piece in CLIP's vocabulary, so padding is found by position, not by id).
    A view, not a module: the weights stay registered under the CLIP model that owns them.
    """

    def __init__(self, clip: nn.Module) -> None:
        self._clip: Any = clip
        owner: Any = clip
        text: Any = getattr(clip, "text", None)
        if text is not None:
            if (
                not isinstance(text, TextTransformer)
                or text.cls_emb is not None
                or text.use_pad_mask
            ):
                msg = (
                    f"CMPT needs open_clip's TextTransformer without a class embedding, got "
                    f"{type(text).__name__} (Hugging Face text towers and CoCa are not supported)"
                )
                raise TypeError(msg)
            parts = _TextParts(
                text.token_embedding,
                text.positional_embedding,
                text.transformer,
                text.ln_final,
                text.text_projection,
                text.pool_type,
                text.eos_id,
            )
        else:
            parts = _TextParts(
                owner.token_embedding,
                owner.positional_embedding,
                owner.transformer,
                owner.ln_final,
                owner.text_projection,
                owner.text_pool_type,
                getattr(clip, "text_eos_id", None),
            )
        self._parts = parts
        # read once, here: comparing the mask's values would sync a GPU at every call
        self._mask_kind = _mask_kind(self.attn_mask)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled tower (one pickled before ``_mask_kind`` existed reads it anew)."""
        self.__dict__.update(state)
        if "_mask_kind" not in state:
            self._mask_kind = _mask_kind(self.attn_mask)
        self.__dict__.pop("_causal", None)

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """The tower's causal mask, read from the model each call so it follows ``.to()``."""
        owner = getattr(self._clip, "text", None) or self._clip
        mask: torch.Tensor | None = owner.attn_mask
        return mask

    @property
    def width(self) -> int:
        """Width of the tower's residual stream."""
        return int(self._parts.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        """The most token ids the tower takes per sequence (its positional embeddings)."""
        return int(self._parts.positional_embedding.shape[0])

    def check_length(self, length: int) -> None:
        """Refuse token ids longer than the tower's context length (a shape check: no sync).

        Args:
            length: L of the token ids [B, L].

        Raises:
            ValueError: naming the given length, the context length and how to fix it.
        """
        context = self.context_length
        if length > context:
            msg = (
                f"text token ids have length {length}, but this text tower's context length is "
                f"{context}; tokenize with the model's own tokenizer "
                "(cmpt_lightning.models.build_tokenizer(<model name>), which pads to "
                f"{context}), or pad or cut the ids to context_length {context}"
            )
            raise ValueError(msg)

    def end_positions(self, text: torch.Tensor) -> torch.Tensor:
        """Index of the pooled token of each sequence in ``text`` [B, L] (as open_clip pools)."""
        if self._parts.pool_type == "argmax":
            return text.argmax(dim=-1)
        if self._parts.pool_type == "eos" and self._parts.eos_id is not None:
            return (text == self._parts.eos_id).int().argmax(dim=-1)
        if self._parts.pool_type == "first":
            return torch.zeros(text.shape[0], dtype=torch.long, device=text.device)
        return torch.full((text.shape[0],), text.shape[1] - 1, device=text.device)

    def initial_proxy(self, eot_id: int | None = None) -> torch.Tensor:
        """A start for the proxy token: the end-of-text embedding at the last position."""
        with torch.no_grad():
            weight = self._parts.token_embedding.weight
            idx = weight.shape[0] - 1 if eot_id is None else eot_id
            return (weight[idx] + self._parts.positional_embedding[-1]).detach().clone()

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self._parts.text_projection
        if proj is None:
            return x
        if isinstance(proj, nn.Linear):
            return proj(x)
        return x @ proj

    def __call__(
        self, text: torch.Tensor, proxy: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode token ids ``text`` [B, L] with ``proxy`` [width] appended.

        Returns:
            The text embedding and the proxy's, each [B, D] (the proxy's is None, and the tower
            open_clip's own, when ``proxy`` is None, as for the baselines).
        """
        parts = self._parts
        cast_dtype = parts.transformer.get_cast_dtype()
        batch, length = text.shape
        x = parts.token_embedding(text).to(cast_dtype)  # shape = [B, L, width]
        x = x + parts.positional_embedding[:length].to(cast_dtype)
        if proxy is None:
            # open_clip's causal mask runs as is_causal (flash-eligible); another one as it is
            mask = CausalLayout() if self._mask_kind == "causal" else self.attn_mask
            x = parts.ln_final(parts.transformer(x, attn_mask=mask))
            pooled = text_global_pool(x, text, parts.pool_type, eos_token_id=parts.eos_id)
            return self._project(pooled), None
        if self._mask_kind == "custom":
            raise TypeError(_CUSTOM_MASK)
        x = torch.cat([x, proxy.to(x.dtype).expand(batch, 1, -1)], dim=1)  # [B, L + 1, width]
        positions = torch.arange(length, device=text.device)
        keys = positions[None, :] <= self.end_positions(text)[:, None]  # shape = [B, L]
        # real tokens: the tower's causal attention; the proxy: real tokens up to end-of-text
        causal = self._mask_kind == "causal"
        dtype, device = _attention_dtype(x), x.device
        layout = ProxyLayout.build(
            length, causal=causal, proxy_keys=keys, dtype=dtype, device=device
        )  # one [B, 1, L + 1, L + 1] mask for every layer
        x = parts.transformer(x, attn_mask=layout)
        real = parts.ln_final(x[:, :-1])  # shape = [B, L, width]
        pooled = text_global_pool(real, text, parts.pool_type, eos_token_id=parts.eos_id)
        proxy_out = parts.ln_final(x[:, -1])  # shape = [B, width]
        return self._project(pooled), self._project(proxy_out)
