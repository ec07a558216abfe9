#!/usr/bin/env python3
"""Write a tiny fake UPMC Food-101 in its real layouts (seeded): ``python data.py``.

Three roots with the same samples (4 classes, 5 train and 2 test images per class, 8 x 8 JPEGs):

- ``header/``: ``images/{train,test}/<class>/<class>_<n>.jpg`` and ``texts/{train,test}_titles.csv``
  with a header row;
- ``noheader/``: the same, CSVs without a header row;
- ``txt/``: the original release, texts in ``texts_txt/<class>/<class>_<n>.txt``.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CLASSES = ["apple_pie", "beef_tartare", "caesar_salad", "donuts"]
SPLITS = {"train": range(0, 5), "test": range(100, 102)}
WORDS = ["recipe", "easy", "homemade", "best", "classic", "quick", "the", "with", "how", "to"]


def image(rng: np.random.Generator, label: int) -> Image.Image:
    base = np.array([[200, 60, 40], [120, 40, 30], [60, 160, 60], [220, 170, 90]][label])
    pixels = np.clip(base + rng.normal(0, 25, size=(8, 8, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def text(rng: np.random.Generator, cls: str) -> str:
    words = list(rng.choice(WORDS, size=5))
    # commas and quotes, as in the real page texts, exercise the CSV quoting
    return f'{cls.replace("_", " ")} {" ".join(words)}, "{words[0]}" edition'


def main() -> None:
    rng = np.random.default_rng(0)
    rows: dict[str, list[tuple[str, str, str]]] = {split: [] for split in SPLITS}
    images: dict[str, Image.Image] = {}
    for split, numbers in SPLITS.items():
        for label, cls in enumerate(CLASSES):
            for n in numbers:
                name = f"{cls}_{n}.jpg"
                images[f"{split}/{cls}/{name}"] = image(rng, label)
                rows[split].append((name, text(rng, cls), cls))
    for variant in ("header", "noheader", "txt"):
        root = HERE / variant
        shutil.rmtree(root, ignore_errors=True)
        for rel, img in images.items():
            path = root / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=70, optimize=True)
        for split, split_rows in rows.items():
            if variant == "txt":
                for name, page, cls in split_rows:
                    path = root / "texts_txt" / cls / f"{Path(name).stem}.txt"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(page)
                continue
            path = root / "texts" / f"{split}_titles.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as file:
                writer = csv.writer(file)
                if variant == "header":
                    writer.writerow(["image_path", "text", "food"])
                writer.writerows(split_rows)


if __name__ == "__main__":
    main()
