"""MM-IMDb: movie posters and plots, 23 genres, multi-label (Arevalo et al., 2017).

Layout of the raw release (``mmimdb.tar.gz``)::

    <root>/mmimdb/split.json            {"train": [ids], "dev": [ids], "test": [ids]}
    <root>/mmimdb/dataset/<id>.jpeg     the poster
    <root>/mmimdb/dataset/<id>.json     metadata: "genres", "plot" (a list), "plot outline", ...

``root`` may also be the ``mmimdb`` folder itself. The HDF5 variant (``multimodal_imdb.hdf5``)
holds precomputed features and no raw text, so it cannot be used. The 23 genres keep the
benchmark's order; other genres are ignored, but an empty or NaN genre (or ``genres`` that is
not a list of names) makes the movie a bad sample. The ids of ``split.json`` are names such as
``0012345``: an id that is a path (``../x``, ``a/b``) is a bad sample and no file of it is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..choices import Choice
from .errors import DatasetNotFoundError, DataValueError
from .labels import is_blank, missing_label
from .records import Record, RecordDataset

__all__ = [
    "GENRES",
    "LAYOUT",
    "OFFICIAL_SIZES",
    "SPLITS",
    "MMIMDbDataset",
    "TextMode",
    "find_mmimdb",
    "movie_id",
    "read_mmimdb",
    "split_ids",
]

NAME = "MM-IMDb"

#: The 23 genres of the benchmark, in its order (label i is GENRES[i]).
GENRES = [
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
]  # fmt: skip

LAYOUT = """\
<root>/mmimdb/split.json          {"train": [ids], "dev": [ids], "test": [ids]}
<root>/mmimdb/dataset/<id>.jpeg
<root>/mmimdb/dataset/<id>.json   ("genres", "plot", "plot outline", ...)
  (root may also be the mmimdb folder itself)"""

#: Movies per split of the official split.json.
OFFICIAL_SIZES = {"train": 15552, "dev": 2608, "test": 7799}

SPLITS = ("train", "dev", "test")

_HDF5_HINT = (
    "Found the HDF5 variant ({path}): it holds precomputed features and no raw text or images, "
    "so CMPT cannot use it. Download the raw release instead (mmimdb.tar.gz: dataset/<id>.jpeg "
    "and .json, and split.json) and point root at it."
)


class TextMode(Choice):
    """Which plot text(s) a movie contributes."""

    OUTLINE = "outline"  # one sample per movie: the plot outline if present, else the first plot
    ALL_PLOTS = "all_plots"  # one sample per (movie, plot); ids are "<imdb id>#<k>"


def _hdf5_near(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() in (".hdf5", ".h5"):
        return root
    for folder in (root, root / "mmimdb"):
        if folder.is_dir():
            found = sorted(folder.glob("*.hdf5")) + sorted(folder.glob("*.h5"))
            if found:
                return found[0]
    return None


def find_mmimdb(root: str | Path) -> Path:
    """The folder holding ``split.json`` and ``dataset/``: ``root/mmimdb`` or ``root`` itself.

    Raises:
        DatasetNotFoundError: if neither holds the raw layout (saying so if it is the HDF5 one).
    """
    root = Path(root)
    for base in (root / "mmimdb", root):
        if (base / "split.json").is_file() and (base / "dataset").is_dir():
            return base
    hdf5 = _hdf5_near(root)
    hint = _HDF5_HINT.format(path=hdf5) if hdf5 is not None else ""
    if not root.exists():
        raise DatasetNotFoundError(NAME, root, root, LAYOUT, hint)
    base = root / "mmimdb" if (root / "mmimdb").is_dir() else root
    missing = base / "split.json" if not (base / "split.json").is_file() else base / "dataset"
    raise DatasetNotFoundError(NAME, root, missing, LAYOUT, hint)


def _movie_key(value: Any) -> str:
    # split.json holds zero-padded strings; tolerate integers
    return f"{value:07d}" if isinstance(value, int) else str(value)


def split_ids(base: Path, split: str) -> list[str]:
    """The movie ids of ``split`` in ``base/split.json``."""
    path = base / "split.json"
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        msg = f"{str(path)!r} is not valid JSON ({err}); re-download split.json"
        raise DataValueError(msg) from err
    if not isinstance(table, dict) or split not in table or not isinstance(table[split], list):
        keys = sorted(table) if isinstance(table, dict) else type(table).__name__
        msg = f"{str(path)!r} must map {list(SPLITS)} to lists of ids; no list {split!r} in {keys}"
        raise DataValueError(msg)
    return [_movie_key(v) for v in table[split]]


def _texts(meta: dict[str, Any], mode: TextMode) -> list[str]:
    plots = [] if is_blank(meta.get("plot")) else meta["plot"]
    plots = [plots] if isinstance(plots, str) else [str(p) for p in plots if not is_blank(p)]
    outline = None if is_blank(meta.get("plot outline")) else str(meta["plot outline"])
    if mode is TextMode.ALL_PLOTS:
        return plots or ([outline] if outline else [])
    if outline:
        return [outline]
    return plots[:1]


def _genres(meta: dict[str, Any]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The benchmark genres of a movie (label indices) and what is wrong with its ``genres``."""
    genres = meta.get("genres")
    genres = [] if genres is None else [genres] if isinstance(genres, str | float) else genres
    if not isinstance(genres, list):
        return (), (f"genres must be a list of names, got {genres!r:.60}",)
    missing = [reason for reason in (missing_label(g, "genre") for g in genres) if reason]
    if missing:
        return (), tuple(f"{reason} in genres {genres!r:.60}" for reason in missing)
    label = tuple(sorted({GENRES.index(g) for g in genres if g in GENRES}))
    return label, () if label else (f"none of the 23 benchmark genres (genres: {genres})",)


def _is_name(movie: str) -> bool:
    """``movie`` names a file of ``dataset/`` (not a path, which could lead out of it)."""
    return bool(movie) and movie not in (".", "..") and not set("/\\") & set(movie)


def _movie_records(base: Path, movie: str, mode: TextMode) -> list[Record]:
    meta_file = base / "dataset" / f"{movie}.json"
    image = base / "dataset" / f"{movie}.jpeg"
    source = str(meta_file)
    if not _is_name(movie):
        problem = f"movie id {movie!r} is not a name such as '0012345'; fix split.json"
        split_json = str(base / "split.json")
        return [Record(movie, None, None, None, split_json, (problem,), parsed=False)]
    if not meta_file.is_file():
        problem = "metadata file does not exist"
        return [Record(movie, image, None, None, source, (problem,), parsed=False)]
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        problem = f"metadata is not valid JSON ({err})"
        return [Record(movie, image, None, None, source, (problem,), parsed=False)]
    if not isinstance(meta, dict):
        problem = f"metadata is not a JSON object (got {type(meta).__name__})"
        return [Record(movie, image, None, None, source, (problem,), parsed=False)]
    label, problems = _genres(meta)
    texts = _texts(meta, mode) or [""]  # no plot at all: one record, flagged as an empty text
    if mode is TextMode.OUTLINE:
        return [Record(movie, image, texts[0], label, source, problems)]
    return [Record(f"{movie}#{k}", image, t, label, source, problems) for k, t in enumerate(texts)]


def read_mmimdb(
    root: str | Path, split: str, text_mode: TextMode | str = TextMode.OUTLINE
) -> list[Record]:
    """Parse the ``train``, ``dev`` or ``test`` split of MM-IMDb into records.

    Args:
        root: the dataset root (holding ``mmimdb/``, or the ``mmimdb`` folder itself).
        split: ``train``, ``dev`` or ``test``.
        text_mode: ``outline`` (one sample per movie) or ``all_plots``.

    Raises:
        DatasetNotFoundError: if the raw layout is not there.
    """
    if split not in SPLITS:
        msg = f"MM-IMDb has the splits {SPLITS}, got {split!r}"
        raise DataValueError(msg)
    base = find_mmimdb(root)
    mode = TextMode(text_mode)
    return [r for movie in split_ids(base, split) for r in _movie_records(base, movie, mode)]


def movie_id(sample_id: str) -> str:
    """The imdb id of a sample id (``0012345#2`` -> ``0012345``)."""
    return sample_id.split("#", 1)[0]


class MMIMDbDataset(RecordDataset):
    """One split of MM-IMDb, multi-hot over :data:`GENRES` (see the module docstring).

    Args:
        root: the dataset root.
        split: ``train``, ``dev`` or ``test``.
        image_transform: PIL image -> float tensor [3, H, W].
        tokenizer: list of strings -> int tensor [B, L].
        image_size: (H, W) of the transform's output.
        text_mode: ``outline`` (one sample per movie) or ``all_plots`` (one per plot).
    """

    family = "mmimdb"

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
        *,
        text_mode: TextMode | str = TextMode.OUTLINE,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.text_mode = TextMode(text_mode)
        records = read_mmimdb(root, split, self.text_mode)
        super().__init__(records, len(GENRES), True, image_transform, tokenizer, image_size)
