"""Threshold-free check of the world study's `tags` runs, on image-only test samples.

The study reports F1 macro at the 0.5 threshold. With the text missing on `tags`, `cross_copy`
scored highest by that measure. This script reloads each run's best checkpoint, removes every
test sample's text, and reports:

- F1 macro at 0.5 (which reproduces the study);
- macro AUROC and mAP over the tags, which do not depend on a threshold;
- the share of (sample, tag) pairs predicted present, against the true share.

Together these tell a better ranking apart from a better-calibrated threshold.

    python scripts/tags_threshold_check.py [--runs runs/world_study/tags-1024]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cmpt_lightning import CMPTModule, WorldDataModule

VARIANTS = ("cmpt", "cmpt_no_align", "cross_copy", "zero_fill", "modality_dropout")


def main() -> None:
    """Print one line per (training regime, variant): means over the seeds' checkpoints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/world_study/tags-1024"))
    options = parser.parse_args()
    dm = WorldDataModule(task="tags", test_size=512, batch_size=128, pretrained="world")
    dm.setup("test")
    batches = list(dm.test_dataloader())
    for train_rate in ("0.0", "0.7"):
        for variant in VARIANTS:
            pattern = f"variant={variant}__train_missing.rate={train_rate}__*/**/best-*.ckpt"
            scores = []
            for checkpoint in sorted(options.runs.glob(pattern)):
                model = CMPTModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
                probs, labels = [], []
                with torch.no_grad():
                    for batch in batches:
                        batch = {**batch, "text_present": torch.zeros_like(batch["text_present"])}
                        probs.append(torch.sigmoid(model(batch).logits))
                        labels.append(batch["label"])
                p, y = torch.cat(probs).numpy(), torch.cat(labels).numpy()
                varied = (y.sum(0) > 0) & (y.sum(0) < len(y))  # AUROC needs both classes
                scores.append(
                    (
                        f1_score(y, p > 0.5, average="macro", zero_division=0),
                        roc_auc_score(y[:, varied], p[:, varied], average="macro"),
                        average_precision_score(y[:, varied], p[:, varied], average="macro"),
                        float((p > 0.5).mean()),
                        float(y.mean()),
                    )
                )
            if not scores:
                continue
            mean = [statistics.mean(s[i] for s in scores) for i in range(5)]
            print(
                f"train {train_rate} {variant:>16} seeds {len(scores)}: F1@0.5 {mean[0]:.3f} "
                f"AUROC {mean[1]:.3f} mAP {mean[2]:.3f} "
                f"predicted present {mean[3]:.3f} (true {mean[4]:.3f})"
            )


if __name__ == "__main__":
    main()
