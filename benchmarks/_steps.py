"""The work the benchmarks time: CMPT's training step and the baselines it is compared with.

- :func:`cmpt_step`: CMPT's full training step (both towers with their proxy, head, CMPT loss
  with alignment, backward, AdamW step), exactly what ``CMPTModule.training_step`` runs.
- :class:`LateFusion` / :func:`late_fusion_step`: the same LoRA-adapted towers run as plain
  open_clip (``encode_image`` / ``encode_text``: no proxy token, no proxy mask), the same gated
  fusion and classifier, cross-entropy, backward, AdamW step. What CMPT costs over a model
  without proxies.
- :func:`towers_step`: the towers' own forward and backward (LoRA-adapted, no proxies), nothing
  else: the floor no implementation of the method goes below.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cmpt_lightning import CMPTLoss, CMPTModel, Task
from cmpt_lightning.models.clip import build_tokenizer

_WORDS = (
    "best homemade chicken pasta recipe easy quick dinner with garlic butter sauce and fresh "
    "tomatoes baked salmon lemon salad chocolate cake vanilla cream french fries crispy grilled "
    "beef tacos spicy soup noodles ramen pork dumplings steamed rice sushi rolls tuna avocado "
    "pancakes maple syrup breakfast waffles strawberry cheesecake apple pie cinnamon"
).split()


def food_titles(count: int, seed: int = 0) -> list[str]:
    """Web-page titles like Food-101's texts (5 to 25 words), seeded."""
    gen = torch.Generator().manual_seed(seed)
    titles = []
    for _ in range(count):
        length = int(torch.randint(5, 26, (1,), generator=gen))
        picks = torch.randint(0, len(_WORDS), (length,), generator=gen).tolist()
        titles.append(" ".join(_WORDS[i] for i in picks))
    return titles


def build_model(name: str, num_classes: int = 101, **kwargs: object) -> CMPTModel:
    """A CMPT model on ``name`` with random weights (no download), quietly."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights are loaded
    try:
        return CMPTModel(name, num_classes, pretrained=None, **kwargs)  # type: ignore[arg-type]
    finally:
        root.setLevel(level)


@dataclass
class Batch:
    """A training batch on the device."""

    images: torch.Tensor
    texts: torch.Tensor
    labels: torch.Tensor
    image_present: torch.Tensor
    text_present: torch.Tensor

    @property
    def size(self) -> int:
        """Samples in the batch."""
        return int(self.images.shape[0])


def make_batch(
    model: CMPTModel, name: str, size: int, device: torch.device, seed: int = 0
) -> Batch:
    """Random images of the model's size, Food-101-like titles, all modalities present."""
    gen = torch.Generator().manual_seed(seed)
    height, width = model.clip.visual.image_size  # type: ignore[union-attr]
    images = torch.randn(size, 3, height, width, generator=gen)
    texts = build_tokenizer(name)(food_titles(size, seed))
    labels = torch.randint(0, model.num_classes, (size,), generator=gen)
    present = torch.ones(size, dtype=torch.bool)
    return Batch(
        images.to(device),
        texts.to(device),
        labels.to(device),
        present.to(device),
        present.to(device),
    )


def autocast(
    device: torch.device, precision: str
) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A factory of the autocast context of ``precision`` (``32``: none, ``bf16``)."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # type: ignore[return-value]
    return contextlib.nullcontext


def store_frozen(model: CMPTModel, precision: str) -> str:
    """Store the frozen tower weights as ``CMPTModule.setup`` does for ``precision``.

    bf16 frozen weights under ``bf16`` where the checkout has
    ``cmpt_lightning.models.precision.cast_frozen`` (issue 21), fp32 otherwise. Returns the
    dtype they are stored in (``bf16`` or ``fp32``), for the report.
    """
    try:
        from cmpt_lightning.models.precision import cast_frozen
    except ImportError:  # a checkout from before bf16 frozen weights
        return "fp32"
    bf16 = precision == "bf16"
    cast_frozen(model.clip, torch.bfloat16 if bf16 else torch.float32)
    return "bf16" if bf16 else "fp32"


def _optimizer(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)


def cmpt_step(model: CMPTModel, batch: Batch, precision: str = "32") -> Callable[[], None]:
    """CMPT's training step on ``batch`` (model in training mode, so absent rows are skipped)."""
    loss_fn = CMPTLoss(Task.MULTICLASS)
    optimizer = _optimizer(model)
    cast = autocast(batch.images.device, precision)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with cast():
            out = model(batch.images, batch.texts, batch.image_present, batch.text_present)
            loss = loss_fn(out, batch.labels).total
        loss.backward()
        optimizer.step()

    return step


class LateFusion(nn.Module):
    """CMPT's towers and head without proxies: open_clip's own ``encode_image`` / ``encode_text``.

    Shares the model's LoRA-adapted open_clip model and its gated fusion and classifier.
    """

    def __init__(self, model: CMPTModel) -> None:
        super().__init__()
        self.clip = model.clip
        self.head = model.head

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of the gated fusion of the two real embeddings."""
        image = self.clip.encode_image(images)  # type: ignore[operator]
        text = self.clip.encode_text(texts)  # type: ignore[operator]
        return self.head.classify(image, text)


def late_fusion_step(model: CMPTModel, batch: Batch, precision: str = "32") -> Callable[[], None]:
    """The training step of :class:`LateFusion` (cross-entropy, AdamW) on ``batch``."""
    fusion = LateFusion(model)
    params = [p for n, p in fusion.named_parameters() if p.requires_grad and "proxy" not in n]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    cast = autocast(batch.images.device, precision)

    def step() -> None:
        fusion.train()
        optimizer.zero_grad(set_to_none=True)
        with cast():
            loss = F.cross_entropy(fusion(batch.images, batch.texts), batch.labels)
        loss.backward()
        optimizer.step()

    return step


def towers_step(model: CMPTModel, batch: Batch, precision: str = "32") -> Callable[[], None]:
    """The towers' own forward and backward (LoRA-adapted, no proxies, no head, no optimizer)."""
    clip = model.clip
    cast = autocast(batch.images.device, precision)

    def step() -> None:
        clip.zero_grad(set_to_none=True)
        with cast():
            image = clip.encode_image(batch.images)  # type: ignore[operator]
            text = clip.encode_text(batch.texts)  # type: ignore[operator]
            total = image.float().sum() + text.float().sum()
        total.backward()

    return step


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode and no gradients inside the block; training mode after it."""
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train()
