#!/usr/bin/env python3
"""Write a tiny fake MM-IMDb in the raw release's layout (seeded): ``python data.py``.

- ``raw/mmimdb/split.json`` (train / dev / test: 12 / 4 / 4 movies) and
  ``raw/mmimdb/dataset/<imdb id>.jpeg`` + ``.json`` (8 x 8 posters; genres from the 23 of the
  benchmark plus some it ignores; a "plot outline" for some movies, one to three plots each);
- ``hdf5/multimodal_imdb.hdf5``: an empty stand-in for the HDF5 variant, which the reader refuses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
GENRES = [
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
]  # fmt: skip
IGNORED = ["Reality-TV", "News", "Adult", "Talk-Show"]
SIZES = {"train": 12, "dev": 4, "test": 4}
WORDS = ["a", "young", "man", "woman", "city", "war", "love", "finds", "secret", "family", "old"]


def main() -> None:
    rng = np.random.default_rng(0)
    shutil.rmtree(HERE / "raw", ignore_errors=True)
    shutil.rmtree(HERE / "hdf5", ignore_errors=True)
    base = HERE / "raw" / "mmimdb"
    (base / "dataset").mkdir(parents=True)
    split: dict[str, list[str]] = {}
    number = 8
    for name, size in SIZES.items():
        split[name] = []
        for _ in range(size):
            movie = f"{number:07d}"
            number += int(rng.integers(1, 50))
            split[name].append(movie)
            genres = [
                str(g) for g in rng.choice(GENRES[:8], size=int(rng.integers(1, 4)), replace=False)
            ]
            if rng.random() < 0.3:
                genres.append(str(rng.choice(IGNORED)))
            plots = [
                " ".join(rng.choice(WORDS, size=8)) + "." for _ in range(int(rng.integers(1, 4)))
            ]
            meta = {
                "title": f"Movie {movie}",
                "year": int(rng.integers(1930, 2015)),
                "genres": genres,
            }
            meta["plot"] = plots
            if rng.random() < 0.5:
                meta["plot outline"] = " ".join(rng.choice(WORDS, size=6)) + "."
            (base / "dataset" / f"{movie}.json").write_text(json.dumps(meta, indent=1))
            colour = np.array([30 * GENRES.index(genres[0]), 100, 150])
            pixels = np.clip(colour + rng.normal(0, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(
                base / "dataset" / f"{movie}.jpeg", quality=70, optimize=True
            )
    (base / "split.json").write_text(json.dumps(split, indent=1))
    (HERE / "hdf5").mkdir()
    (HERE / "hdf5" / "multimodal_imdb.hdf5").write_bytes(b"")


if __name__ == "__main__":
    main()
