"""Writing a data module's splits into a cache: litdata's ``optimize``, resumable.

:func:`write_cache` is what ``cmpt data cache`` runs. Each split is read and screened as the
data module reads it for training, then written by litdata's ``optimize`` (parallel workers,
a progress bar, chunks of ``chunk_bytes``) in the split's order, with the per-sample layout of
:mod:`~cmpt_lightning.datasets.cache_samples`. The manifest is written first, marked
incomplete, and updated as each split is done:

- a rerun with the same settings after an interruption keeps the finished splits and resumes
  the interrupted one from litdata's checkpoints (with the worker count it started with);
- a rerun over a finished cache with the same settings does nothing;
- a rerun with other settings (another model, image storage, split setting) is refused,
  naming the differences, unless ``overwrite`` (then the folder is emptied first).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from ..datasets.cache import (
    MANIFEST_NAME,
    SAMPLES_NAME,
    CacheManifest,
    CacheMismatchError,
    ImageStorage,
    is_url,
    read_json,
    require_litdata,
    write_json,
)
from ..datasets.cache_samples import SampleEncoder
from ..datasets.errors import DataValueError
from ..datasets.records import RecordDataset
from .base import usable_cpus
from .files import FileDataModule

__all__ = ["CACHE_SPLITS", "write_cache"]

log = logging.getLogger(__name__)

#: The splits a cache holds by default (``predict`` reads the test split).
CACHE_SPLITS = ("train", "val", "test")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _planned(
    dm: FileDataModule, storage: ImageStorage, resize: int | None, jpeg_quality: int
) -> CacheManifest:
    """The manifest of the cache ``dm`` and these options give, before any split is written."""
    manifest = dm.expected_manifest()
    height, width = manifest.image["size"]
    short = resize if resize is not None else round(min(height, width) * 8 / 7)  # 224 -> 256
    jpeg = storage is ImageStorage.JPEG
    manifest.image.update(
        storage=storage.value,
        resize=short if jpeg else None,
        jpeg_quality=jpeg_quality if jpeg else None,
    )
    manifest.versions = {
        "cmpt-lightning": _version("cmpt-lightning"),
        "litdata": _version("litdata"),
    }
    manifest.build = {"root": str(dm.root.resolve()), "image_check": dm.image_check.value}
    return manifest


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"image": {"size": ...}}`` -> ``{"image.size": ...}``."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(old: CacheManifest, new: CacheManifest) -> list[str]:
    have, want = _flat(old.build_settings()), _flat(new.build_settings())
    return [
        f"{key}: the cache has {have.get(key)!r}, this command asks for {want.get(key)!r}"
        for key in sorted(set(have) | set(want))
        if have.get(key) != want.get(key)
    ]


def _prepare(out: Path, planned: CacheManifest, overwrite: bool) -> CacheManifest | None:
    """The manifest of a build to continue in ``out``, or None to start afresh (emptied)."""
    path = out / MANIFEST_NAME
    if path.is_file():
        old = CacheManifest.from_dict(read_json(str(path)), str(path))
        differences = _differences(old, planned)
        if not differences:
            return old
        if not overwrite:
            listed = "\n  ".join(differences)
            msg = (
                f"{str(out)!r} holds a cache built with other settings:\n  {listed}\n"
                "Give another --out, or --overwrite true to replace it"
            )
            raise CacheMismatchError(msg)
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        msg = (
            f"{str(out)!r} is not empty and holds no cache (no {MANIFEST_NAME}): give an "
            "empty or new folder as --out, or --overwrite true to empty it"
        )
        raise DataValueError(msg)
    if out.is_dir():
        shutil.rmtree(out)
    return None


def _written(folder: Path, count: int) -> bool:
    """Whether ``folder`` holds a finished litdata split of ``count`` samples."""
    if not (folder / "index.json").is_file():
        return False
    index = read_json(str(folder / "index.json"))
    return sum(int(chunk.get("chunk_size", 0)) for chunk in index.get("chunks", [])) == count


def _write_split(
    dataset: RecordDataset,
    encoder: SampleEncoder,
    folder: Path,
    *,
    workers: int,
    chunk_bytes: str,
    verbose: bool,
) -> None:
    require_litdata()
    from litdata import optimize

    image, text = dataset.availability()
    samples = {
        "ids": list(dataset.ids),
        "image": "".join("1" if v else "0" for v in image.tolist()),
        "text": "".join("1" if v else "0" for v in text.tolist()),
    }
    write_json(folder / SAMPLES_NAME, samples)
    if _written(folder, len(dataset)):
        return  # finished before an interruption that came before the manifest's update
    if (folder / "index.json").exists():
        for stale in folder.glob("*.bin"):
            stale.unlink()
        (folder / "index.json").unlink()
    methods = multiprocessing.get_all_start_methods()
    with contextlib.redirect_stdout(_WithoutAdvert(sys.stdout)):
        optimize(
            fn=encoder,
            inputs=list(range(len(dataset))),
            output_dir=str(folder),
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            keep_data_ordered=True,  # chunks in the split's order: position i is sample i
            reorder_files=False,
            use_checkpoint=True,  # an interrupted split resumes from litdata's checkpoints
            start_method="fork" if "fork" in methods else None,
            verbose=verbose,
        )


class _WithoutAdvert(io.TextIOBase):
    """Standard output without litdata's "Create an account on https://lightning.ai/" line."""

    _ADVERT = "Create an account on https://lightning.ai/"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._dropped = False  # print() writes the line's end separately

    def write(self, text: str) -> int:
        """Pass ``text`` on unless it is the advert (or the end of its line)."""
        if text.startswith(self._ADVERT):
            self._dropped = True
        elif self._dropped and text == "\n":
            self._dropped = False
        else:
            self._dropped = False
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.stream.flush()


def write_cache(
    dm: FileDataModule,
    out: str,
    *,
    splits: tuple[str, ...] | list[str] = CACHE_SPLITS,
    image_storage: ImageStorage | str = ImageStorage.UINT8,
    resize: int | None = None,
    jpeg_quality: int = 90,
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    overwrite: bool = False,
    verbose: bool = True,
) -> CacheManifest:
    """Write the ``splits`` of ``dm`` (a module reading files) into a cache at ``out``.

    Args:
        dm: the data module, reading the files (its ``clip_model`` decides the image size and
            the tokenizer the cache is for).
        out: a local folder (write there, then copy it to an object store if wanted).
        splits: the splits to cache, of train, val and test.
        image_storage: ``uint8`` or ``jpeg`` (see :class:`~.datasets.cache.ImageStorage`).
        resize: the short side of ``jpeg`` images (None: 8/7 of the input size, 256 for 224).
        jpeg_quality: the quality of ``jpeg`` images.
        workers: litdata's writer processes (None: the usable CPU cores).
        chunk_bytes: the size of a chunk (litdata's ``chunk_bytes``, e.g. ``64MB``).
        overwrite: replace a cache built with other settings, or other files, in ``out``.
        verbose: show litdata's progress bar.

    Returns:
        The manifest of the finished cache.

    Raises:
        CacheMismatchError: if ``out`` holds a cache built with other settings.
        ValueError: for a URL or a non-empty folder without a cache as ``out``, or an unknown
            split.
    """
    if is_url(out):
        msg = (
            f"cmpt data cache writes to a local or shared folder, got {out!r}: write the cache "
            "there, then copy the folder to the object store (e.g. `aws s3 sync DIR URL`)"
        )
        raise DataValueError(msg)
    unknown = [s for s in splits if s not in CACHE_SPLITS]
    if unknown or not splits:
        msg = f"splits must be some of {list(CACHE_SPLITS)}, got {list(splits)}"
        raise DataValueError(msg)
    if dm.cache is not None:
        msg = f"the data module to cache reads a cache itself ({dm.cache!r}); give it the files"
        raise DataValueError(msg)
    storage = ImageStorage.parse(image_storage, "image_storage")
    folder = Path(out).expanduser()
    planned = _planned(dm, storage, resize, jpeg_quality)
    manifest = _prepare(folder, planned, overwrite)
    if manifest is not None and manifest.complete and all(s in manifest.splits for s in splits):
        log.info("the cache at %s is complete and up to date: nothing to do", folder)
        return manifest
    if manifest is None:
        manifest = planned
        manifest.classes = dm.class_names
    manifest.complete = False
    transform = dm.image_transform(train=False)
    for split in splits:
        if split in manifest.splits:
            continue
        dataset = dm.build_split(split)
        if not isinstance(dataset, RecordDataset) or len(dataset) == 0:
            msg = f"the {split} split has no samples to cache"
            raise DataValueError(msg)
        dataset.pretokenize()  # in this process, before litdata's workers start
        count = min(workers or usable_cpus(), len(dataset))
        count = int(manifest.build.get("workers", {}).get(split, count))  # a resumed split
        manifest.build.setdefault("workers", {})[split] = count
        write_json(folder / MANIFEST_NAME, manifest.to_dict())
        encoder = SampleEncoder(
            dataset, transform, storage, int(manifest.image["resize"] or 0), jpeg_quality
        )
        _write_split(
            dataset,
            encoder,
            folder / split,
            workers=count,
            chunk_bytes=chunk_bytes,
            verbose=verbose,
        )
        image, text = dataset.availability()
        manifest.splits[split] = {
            "samples": len(dataset),
            "image": int(image.sum()),
            "text": int(text.sum()),
            "bad_skipped": len({b.index for b in dm.bad_samples.get(split, [])}),
        }
        write_json(folder / MANIFEST_NAME, manifest.to_dict())
    manifest.complete = True
    write_json(folder / MANIFEST_NAME, manifest.to_dict())
    return manifest
