"""Pretrain a tiny open_clip CLIP on the procedural world with CLIP's own objective.

The model is an open_clip architecture registered by the package (``cmpt-tiny`` by default),
built with random weights by :func:`cmpt_lightning.models.clip.build_clip`, and trained with
open_clip's :class:`~open_clip.ClipLoss` (symmetric InfoNCE over the batch) on the truthful
image-caption pairs of :class:`cmpt_lightning.datasets.world_tasks.WorldPairs`: AdamW,
linear warmup then cosine decay, the logit scale clamped at 100 as open_clip's trainer does.
Every pair is a pure function of its index, so a run is reproducible from its config (up to
floating-point reduction order across thread counts).

The weights are written as safetensors (float16 by default) and read back through the normal
``pretrained=<file>`` path of ``build_clip``; the recall figures of the report are those of
the written file. The report (JSON) holds the loss curve, held-out image->text and
text->image recall@1/@5, the chance level, and the Bayes ceiling of this world: a retriever
that perceives every visible attribute perfectly still cannot tell apart two pairs whose
caption leaves out what distinguishes them (see :func:`bayes_recall`).

Run it from the repository root: ``python scripts/pretrain_world_clip.py --preset world2``
reproduces the shipped ``world2`` weights (:data:`PRESETS`; without ``--preset``, the first
``world`` weights; tests call :func:`pretrain` with tiny settings). The same thread count gives
the same file byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from cmpt_lightning.datasets.world import VALUES, VISUAL, Caption, World
from cmpt_lightning.datasets.world_tasks import WorldPairs
from cmpt_lightning.models.clip import build_clip, build_image_transform, build_tokenizer

log = logging.getLogger("pretrain_world_clip")


@dataclass
class PretrainConfig:
    """The settings of one pretraining run.

    Args:
        model: the open_clip architecture (a config the package registers).
        seed: seed of the model's initialisation and of the world.
        steps: optimizer steps.
        batch_size: pairs per step (the negatives of InfoNCE).
        lr: peak learning rate.
        warmup: steps of linear warmup before the cosine decay.
        weight_decay: AdamW decay of the matrices (not of gains, biases, the logit scale).
        eval_pairs: held-out pairs (split ``pretrain-val``) for recall.
        eval_every: steps between recall evaluations (0: only at the end).
        threads: torch threads of the training process.
        num_workers: DataLoader processes drawing the pairs.
        out_dir: where the weights and the report go.
        name: the files' stem (``<name>.safetensors``, ``<name>.json``).
        half: store the weights as float16 (half the size; recall is measured on them).
        stop_after: stop after this many steps, keeping the schedule of ``steps`` (a quick
            look at the start of a long run); None runs all ``steps``.
    """

    model: str = "cmpt-tiny"
    seed: int = 0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    eval_pairs: int = 1000
    eval_every: int = 500
    threads: int = 1
    num_workers: int = 1
    out_dir: str = "runs/world_clip"
    name: str = "cmpt-tiny-world"
    half: bool = True
    stop_after: int | None = None


class _Collate:
    """Stack the images and tokenize the captions of a batch (in the loader's worker)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([item["image"] for item in items])  # shape = [B, 3, H, W]
        return images, self.tokenizer([item["caption"] for item in items])  # [B, L]


def _recall(similarity: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall@k of the diagonal: row i's match is column i (ties count against it)."""
    true = similarity.diagonal().unsqueeze(1)  # shape = [N, 1]
    rank = (similarity > true).sum(1) + (similarity == true).sum(1) - 1  # others at or above
    return {f"r{k}": float((rank < k).float().mean()) for k in ks}


def bayes_recall(captions: list[Caption], ks: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """The expected recall@k of the Bayes-optimal retriever on these pairs (perfect perception).

    Pair ``j``'s caption is consistent with image ``k`` if every visual attribute it mentions
    matches image ``k``'s scene, colour excepted on a greyscale image. The posterior odds of
    the pairing (j, k) are 0 if inconsistent, else the product of the number of values of each
    mentioned attribute that image ``k`` shows, the same score ranking images for a caption
    and captions for an image. Ties are broken at random: the true match at score ``s`` with
    ``b`` scores above and ``m`` equal (itself included) is among the top ``k`` with
    probability ``clip((k - b) / m, 0, 1)``.

    Args:
        captions: the captions of the pairs, each with its (true) scene.
        ks: the k of recall@k.

    Returns:
        ``{"image_to_text": {"r1": ...}, "text_to_image": {...}}``.
    """
    scenes = [caption.scene for caption in captions]
    grey = np.array([scene.greyscale for scene in scenes])  # [N] (images)
    score = np.ones((len(scenes), len(scenes)))  # [captions, images]
    for attribute in VISUAL:
        value = np.array([scene.index(attribute) for scene in scenes])  # [N]
        said = np.array([attribute in caption.mentioned for caption in captions])  # [N]
        shown = ~grey if attribute == "colour" else np.ones_like(grey)
        match = value[:, None] == value[None, :]  # [captions, images]
        checked = said[:, None] & shown[None, :]
        score *= np.where(checked, np.where(match, len(VALUES[attribute]), 0.0), 1.0)

    def expected(rows: np.ndarray) -> dict[str, float]:
        true = rows.diagonal()[:, None]  # shape = [N, 1]
        above, tied = (rows > true).sum(1), (rows == true).sum(1)
        return {f"r{k}": float(np.clip((k - above) / tied, 0, 1).mean()) for k in ks}

    return {"image_to_text": expected(score.T), "text_to_image": expected(score)}


@torch.no_grad()
def evaluate(
    model: Any, world: World, config: PretrainConfig, ks: tuple[int, ...] = (1, 5)
) -> dict[str, dict[str, float]]:
    """Held-out image->text and text->image recall@k of ``model`` on ``eval_pairs`` pairs."""
    was_training = model.training
    model.eval()
    pairs = WorldPairs(
        world, "pretrain-val", config.eval_pairs, build_image_transform(config.model)
    )
    loader = DataLoader(pairs, batch_size=256, collate_fn=_Collate(build_tokenizer(config.model)))
    image_features, text_features = [], []
    for images, tokens in loader:
        image_features.append(model.encode_image(images, normalize=True))  # [B, D]
        text_features.append(model.encode_text(tokens, normalize=True))  # [B, D]
    similarity = torch.cat(image_features) @ torch.cat(text_features).T  # [images, texts]
    model.train(was_training)
    return {"image_to_text": _recall(similarity, ks), "text_to_image": _recall(similarity.T, ks)}


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's split: decay the matrices, not gains, biases, embeddings' scale."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (no_decay if skip or "logit_scale" in name else decay).append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def pretrain(config: PretrainConfig) -> dict[str, Any]:
    """Train ``config.model`` from random weights on the world's pairs; write weights and report.

    Args:
        config: the run's settings.

    Returns:
        The report (also written to ``<out_dir>/<name>.json``).
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    world = World(seed=config.seed)
    model: Any = build_clip(config.model, None, init_seed=config.seed).train()
    run = config.steps if config.stop_after is None else min(config.steps, config.stop_after)
    pairs = WorldPairs(
        world, "pretrain", run * config.batch_size, build_image_transform(config.model)
    )
    loader = DataLoader(
        pairs,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        collate_fn=_Collate(build_tokenizer(config.model)),
    )
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6
    )

    def factor(step: int) -> float:  # linear warmup, then cosine to 0
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_fn = open_clip.ClipLoss()
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    for step, (images, tokens) in enumerate(loader):
        image_features, text_features, logit_scale = model(images, tokens)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        done = step + 1
        if done % max(1, run // 20) == 0 or done == run:
            elapsed = time.perf_counter() - start
            log.info("step %d/%d loss %.3f (%.1f s)", done, run, losses[-1], elapsed)
        if config.eval_every and done % config.eval_every == 0 and done < run:
            history.append({"step": done, **evaluate(model, world, config)})
            log.info("step %d recall %s", done, history[-1])
    wall = time.perf_counter() - start

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{config.name}.safetensors"
    dtype = torch.float16 if config.half else torch.float32
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    weights.chmod(0o644)  # readable by everyone, like the rest of the package
    shipped = build_clip(config.model, str(weights))  # the normal pretrained-file path
    final = evaluate(shipped, world, config)
    history.append({"step": run, **final})
    captions = [world.caption("pretrain-val", i) for i in range(config.eval_pairs)]
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10) :]
    report: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "steps_run": run,
        "pairs_seen": run * config.batch_size,
        "wall_s": round(wall, 1),
        "steps_per_s": round(run / wall, 3),
        "loss": {
            "initial": math.log(config.batch_size),  # InfoNCE of uninformative features
            "first_tenth": float(np.mean(head)),
            "last_tenth": float(np.mean(tail)),
            "curve": [round(v, 4) for v in losses[:: max(1, len(losses) // 100)]],
        },
        "recall": final,
        "chance": {"r1": 1 / config.eval_pairs, "r5": min(1.0, 5 / config.eval_pairs)},
        "ceiling": bayes_recall(captions),
        "history": history,
        "weights": {"path": str(weights), "bytes": weights.stat().st_size, "dtype": str(dtype)},
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
    }
    (out / f"{config.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


#: The shipped runs: ``--preset NAME`` reproduces the weights of that pretrained tag.
PRESETS: dict[str, PretrainConfig] = {
    # `world`: the first towers (3000 steps; recall@1 a sixth of the Bayes ceiling)
    "world": PretrainConfig(),
    # `world2`: the same model, data and optimizer, 4x the steps (1,536,000 pairs); recall@1
    # about four fifths of the ceiling (src/cmpt_lightning/models/weights/cmpt-tiny-world2.json)
    "world2": PretrainConfig(
        steps=12000,
        warmup=300,
        eval_every=2000,
        out_dir="runs/world_clip2",
        name="cmpt-tiny-world2",
    ),
}


def _parse(argv: list[str] | None = None) -> PretrainConfig:
    """The run's settings from the command line: a preset, optionally cut short."""
    import argparse

    parser = argparse.ArgumentParser(description="Pretrain a tiny CLIP on the world's pairs.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="world")
    parser.add_argument("--stop_after", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--out_dir", default=None, help="where the weights and report go")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]
    updates: dict[str, Any] = {"stop_after": args.stop_after}
    if args.out_dir is not None:
        updates["out_dir"] = args.out_dir
    return dataclasses.replace(config, **updates)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = pretrain(_parse())
    summary = {key: result[key] for key in ("wall_s", "steps_per_s", "recall", "chance", "ceiling")}
    log.info("%s", json.dumps(summary, indent=2))
