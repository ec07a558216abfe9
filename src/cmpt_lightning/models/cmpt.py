"""The CMPT model in pure PyTorch: two frozen open_clip towers with LoRA, proxies, fused head."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import loralib
import torch
from torch import nn

from .attention import add_lora
from .clip import build_clip
from .head import AvailabilityCase, Fusion, Method, ProxyTokenHead
from .lora import LoRATargets
from .rows import _bucket, _keep_rows, _Rows, _run_tower, _scatter_rows, _select  # noqa: F401
from .towers import TextTower, VisionTower

__all__ = ["CMPTFeatures", "CMPTModel", "CMPTOutput"]
# the row helpers live in rows.py; _bucket is imported here only for tests/models/test_fast_path.py


@dataclass
class CMPTFeatures:
    """Per-sample embeddings, all [B, D] in the shared CLIP space, plus the masks [B].

    Rows that were not computed are zeros: ``image`` and ``text_proxy`` where the image is
    absent, ``text`` and ``image_proxy`` where the text is absent. For a baseline the two
    "proxies" are its stand-ins (zeros, learned vectors, for ``cross_copy`` the sample's
    other real embedding: ``text_proxy`` is ``image`` and ``image_proxy`` is ``text``, for
    ``align_distill`` the distill maps of those). A specialist's unused tower does not run:
    its real embedding is zeros in every row.

    Attributes:
        image: real image class embedding (``encode_image(normalize=False)``).
        text: real text embedding (``encode_text(normalize=False)``).
        text_proxy: proxy for the text, made by the image tower (after its map).
        image_proxy: proxy for the image, made by the text tower (after its map).
        image_present: bool, the image is available.
        text_present: bool, the text is available.
    """

    image: torch.Tensor
    text: torch.Tensor
    text_proxy: torch.Tensor
    image_proxy: torch.Tensor
    image_present: torch.Tensor
    text_present: torch.Tensor

    def detach(self) -> CMPTFeatures:
        """A copy with every tensor detached from the graph."""
        return CMPTFeatures(**{f.name: getattr(self, f.name).detach() for f in fields(self)})


@dataclass
class CMPTOutput:
    """What :meth:`CMPTModel.forward` returns: ``logits`` [B, num_outputs] and the features.

    ``task_mask`` (bool [B]) marks the samples the task loss counts; None (every method but
    the specialists): all of them.
    """

    logits: torch.Tensor
    features: CMPTFeatures
    task_mask: torch.Tensor | None = None


_NEITHER = (
    "a sample has neither image nor text; CMPT needs at least one modality per sample (drop or "
    "report such samples before the model)"
)


def _refuse_neither(neither: torch.Tensor) -> None:
    """Raise the ValueError naming the batch positions of the samples with no input."""
    rows = neither.nonzero().flatten().tolist()
    msg = (
        f"samples at batch positions {rows} have neither image nor text; CMPT needs at least "
        "one modality per sample (drop or report such samples before the model)"
    )
    raise ValueError(msg)


class CMPTModel(nn.Module):
    """Cross-Modal Proxy Tokens on a frozen open_clip model (Reza et al., TMLR 2025).

    Both towers are frozen; LoRA adapters are added to their attention; the image tower carries
    a proxy token for the text and the text tower one for the image. A proxy attends to the real
    tokens of its tower and no real token attends to it, so the real embeddings are exactly
    open_clip's. When a modality is absent its embedding is replaced by the proxy made from the
    other tower, and a gated fusion of the two sides feeds the classifier.

    What to pass for an absent modality: anything of the right shape (the data modules pass
    zeros where the data has no such input, and the real input with its flag cleared where the
    protocol simulates the absence). It is never encoded into the output: in training mode
    (with ``skip_absent``) the tower does not run on it at all; in eval mode the tower runs on
    the whole batch, so that a sample's numbers do not depend on which other samples are
    masked, and the absent rows are discarded; with ``skip_absent_eval`` eval mode skips them
    too (only the present rows are gathered, encoded and scattered back).

    Args:
        clip: an open_clip model name (``ViT-B-16``, ``cmpt-tiny``, ``local-dir:/path``) or an
            already-built open_clip ``CLIP``/``CustomTextCLIP`` instance (used as is, not copied;
            it is frozen and its attention modules are replaced by LoRA ones in place).
        num_classes: number of classes (use 1 for a binary task with one logit).
        pretrained: open_clip pretrained tag (``openai``) or weights file; only with a name.
        quick_gelu: force QuickGELU on or off; None decides from the weights (OpenAI: on).
        init_seed: seed of the trainable parts' random initialisation (LoRA ``A``, and the
            classifier; LoRA ``B``, the gate and the learned tokens start at zeros, the proxy
            output maps at the identity and the proxy tokens from the towers' own tokens) and,
            unless ``tower_seed`` is given, of random tower weights. None: 0 in this model;
            :class:`~cmpt_lightning.module.CMPTModule` (and so the CLI) uses the run seed
            (``seed_everything``) instead and saves the seed it used (see docs/protocol.md).
        tower_seed: seed of the frozen towers' random weights when ``pretrained`` is None
            (no effect with pretrained weights). None: ``init_seed`` if it is given, else 0,
            so a checkpoint saved before this setting existed rebuilds its towers.
        lora_rank: adapter rank r (0: no adapters).
        lora_alpha: adapter scaling numerator (update ``(alpha / r) B A``).
        lora_dropout: dropout on the adapters' input.
        lora_targets: ``qv`` (query and value), ``qkv`` or ``all`` (also out and MLP linears).
        fusion: ``gated``, ``concat`` or ``sum``.
        method: ``cmpt``, or a baseline that uses no proxies (the towers run exactly as
            open_clip's): ``zero_fill`` (an absent modality's embedding is zeros),
            ``learned_token`` (one learned vector per modality), ``modality_dropout``
            (zeros; the LightningModule adds training-time modality dropout) or
            ``cross_copy`` (an absent modality's embedding is the present modality's own CLIP
            embedding, after the towers' final projections, where CLIP aligns the two). Two
            controls: ``align_distill`` (a learned linear map, identity at init, of the
            present modality's embedding, trained with the alignment loss: distillation
            without a proxy token) and ``image_specialist`` / ``text_specialist`` (a
            single-modality model: the fusion's other side is always zeros, the unused tower
            does not run and its adapters stay frozen; samples without the modality are left
            out of the task loss and get the classifier's bias as logits, see
            :class:`~cmpt_lightning.models.head.Method`).
        skip_absent: in training, run each tower only on the samples that have its input.
            That needs the number of such samples on the host: one synchronisation with the
            device per step (and, with ``compile_towers``, the rows padded to a power of two,
            so that the compiled towers see few batch sizes). False: both towers run on every
            row and the absent ones are discarded; the training step then never waits for the
            device. None (the default): True, unless ``compile_towers`` (the fast path on a GPU,
            where skipping saves compute only at high missing rates).
        skip_absent_eval: in eval mode (validation, test, predict), also run each tower only
            on the samples that have its input, for prediction on data where a modality is
            often missing (``benchmarks/skip_towers.py`` measures the saving). The logits are
            the same up to floating-point rounding; the trade-off is that a sample's numbers
            then depend on which other samples of its batch lack a modality (the towers'
            matrix products see other shapes), by float32 rounding (~1e-7) and by more under
            bf16 or TF32. Off (the default), every row goes through both towers and the
            absent rows are discarded, so results do not depend on the batch's composition.
        grad_checkpointing: recompute the towers' activations in the backward pass.
        compile_towers: run both towers through ``torch.compile`` (compiled lazily on first use,
            not pickled, with ``dynamic`` shapes). With it the training step has no host
            synchronisation unless ``skip_absent`` is set, and then its padded batch sizes keep
            the recompilations few.
    """

    skip_absent_eval: bool = False  # the value of models pickled before the setting existed

    def __init__(
        self,
        clip: str | nn.Module,
        num_classes: int,
        *,
        pretrained: str | None = None,
        quick_gelu: bool | None = None,
        init_seed: int | None = None,
        tower_seed: int | None = None,
        lora_rank: int = 1,
        lora_alpha: float = 1.0,
        lora_dropout: float = 0.0,
        lora_targets: LoRATargets | str = LoRATargets.QV,
        fusion: Fusion | str = Fusion.GATED,
        method: Method | str = Method.CMPT,
        skip_absent: bool | None = None,
        skip_absent_eval: bool = False,
        grad_checkpointing: bool = False,
        compile_towers: bool = False,
    ) -> None:
        super().__init__()
        init_seed = 0 if init_seed is None else init_seed
        tower_seed = init_seed if tower_seed is None else tower_seed
        if isinstance(clip, str):
            clip = build_clip(clip, pretrained, quick_gelu=quick_gelu, init_seed=tower_seed)
        elif pretrained is not None:
            msg = "pretrained is only used with a model name; load weights into the instance first"
            raise ValueError(msg)
        if not isinstance(clip, nn.Module):
            msg = f"clip must be an open_clip model name or instance, got {type(clip).__name__}"
            raise TypeError(msg)
        self.clip = clip
        towers: Any = clip  # open_clip's CLIP / CustomTextCLIP: untyped attributes
        self.vision = VisionTower(towers.visual)
        self.text_tower = TextTower(clip)
        for param in clip.parameters():
            param.requires_grad_(False)
        text_transformer = getattr(towers, "text", towers).transformer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            for transformer in (towers.visual.transformer, text_transformer):
                add_lora(
                    transformer,
                    r=lora_rank,
                    alpha=lora_alpha,
                    dropout=lora_dropout,
                    targets=lora_targets,
                )
            loralib.mark_only_lora_as_trainable(clip, bias="none")
            used = Method(method)
            for transformer, needed in (
                (towers.visual.transformer, used.uses_image),
                (text_transformer, used.uses_text),
            ):
                if not needed:  # a specialist's other tower never runs: nothing to train there
                    transformer.requires_grad_(False)
            embed_dim = int(towers.visual.output_dim)
            self.head = ProxyTokenHead(
                self.vision.width,
                self.text_tower.width,
                embed_dim,
                num_classes,
                fusion=fusion,
                text_proxy_init=self.vision.initial_proxy(),
                image_proxy_init=self.text_tower.initial_proxy(),
                method=method,
            )
        self.num_classes = num_classes
        self.skip_absent = skip_absent
        self.skip_absent_eval = skip_absent_eval
        self.compile_towers = compile_towers
        self._compiled: dict[str, Any] = {}
        if grad_checkpointing:
            towers.set_grad_checkpointing(True)
        self.train()  # a new module trains by default; the frozen towers have no dropout

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = {}  # compiled callables do not pickle; they are rebuilt lazily
        return state

    def _tower(self, name: str) -> Any:
        """The vision or text tower callable, compiled on first use if asked for."""
        tower = self.vision if name == "vision" else self.text_tower
        if not self.compile_towers:
            return tower
        if name not in self._compiled:
            # the bound __call__, not the tower: each tower's code then has its own cache of
            # compiled graphs (a callable object is compiled through one shared wrapper, whose
            # cache, and recompile limit, both towers would share)
            self._compiled[name] = torch.compile(tower.__call__, dynamic=True)
        return self._compiled[name]

    @property
    def method(self) -> Method:
        """``cmpt`` or the baseline this model implements."""
        return self.head.method

    @property
    def embed_dim(self) -> int:
        """The CLIP embedding width D."""
        return self.head.embed_dim

    def _check_inputs(
        self,
        images: torch.Tensor,
        texts: torch.Tensor,
        image_present: torch.Tensor,
        text_present: torch.Tensor,
    ) -> None:
        batch = images.shape[0]
        if images.ndim != 4 or texts.ndim != 2 or texts.shape[0] != batch:
            msg = (
                f"expected images [B, 3, H, W] and texts [B, L] with the same B, got "
                f"{tuple(images.shape)} and {tuple(texts.shape)}"
            )
            raise ValueError(msg)
        self.text_tower.check_length(texts.shape[1])  # e.g. CLIP's 77 ids for a 32-token tower
        for name, mask in (("image_present", image_present), ("text_present", text_present)):
            if mask.dtype != torch.bool or mask.shape != (batch,):
                got = f"{mask.dtype} {tuple(mask.shape)}"
                msg = f"{name} must be a bool tensor of shape [{batch}], got {got}"
                raise ValueError(msg)

    def _skips(self) -> bool:
        """Whether this call runs each tower only on the rows that have its input."""
        if not self.training:
            return bool(self.skip_absent_eval)
        if self.skip_absent is None:
            return not self.compile_towers
        return bool(self.skip_absent)

    def _rows(
        self, image_present: torch.Tensor, text_present: torch.Tensor
    ) -> tuple[_Rows | None, _Rows | None]:
        """The rows each tower encodes (None: all), after refusing samples with neither input.

        Skipping reads the counts of present rows on the host, with the check, in one
        synchronisation. Without skipping, nothing is read: in training the check runs on the
        device (``torch._assert_async``: at once on a CPU, a device-side assert on a GPU), in
        eval mode on the host.
        """
        neither = ~(image_present | text_present)  # shape = [B]
        if not self._skips():
            if self.training:
                torch._assert_async(~neither.any(), _NEITHER)
            elif bool(neither.any()):
                _refuse_neither(neither)
            return None, None
        counts = torch.stack([image_present.sum(), text_present.sum(), neither.sum()])
        images, texts, none = counts.tolist()  # the one host synchronisation of the call
        if none:
            _refuse_neither(neither)
        bucketed = self.compile_towers
        return (
            _select(image_present, images, bucketed=bucketed),
            _select(text_present, texts, bucketed=bucketed),
        )

    def encode(
        self,
        images: torch.Tensor,
        texts: torch.Tensor,
        image_present: torch.Tensor,
        text_present: torch.Tensor,
    ) -> CMPTFeatures:
        """Encode a batch into real embeddings and proxies.

        Args:
            images: [B, 3, H, W] as the open_clip transform makes them.
            texts: [B, L] token ids from the open_clip tokenizer.
            image_present: bool [B], the image of the sample is available.
            text_present: bool [B], the text of the sample is available.

        Returns:
            The :class:`CMPTFeatures`; rows of absent inputs are zeros.

        Raises:
            ValueError: on mismatched shapes, token ids longer than the text tower's context
                length, or a sample with neither modality.
        """
        self._check_inputs(images, texts, image_present, text_present)
        batch = images.shape[0]
        img_rows, txt_rows = self._rows(image_present, text_present)
        # gather the rows to encode, run each tower on them (scattered back below)
        vision, text_tower = self._tower("vision"), self._tower("text")
        image: torch.Tensor | None = None
        text: torch.Tensor | None = None
        text_proxy = image_proxy = None
        if self.method.uses_image:  # not for text_specialist
            image, text_proxy = _run_tower(vision, images, img_rows, self.head.text_proxy_token)
            image = _keep_rows(_scatter_rows(img_rows, image, batch), image_present, img_rows)
        if self.method.uses_text:  # not for image_specialist
            text, image_proxy = _run_tower(text_tower, texts, txt_rows, self.head.image_proxy_token)
            text = _keep_rows(_scatter_rows(txt_rows, text, batch), text_present, txt_rows)
        # a specialist's unused tower did not run: its embedding is zeros, in the other's dtype
        if image is None:
            assert text is not None  # every method uses at least one tower
            image = torch.zeros_like(text)
        if text is None:
            text = torch.zeros_like(image)
        if text_proxy is None or image_proxy is None:  # a baseline: its stand-ins
            text_sub, image_sub = self.head.stand_ins(image, text, image_present, text_present)
            return CMPTFeatures(image, text, text_sub, image_sub, image_present, text_present)
        text_proxy = _scatter_rows(img_rows, self.head.text_proxy_map(text_proxy), batch)
        image_proxy = _scatter_rows(txt_rows, self.head.image_proxy_map(image_proxy), batch)
        text_proxy = _keep_rows(text_proxy, image_present, img_rows)
        image_proxy = _keep_rows(image_proxy, text_present, txt_rows)
        return CMPTFeatures(image, text, text_proxy, image_proxy, image_present, text_present)

    def forward(
        self,
        images: torch.Tensor,
        texts: torch.Tensor,
        image_present: torch.Tensor,
        text_present: torch.Tensor,
    ) -> CMPTOutput:
        """Logits with each absent modality replaced by its proxy, and the features.

        Arguments as in :meth:`encode`.
        """
        features = self.encode(images, texts, image_present, text_present)
        logits = self.head(
            features.image,
            features.text,
            features.text_proxy,
            features.image_proxy,
            image_present,
            text_present,
        )
        task_mask = self.head.task_mask(image_present, text_present)
        return CMPTOutput(logits=logits, features=features, task_mask=task_mask)

    def case_logits(self, features: CMPTFeatures) -> dict[AvailabilityCase, torch.Tensor]:
        """Logits under each availability case for samples encoded with both modalities."""
        return self.head.case_logits(
            features.image, features.text, features.text_proxy, features.image_proxy
        )

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state of the trainable parameters only (LoRA, proxies, maps, fusion, classifier).

        The ``align_distill`` maps are included; a specialist's unused tower's adapters are
        frozen, so they are not.
        """
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}
