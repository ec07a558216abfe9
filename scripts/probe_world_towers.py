"""Linear probes of frozen world towers against each task's per-modality Bayes ceilings.

For each world task with one label per sample (``objects`` and any other single-label task),
a multinomial logistic regression is fitted on the L2-normalised frozen CLIP embeddings of the
training split, one probe per modality, and scored on the test split: on the same modality and
transferred to the other one (a probe trained on image embeddings, applied to the captions'),
which shows whether the two spaces are shared. Full-batch L-BFGS on the training embeddings, with
an L2 penalty picked on a held-out fifth of the training split; everything is seeded, so a rerun
gives the same numbers.

Usage::

    python scripts/probe_world_towers.py --pretrained world world_v2 --tasks objects
    python scripts/probe_world_towers.py --pretrained none          # random-weight towers

It prints a markdown table and writes it, with the raw numbers, to ``--out`` (a JSON file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cmpt_lightning.datamodules.world import WorldDataModule
from cmpt_lightning.models.clip import build_clip
from cmpt_lightning.tasks import Task

PENALTIES = (1e-4, 1e-3, 1e-2)


@torch.no_grad()
def _embed(model: Any, loader: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised image and text embeddings and the labels of every sample of ``loader``."""
    images, texts, labels = [], [], []
    for batch in loader:
        images.append(F.normalize(model.encode_image(batch["image"]).float(), dim=-1))
        texts.append(F.normalize(model.encode_text(batch["text"]).float(), dim=-1))
        labels.append(batch["label"].long())
    return torch.cat(images), torch.cat(texts), torch.cat(labels)


def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, penalty: float) -> torch.nn.Linear:
    """A multinomial logistic regression by full-batch L-BFGS (deterministic)."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), y) + penalty * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def _accuracy(probe: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((probe(x).argmax(-1) == y).float().mean())


def _probe(x: torch.Tensor, y: torch.Tensor, classes: int) -> torch.nn.Linear:
    """Pick the penalty on the last fifth of the training rows, refit on all of them."""
    cut = len(y) * 4 // 5
    scores = [_accuracy(_fit(x[:cut], y[:cut], classes, p), x[cut:], y[cut:]) for p in PENALTIES]
    return _fit(x, y, classes, PENALTIES[scores.index(max(scores))])


def probe(pretrained: str | None, task: str, train: int, test: int) -> dict[str, Any]:
    """Probe accuracies of one set of towers on one task, beside its ceilings."""
    dm = WorldDataModule(task=task, train_size=train, val_size=1, test_size=test, batch_size=256)
    if dm.task is not Task.MULTICLASS:
        msg = f"task {task!r} has no single label per sample; probes need one"
        raise SystemExit(msg)
    dm.setup("fit")
    dm.setup("test")
    model = build_clip("cmpt-tiny", pretrained).eval()
    train_img, train_txt, train_y = _embed(model, dm.train_dataloader())
    test_img, test_txt, test_y = _embed(model, dm.test_dataloader())
    classes = dm.num_classes
    on_image, on_text = _probe(train_img, train_y, classes), _probe(train_txt, train_y, classes)
    return {
        "pretrained": pretrained or "none",
        "task": task,
        "image": _accuracy(on_image, test_img, test_y),
        "image_to_text": _accuracy(on_image, test_txt, test_y),
        "text": _accuracy(on_text, test_txt, test_y),
        "text_to_image": _accuracy(on_text, test_img, test_y),
        "ceilings": dm.ceilings(),
    }


def main() -> None:
    """Probe the asked towers on the asked tasks; print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", nargs="+", default=["world"], help="tags, or none")
    parser.add_argument("--tasks", nargs="+", default=["objects"])
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--test", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("runs/world_probes.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [
        probe(None if tag == "none" else tag, task, args.train, args.test)
        for tag in args.pretrained
        for task in args.tasks
    ]
    lines = [
        "| towers | task | image | image probe on text | text | text probe on image "
        "| ceiling image / text |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c = r["ceilings"]
        lines.append(
            f"| {r['pretrained']} | {r['task']} | {r['image']:.3f} | {r['image_to_text']:.3f} "
            f"| {r['text']:.3f} | {r['text_to_image']:.3f} "
            f"| {c.get('image', float('nan')):.3f} / {c.get('text', float('nan')):.3f} |"
        )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "table": lines}, indent=2) + "\n")


if __name__ == "__main__":
    main()
