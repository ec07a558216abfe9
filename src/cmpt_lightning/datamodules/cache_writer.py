"""Writing a data module's splits into a cache: litdata's ``optimize``, resumable.

:func:`write_cache` is what ``cmpt data cache`` runs. Each split is read and screened as the
data module reads it for training, then written by litdata's ``optimize`` (parallel workers,
a progress bar, chunks of ``chunk_bytes``) in the split's order, with the per-sample layout of
:mod:`~cmpt_lightning.datasets.cache_samples`. The manifest is written first, marked
incomplete, and updated as each split is done:

- a rerun with the same settings after an interruption keeps the finished splits and resumes
  the interrupted one from litdata's checkpoints (with the worker count it started with);
- a rerun over a finished cache with the same settings does nothing;
- a rerun with other settings (another model, image storage, split setting), or over a cache
  that lost chunks, is refused, naming the differences or the files, unless ``overwrite``.

``overwrite`` deletes only the files a build wrote (the manifest lists them; see
:func:`~cmpt_lightning.datasets.cache_files.build_files`) and the folders they leave empty,
never anything else: a folder holding other files and no manifest is refused, and so is an
``out`` that is the dataset's root, lies inside it or holds it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import re
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
from ..datasets.cache_files import (
    CacheChunkError,
    build_files,
    chunk_problems,
    rebuild_hint,
    split_files,
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


def _relation(out: Path, root: Path) -> str | None:
    """How ``out`` lies to ``root`` if it is the root, inside it or above it (else None)."""
    if out == root:
        return "is"
    if root in out.parents:
        return "lies inside"
    if out in root.parents:
        return "holds"
    return None


def _refuse_data_root(out: str, root: Path) -> None:
    """Refuse an ``out`` that is the dataset's root, inside it or above it.

    Compared both as given (made absolute) and with symbolic links resolved, so that neither
    a link to the root nor a link inside it slips through.

    Raises:
        DataValueError: naming both folders and where to write instead.
    """
    given, data = Path(os.path.abspath(Path(out).expanduser())), Path(os.path.abspath(root))
    relation = _relation(given, data) or _relation(given.resolve(), data.resolve())
    if relation is None:
        return
    sibling = data.parent / f"{data.name}_cache"
    msg = (
        f"--out {out!r} {relation} the dataset's --root {str(root)!r}: a cache is never "
        "written where the raw data lies (and --overwrite would delete it). Give an --out "
        f"outside the root that does not hold it either, e.g. --out {str(sibling)!r}"
    )
    raise DataValueError(msg)


def _files(out: Path, limit: int = 100_000) -> list[Path]:
    """The files under ``out`` (at most ``limit``), sorted."""
    found: list[Path] = []
    for folder, _, names in os.walk(out):
        found.extend(Path(folder, name) for name in names)
        if len(found) >= limit:
            break
    return sorted(found)


def _count(files: list[Path]) -> str:
    return f"{len(files):,} file" + ("" if len(files) == 1 else "s")


def _clear(out: Path, manifest: CacheManifest) -> None:
    """Delete the files the build of ``manifest`` wrote in ``out``, and the folders left empty.

    Raises:
        DataValueError: before deleting anything, if a split's folder holds other files (the
            new build would write among them).
    """
    ours = build_files(out, manifest, CACHE_SPLITS)
    known = set(ours)
    foreign = [p for split in CACHE_SPLITS for p in _files(out / split) if p not in known]
    if foreign:
        names = ", ".join(str(p.relative_to(out)) for p in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        msg = (
            f"{str(out)!r} holds a cache, but its split folders also hold {_count(foreign)} "
            f"that no cache build wrote ({names}{more}): --overwrite deletes only what a "
            "build wrote. Move them away, or give another --out"
        )
        raise DataValueError(msg)
    for path in ours:  # the manifest last: an interrupted clear can be run again
        path.unlink(missing_ok=True)
    for split in CACHE_SPLITS:
        for folder in (out / split / ".checkpoints", out / split):
            with contextlib.suppress(OSError):  # not empty (or not there): kept
                folder.rmdir()


def _prepare(out: Path, planned: CacheManifest, overwrite: bool) -> CacheManifest | None:
    """The manifest of a build to continue in ``out``, or None to start afresh (cleared)."""
    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} is a file: give a folder (new, empty, or holding a cache)"
        raise DataValueError(msg)
    path = out / MANIFEST_NAME
    if path.is_file():
        old = CacheManifest.from_dict(read_json(str(path)), str(path))
        differences = _differences(old, planned)
        problems = [] if differences else chunk_problems(str(out), old.splits)
        if not differences and not problems:
            return old
        if not overwrite and differences:
            listed = "\n  ".join(differences)
            msg = (
                f"{str(out)!r} holds a cache built with other settings:\n  {listed}\n"
                "Give another --out, or --overwrite true to replace it"
            )
            raise CacheMismatchError(msg)
        if not overwrite:
            msg = (
                f"the cache at {str(out)!r} lacks files that its splits' index.json list: "
                f"{', '.join(problems[:5])}: {rebuild_hint(str(out), old)}"
            )
            raise CacheChunkError(msg)
        _clear(out, old)
        return None
    if out.is_dir():
        files = _files(out)
        if files:
            names = ", ".join(str(p.relative_to(out)) for p in files[:5])
            more = " or more" if len(files) >= 100_000 else ""
            msg = (
                f"--out {str(out)!r} holds {_count(files)}{more} and no cache (no "
                f"{MANIFEST_NAME}), e.g. {names}: cmpt data cache writes only into a new or "
                "empty folder or a cache's own, and --overwrite deletes only the files a cache "
                "build wrote. Give a new or empty folder as --out"
            )
            raise DataValueError(msg)
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
        for stale in folder.glob("chunk-*-*.bin"):  # litdata's names: nothing else is ours
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


#: What litdata's ``optimize`` prints on standard output besides its progress bar (stderr): its
#: advert and its workers' chatter, by exact message (anything else, e.g. an error, passes).
_LITDATA_CHATTER = re.compile(
    r"Create an account on https://lightning\.ai/.*"
    r"|Setting multiprocessing start_method to \w+\. ?"
    r"|Storing the files under \S.*"
    r"|Setup started with fast_dev_run=\w+\."
    r"|Setup finished in [\d.]+ seconds\. Found \d+ items to process\."
    r"|Resuming from last saved checkpoint\.\.\."
    r"|No checkpoints found\. Saving current configuration\.\.\."
    r"|Checkpoints loaded successfully\."
    r"|Starting \d+ workers with \d+ items\. The progress bar is only updated when a worker "
    r"finishes\."
    r"|Workers are ready ! Starting data processing\.\.\."
    r"|Rank \d+ inferred the following `\[.*\]` data format\."
    r"|Worker \d+ is (?:terminating|done)\."
    r"|Workers are finished\."
    r"|Finished data processing!"
)


class _WithoutAdvert(io.TextIOBase):
    """Standard output without litdata's advert and worker chatter (:data:`_LITDATA_CHATTER`)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._dropped = False  # print() writes the line's end separately

    def write(self, text: str) -> int:
        """Pass ``text`` on unless it is the advert or chatter (or the end of its line)."""
        if _LITDATA_CHATTER.fullmatch(text.rstrip("\n")):
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
        overwrite: replace a cache built with other settings, or one that lost chunks, in
            ``out`` (deleting only the files its build wrote).
        verbose: show litdata's progress bar.

    Returns:
        The manifest of the finished cache.

    Raises:
        CacheMismatchError: if ``out`` holds a cache built with other settings.
        CacheChunkError: if ``out`` holds a cache that lost chunks (without ``overwrite``).
        ValueError: for a URL, the dataset's root (or a folder inside or above it), or a
            non-empty folder without a cache as ``out``, or an unknown split.
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
    _refuse_data_root(out, dm.root)
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
        written = {*manifest.files, *split_files(folder, split), MANIFEST_NAME}
        manifest.files = sorted(written)
        write_json(folder / MANIFEST_NAME, manifest.to_dict())
    manifest.complete = True
    write_json(folder / MANIFEST_NAME, manifest.to_dict())
    return manifest
