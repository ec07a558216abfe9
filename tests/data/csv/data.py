#!/usr/bin/env python3
"""Write tiny fake user tables for ``MultimodalCSVDataModule`` (seeded): ``python data.py``.

- ``images/``: 8 x 8 PNG and JPEG files;
- ``data.csv``: columns id, image, text, label, split; 3 classes by name; 12 train, 3 val and 3
  test rows; some rows lack the image or the text (real missingness), none lacks both;
- ``multilabel/{train,val,test}.jsonl``: no id column, labels as lists, texts sometimes null;
- ``predict.csv``: id, image, text and no label column; one row has neither image nor text.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CLASSES = ["bird", "cat", "dog"]
COLOURS = [(200, 180, 40), (40, 60, 200), (160, 80, 40)]
SPLITS = {"train": 4, "val": 1, "test": 1}  # rows per class


def write_image(rng: np.random.Generator, name: str, label: int) -> str:
    pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 20, size=(8, 8, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    image.save(HERE / "images" / name, **({"quality": 70} if name.endswith(".jpg") else {}))
    return f"images/{name}"


def main() -> None:
    rng = np.random.default_rng(0)
    for name in ("images", "multilabel"):
        shutil.rmtree(HERE / name, ignore_errors=True)
        (HERE / name).mkdir()
    rows = []
    k = 0
    for split, per_class in SPLITS.items():
        for label, cls in enumerate(CLASSES):
            for _ in range(per_class):
                image = write_image(rng, f"{k:03d}.{'png' if k % 2 else 'jpg'}", label)
                text = f"a photo of a {cls} in the {rng.choice(['park', 'house', 'garden'])}"
                if split == "train" and k % 5 == 1:
                    image = ""  # real missingness: no image
                elif split == "train" and k % 5 == 3:
                    text = ""  # real missingness: no text
                rows.append(
                    {"id": f"s{k:03d}", "image": image, "text": text, "label": cls, "split": split}
                )
                k += 1
    with (HERE / "data.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["id", "image", "text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    for split, size in (("train", 8), ("val", 3), ("test", 3)):
        lines = []
        for i in range(size):
            labels = sorted({CLASSES[i % 3], *([CLASSES[(i + 1) % 3]] if i % 2 else [])})
            image = write_image(rng, f"ml_{split}_{i}.png", CLASSES.index(labels[0]))
            text = None if i == 2 else " and ".join(f"a {c}" for c in labels)
            lines.append(json.dumps({"image": image, "text": text, "label": labels}))
        (HERE / "multilabel" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    with (HERE / "predict.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "image", "text"])
        writer.writerow(["p0", "images/000.jpg", "a bird on a branch"])
        writer.writerow(["p1", "", "a cat on a sofa"])
        writer.writerow(["p2", "images/002.jpg", ""])
        writer.writerow(["p3", "", ""])  # neither: reported, not predicted


if __name__ == "__main__":
    main()
