"""The proxy tokens, their output maps, the fusion and the classifier: :class:`ProxyTokenHead`."""

from __future__ import annotations

import torch
from torch import nn

from ..choices import Choice

__all__ = ["AvailabilityCase", "Fusion", "Method", "ProxyTokenHead"]


class Fusion(Choice):
    """How the image-side and text-side vectors are combined before the classifier."""

    GATED = "gated"
    CONCAT = "concat"
    SUM = "sum"


class Method(Choice):
    """What stands in for an absent modality: CMPT's proxies, or a baseline's substitute.

    Two controls separate the proxy's own contribution from cross-modal distillation:

    - ``align_distill``: the stand-in is a learned D x D linear map (identity at init, so it
      starts as ``cross_copy``) of the present modality's real CLIP embedding, trained with
      CMPT's alignment loss and weight on the complete samples: distillation without a proxy
      token.
    - ``image_specialist`` / ``text_specialist``: a single-modality model trained on the same
      data. The fusion sees only its modality: the other side is zeros in training and test,
      never the real embedding (the unused tower does not run and its adapters are frozen).
      Samples without the specialist's modality are left out of the task loss (a masked
      mean); at test time they get the logits of a zero input (the classifier's bias), which a
      comparison ignores: ``text_specialist`` is compared on image-missing samples,
      ``image_specialist`` on text-missing ones.
    """

    CMPT = "cmpt"  # the proxy computed from the other tower
    ZERO_FILL = "zero_fill"  # zeros (as deep correlated prompting does)
    LEARNED_TOKEN = "learned_token"  # one learned vector per modality, the same for every sample
    MODALITY_DROPOUT = "modality_dropout"  # zeros, trained with random modality dropout
    CROSS_COPY = "cross_copy"  # the present modality's own CLIP embedding (shared space)
    ALIGN_DISTILL = "align_distill"  # a learned map of the present modality's CLIP embedding
    IMAGE_SPECIALIST = "image_specialist"  # the image alone; the text side is always zeros
    TEXT_SPECIALIST = "text_specialist"  # the text alone; the image side is always zeros

    @property
    def uses_proxies(self) -> bool:
        """Whether the towers carry proxy tokens."""
        return self is Method.CMPT

    @property
    def aligns(self) -> bool:
        """Whether the stand-ins are trained towards the real embeddings they replace.

        True for ``cmpt`` (its proxies) and ``align_distill`` (its maps): the alignment loss
        (``align_weight``) and the proxy diagnostics apply to them.
        """
        return self in (Method.CMPT, Method.ALIGN_DISTILL)

    @property
    def uses_image(self) -> bool:
        """Whether the image side reaches the fusion (all but ``text_specialist``)."""
        return self is not Method.TEXT_SPECIALIST

    @property
    def uses_text(self) -> bool:
        """Whether the text side reaches the fusion (all but ``image_specialist``)."""
        return self is not Method.IMAGE_SPECIALIST


class AvailabilityCase(Choice):
    """Which modalities a sample has at prediction time."""

    COMPLETE = "complete"
    IMAGE_ONLY = "image_only"  # the text is missing
    TEXT_ONLY = "text_only"  # the image is missing


def _identity_linear(dim: int) -> nn.Linear:
    linear = nn.Linear(dim, dim)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(dim))
        linear.bias.zero_()
    return linear


class ProxyTokenHead(nn.Module):
    """Everything CMPT trains besides the adapters.

    - ``text_proxy_token`` [vision width]: appended to the image tower, stands for the text.
    - ``image_proxy_token`` [text width]: appended to the text tower, stands for the image.
    - ``text_proxy_map`` / ``image_proxy_map``: D x D maps (identity at init) applied to the
      proxies' outputs in the shared CLIP embedding space.
    - ``text_distill_map`` / ``image_distill_map`` (``align_distill`` only): D x D maps
      (identity at init) from the real image (text) embedding to the stand-in for the text
      (image).
    - the fusion of ``a`` (image side) and ``b`` (text side): gated
      ``g = sigmoid(W_g [a; b] + c_g)``, ``f = g * a + (1 - g) * b`` (g = 0.5 at init), concat
      ``[a; b]`` or sum ``a + b``; then a linear classifier.

    Args:
        vision_width: residual width of the image tower (size of ``text_proxy_token``).
        text_width: residual width of the text tower (size of ``image_proxy_token``).
        embed_dim: the CLIP embedding width D.
        num_outputs: number of logits (classes; 1 for a binary task).
        fusion: ``gated``, ``concat`` or ``sum``.
        text_proxy_init: initial value of ``text_proxy_token`` (default: small random).
        image_proxy_init: initial value of ``image_proxy_token`` (default: small random).
        method: ``cmpt`` (proxies and their maps) or a baseline: ``zero_fill`` and
            ``modality_dropout`` (no extra parameters), ``learned_token`` (one learned [D]
            vector per modality, ``missing_image`` and ``missing_text``), ``cross_copy`` (no
            extra parameters: the absent side is the present side's own embedding, see
            :meth:`stand_ins`), ``align_distill`` (the two distill maps) and the specialists
            ``image_specialist`` / ``text_specialist`` (no extra parameters; the other side
            of the fusion is always zeros, see :meth:`classify`).
    """

    def __init__(
        self,
        vision_width: int,
        text_width: int,
        embed_dim: int,
        num_outputs: int,
        *,
        fusion: Fusion | str = Fusion.GATED,
        text_proxy_init: torch.Tensor | None = None,
        image_proxy_init: torch.Tensor | None = None,
        method: Method | str = Method.CMPT,
    ) -> None:
        super().__init__()
        if num_outputs < 1:
            msg = f"num_outputs must be >= 1, got {num_outputs!r}"
            raise ValueError(msg)
        self.fusion = Fusion(fusion)
        self.method = Method(method)
        self.embed_dim = embed_dim
        self.text_proxy_token: nn.Parameter | None = None
        self.image_proxy_token: nn.Parameter | None = None
        self.missing_image: nn.Parameter | None = None
        self.missing_text: nn.Parameter | None = None
        if self.method.uses_proxies:
            if text_proxy_init is None:
                text_proxy_init = torch.randn(vision_width) * vision_width**-0.5
            if image_proxy_init is None:
                image_proxy_init = torch.randn(text_width) * text_width**-0.5
            self.text_proxy_token = nn.Parameter(text_proxy_init.detach().clone().float())
            self.image_proxy_token = nn.Parameter(image_proxy_init.detach().clone().float())
            self.text_proxy_map = _identity_linear(embed_dim)
            self.image_proxy_map = _identity_linear(embed_dim)
        elif self.method is Method.LEARNED_TOKEN:
            self.missing_image = nn.Parameter(torch.zeros(embed_dim))
            self.missing_text = nn.Parameter(torch.zeros(embed_dim))
        elif self.method is Method.ALIGN_DISTILL:  # linear, as CMPT's proxy output maps
            self.text_distill_map = _identity_linear(embed_dim)  # h_V -> stand-in for h_T
            self.image_distill_map = _identity_linear(embed_dim)  # h_T -> stand-in for h_V
        self.gate: nn.Linear | None = None
        if self.fusion == Fusion.GATED:
            self.gate = nn.Linear(2 * embed_dim, embed_dim)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        in_features = 2 * embed_dim if self.fusion == Fusion.CONCAT else embed_dim
        self.classifier = nn.Linear(in_features, num_outputs)

    def substitutes(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A baseline's fixed stand-ins for an absent (text, image), each [batch, D].

        Zeros for ``zero_fill`` / ``modality_dropout`` and the specialists, the learned
        vectors for ``learned_token``. Not defined for ``cmpt``, whose stand-ins are computed
        proxies, nor for ``cross_copy`` and ``align_distill``, whose stand-ins come from the
        sample's own embeddings (see :meth:`stand_ins`, which covers every baseline).
        """
        if self.method.uses_proxies:
            msg = "CMPT's stand-ins are the proxies computed by the towers, not fixed substitutes"
            raise RuntimeError(msg)
        if self.method in (Method.CROSS_COPY, Method.ALIGN_DISTILL):
            name = self.method.value
            msg = f"{name}'s stand-ins come from each sample's other embedding; use stand_ins"
            raise RuntimeError(msg)
        if self.missing_text is not None and self.missing_image is not None:
            text = self.missing_text.to(like.dtype).expand(batch, -1)
            image = self.missing_image.to(like.dtype).expand(batch, -1)
            return text, image
        zeros = like.new_zeros(batch, self.embed_dim)
        return zeros, zeros

    def stand_ins(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_present: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A baseline's stand-ins for an absent (text, image), each [B, D], from the embeddings.

        ``image`` and ``text`` [B, D] are the real embeddings ``h_V`` and ``h_T`` after each
        tower's final projection (``encode_image`` / ``encode_text``, unnormalised): the space
        in which CLIP's contrastive pretraining aligns the two towers. ``cross_copy`` returns
        ``(image, text)``: an absent text is replaced by the sample's image embedding
        (``b = h_V``) and an absent image by its text embedding (``a = h_T``), with their
        gradients (the present tower is trained through both sides of the fusion). Any other
        earlier point of the towers (their residual widths, before ``ln`` and projection)
        would not be comparable. CLIP aligns the directions (cosine similarity), not the
        norms: the copy is the raw embedding, as the fusion sees the real ones.
        ``align_distill`` returns ``(M_V(image), M_T(text))`` through its distill maps, with
        the rows of an absent input (``image_present`` / ``text_present`` [B], None: all
        present) set to zeros, as a proxy's are. The other baselines return
        :meth:`substitutes`.
        """
        if self.method is Method.CROSS_COPY:
            return image, text
        if self.method is Method.ALIGN_DISTILL:
            text_sub, image_sub = self.text_distill_map(image), self.image_distill_map(text)
            if image_present is not None:  # the map of a zero row is its bias: zero it
                text_sub = torch.where(image_present[:, None], text_sub, 0.0)
            if text_present is not None:
                image_sub = torch.where(text_present[:, None], image_sub, 0.0)
            return text_sub, image_sub
        return self.substitutes(image.shape[0], image)

    def task_mask(
        self, image_present: torch.Tensor, text_present: torch.Tensor
    ) -> torch.Tensor | None:
        """The samples [B] that count in the task loss; None: all of them.

        A specialist counts only the samples with its modality (``image_present`` for
        ``image_specialist``, ``text_present`` for ``text_specialist``).
        """
        if not self.method.uses_text:
            return image_present
        if not self.method.uses_image:
            return text_present
        return None

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Fuse the image-side ``a`` [B, D] and text-side ``b`` [B, D] vectors."""
        if self.fusion == Fusion.CONCAT:
            return torch.cat([a, b], dim=-1)  # shape = [B, 2D]
        if self.fusion == Fusion.SUM:
            return a + b
        assert self.gate is not None  # set for Fusion.GATED in __init__
        g = torch.sigmoid(self.gate(torch.cat([a, b], dim=-1)))  # shape = [B, D]
        return g * a + (1 - g) * b

    def classify(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_outputs] from the image-side and text-side vectors.

        A specialist's other side is replaced by zeros, whatever is passed for it.
        """
        if not self.method.uses_text:
            b = torch.zeros_like(b)
        if not self.method.uses_image:
            a = torch.zeros_like(a)
        return self.classifier(self.fuse(a, b))

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        text_proxy: torch.Tensor,
        image_proxy: torch.Tensor,
        image_present: torch.Tensor,
        text_present: torch.Tensor,
    ) -> torch.Tensor:
        """Logits with each absent modality replaced by its proxy (all tensors [B, D] / [B])."""
        a = torch.where(image_present[:, None], image, image_proxy)
        b = torch.where(text_present[:, None], text, text_proxy)
        return self.classify(a, b)

    def case_logits(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        text_proxy: torch.Tensor,
        image_proxy: torch.Tensor,
    ) -> dict[AvailabilityCase, torch.Tensor]:
        """Logits of every sample under each availability case, from one encoding.

        Valid for samples whose two real embeddings and two proxies were all computed.
        """
        return {
            AvailabilityCase.COMPLETE: self.classify(image, text),
            AvailabilityCase.IMAGE_ONLY: self.classify(image, text_proxy),
            AvailabilityCase.TEXT_ONLY: self.classify(image_proxy, text),
        }
