#!/usr/bin/env python3
"""Write a tiny fake Hateful Memes in its real layouts (seeded): ``python data.py``.

- ``final/``: the final release, ``img/<id>.png`` and ``train.jsonl`` (12), ``dev_seen.jsonl``,
  ``dev_unseen.jsonl``, ``test_seen.jsonl``, ``test_unseen.jsonl`` (4 each, half hateful);
- ``phase1/data/``: the first-phase layout, ``img/``, ``train.jsonl`` (8), ``dev.jsonl`` (4) and
  ``test.jsonl`` (4, without labels).

Ids are integers, except a few strings with a leading zero, as in the real files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
FINAL = {"train": 12, "dev_seen": 4, "dev_unseen": 4, "test_seen": 4, "test_unseen": 4}
PHASE1 = {"train": 8, "dev": 4, "test": 4}
WORDS = ["when", "you", "the", "people", "monday", "cat", "finally", "look", "like", "this", "my"]


def write(
    root: Path, sizes: dict[str, int], rng: np.random.Generator, unlabelled: set[str]
) -> None:
    shutil.rmtree(root, ignore_errors=True)
    (root / "img").mkdir(parents=True)
    number = 1235
    for split, size in sizes.items():
        lines = []
        for k in range(size):
            label = k % 2
            key: int | str = number if k != 1 else f"{number:05d}"  # some ids are strings
            number += int(rng.integers(100, 4000))
            name = f"img/{key if isinstance(key, str) else f'{key:05d}'}.png"
            shade = 200 if label else 60
            pixels = np.clip(shade + rng.normal(0, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name, optimize=True)
            line = {
                "id": key,
                "img": name,
                "label": label,
                "text": " ".join(rng.choice(WORDS, size=6)),
            }
            if split in unlabelled:
                del line["label"]
            lines.append(json.dumps(line))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def main() -> None:
    rng = np.random.default_rng(0)
    write(HERE / "final", FINAL, rng, unlabelled=set())
    shutil.rmtree(HERE / "phase1", ignore_errors=True)
    write(HERE / "phase1" / "data", PHASE1, rng, unlabelled={"test"})


if __name__ == "__main__":
    main()
