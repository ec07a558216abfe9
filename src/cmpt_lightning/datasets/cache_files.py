"""The files of a cache: which ones a build wrote, and whether the chunks it indexed are there.

A cache is only as good as its chunks. Before a run reads a local cache,
:func:`check_chunks` compares every chunk that each split's ``index.json`` lists with the
folder (present, and of the size the index records), so that a chunk deleted or cut short is
one :class:`CacheChunkError` naming the files and the fix, not litdata's wait for a chunk that
never comes (``ChunkWaitTimeoutError``). A chunk that vanishes while a run reads it is the same
error (:func:`read_item`, and the streaming loader).

``cmpt data cache --overwrite true`` deletes only what a build wrote (:func:`build_files`):
the files the manifest lists (each finished split's chunks, ``index.json`` and
``samples.json``, and the manifest itself), the chunks named by a finished split's
``index.json``, and, in the folder of a split whose build was interrupted, the files litdata
writes there while it works (``chunk-R-N.bin``, ``R-index.json``, ``.checkpoints/``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .cache import MANIFEST_NAME, SAMPLES_NAME, CacheManifest, is_url

__all__ = [
    "INDEX_NAME",
    "CacheChunkError",
    "build_files",
    "check_chunks",
    "chunk_problems",
    "read_item",
    "rebuild_hint",
    "split_files",
    "vanished",
]

#: litdata's index of a split's chunks.
INDEX_NAME = "index.json"
#: The names litdata gives the files it writes in a split's folder, and in its checkpoints.
_CHUNK = re.compile(r"chunk-\d+-\d+\.bin")
_PARTIAL = re.compile(r"chunk-\d+-\d+\.bin|\d+-index\.json|index\.json|samples\.json|\..+\.tmp")
_CHECKPOINT = re.compile(r"checkpoint-\d+\.json|config\.json")
#: How many file names a message lists before it says how many more there are.
_LISTED = 5


class CacheChunkError(UserInputError, FileNotFoundError):
    """A chunk that a split's ``index.json`` lists is missing, or smaller than it records.

    A DataLoader worker's error reaches the main process as a new error of the same type
    whose message is the worker's traceback; this one keeps only its own message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_unwrapped(message, type(self)))


def _unwrapped(message: str, kind: type) -> str:
    """``message`` without the traceback a DataLoader worker's error is re-raised with."""
    if not (message.startswith("Caught ") and "Original Traceback" in message):
        return message
    marker = f"{kind.__module__}.{kind.__qualname__}: "
    at = message.rfind(marker)
    return message[at + len(marker) :].rstrip("\n") if at >= 0 else message


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _index(folder: Path) -> dict[str, Any] | None:
    """The split's ``index.json``, or None where there is none (or it is not JSON)."""
    try:
        content = json.loads((folder / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _chunk_names(index: dict[str, Any]) -> list[str]:
    chunks = index.get("chunks", [])
    return [str(c["filename"]) for c in chunks if isinstance(c, dict) and "filename" in c]


def chunk_problems(cache: str, splits: Iterable[str]) -> list[str]:
    """What is wrong with the chunks of the ``splits`` of the local cache ``cache``.

    Each problem names the file relative to the cache: a missing ``index.json``, a chunk it
    lists that is missing, or a chunk smaller or larger than the size it records (unless the
    chunks are compressed, when the index records the size before compression). A URL is not
    checked (listing an object store costs a request per chunk): litdata's own error then
    comes when a chunk is read.
    """
    if is_url(cache):
        return []
    root = Path(cache).expanduser()
    problems = []
    for split in splits:
        index = _index(root / split)
        if index is None:
            problems.append(f"{split}/{INDEX_NAME} (missing or unreadable)")
            continue
        config = index.get("config")
        sized = not (isinstance(config, dict) and config.get("compression"))
        for chunk in index.get("chunks", []):
            if not isinstance(chunk, dict) or "filename" not in chunk:
                continue
            path = root / split / str(chunk["filename"])
            recorded = chunk.get("chunk_bytes")
            if not path.is_file():
                problems.append(f"{split}/{chunk['filename']} (missing)")
            elif sized and isinstance(recorded, int) and path.stat().st_size != recorded:
                problems.append(
                    f"{split}/{chunk['filename']} ({path.stat().st_size} bytes, "
                    f"{split}/{INDEX_NAME} records {recorded})"
                )
    return problems


def rebuild_hint(cache: str, manifest: CacheManifest | None = None) -> str:
    """How to rebuild the cache at ``cache`` (the command that built it, from its manifest)."""
    if manifest is None:
        try:
            content = json.loads(Path(cache, MANIFEST_NAME).expanduser().read_text())
            manifest = CacheManifest.from_dict(content)
        except (OSError, ValueError, TypeError):
            manifest = None
    family, root, model = "FAMILY", "RAW", "MODEL"
    if manifest is not None:
        family = manifest.family
        root = str(manifest.build.get("root", root))
        model = str(manifest.image.get("clip_model", model))
    return (
        f"rebuild it with `cmpt data cache {family} --root {root} --out {cache} --clip_model "
        f"{model} --overwrite true` (and the other options it was built with), or copy the "
        "missing chunks back from the copy the cache came from"
    )


def check_chunks(cache: str, manifest: CacheManifest) -> None:
    """Check that every chunk the finished splits of the cache index is there, whole.

    Raises:
        CacheChunkError: naming the missing or cut files, the cache and how to fix it.
    """
    problems = chunk_problems(cache, manifest.splits)
    if problems:
        noun = "file" if len(problems) == 1 else "files"
        msg = (
            f"the cache at {cache!r} lacks {len(problems)} {noun} that its splits' "
            f"{INDEX_NAME} list: {_listed(problems)}. A cache that lost chunks cannot be read: "
            f"{rebuild_hint(cache, manifest)}"
        )
        raise CacheChunkError(msg)


def read_item(reader: Any, index: int, location: str) -> Any:
    """``reader[index]`` (a litdata dataset of the split at ``location``), or CacheChunkError.

    litdata waits for a chunk that is not on disk, then raises ``ChunkWaitTimeoutError`` (a
    ``FileNotFoundError``): a chunk that vanished after the run checked the cache.
    """
    try:
        return reader[index]
    except FileNotFoundError as err:
        raise vanished(location, err) from None


def vanished(location: str, error: FileNotFoundError) -> UserInputError:
    """The CacheChunkError for ``error``, raised reading the cached split at ``location``."""
    if isinstance(error, UserInputError):
        return error
    chunk = getattr(error, "path", None) or error.filename or str(error)
    split_at = location.rstrip("/")
    if is_url(location):
        msg = (
            f"a chunk of the cached split at {location!r} could not be fetched ({error}): check "
            "the connection and that the chunk is still in the object store, or rebuild the "
            "cache (`cmpt data cache ... --out DIR --overwrite true`) and copy it there again"
        )
        return CacheChunkError(msg)
    msg = (
        f"the chunk {str(chunk)!r} of the cached split at {location!r} is missing or cut short "
        f"(it vanished while this run read the cache): {rebuild_hint(str(Path(split_at).parent))}"
    )
    return CacheChunkError(msg)


def split_files(out: Path, split: str) -> list[str]:
    """The files of the finished split ``split`` of the cache at ``out``, relative to ``out``."""
    folder = out / split
    index = _index(folder) or {}
    names = [n for n in _chunk_names(index) if _CHUNK.fullmatch(n)]
    return [f"{split}/{name}" for name in [*names, INDEX_NAME, SAMPLES_NAME]]


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` if it is a file name under ``root`` (no ``..``, not absolute)."""
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return root / path


def _matching(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """The files in ``folder`` (not below it) whose names match ``pattern``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and pattern.fullmatch(p.name))


def build_files(out: Path, manifest: CacheManifest, splits: Iterable[str]) -> list[Path]:
    """The files in ``out`` that the build of ``manifest`` wrote, the manifest last.

    Args:
        out: the cache's folder.
        manifest: its manifest (``files`` lists what finished splits wrote).
        splits: the names a split's folder can have.
    """
    found: dict[Path, None] = {}
    for relative in manifest.files:
        path = _inside(out, relative)
        if path is not None and relative != MANIFEST_NAME:
            found[path] = None
    started = set(manifest.splits) | set(manifest.build.get("workers", {}))
    for split in splits:
        folder = out / split
        if split not in started or not folder.is_dir():
            continue
        if split in manifest.splits:  # also a manifest of a version that listed no files
            names = [Path(r).name for r in split_files(out, split)] + [f".{SAMPLES_NAME}.tmp"]
            found.update(dict.fromkeys(folder / name for name in names))
        else:  # interrupted: the files litdata works with
            found.update(dict.fromkeys(_matching(folder, _PARTIAL)))
        found.update(dict.fromkeys(_matching(folder / ".checkpoints", _CHECKPOINT)))
    found[out / f".{MANIFEST_NAME}.tmp"] = None
    found[out / MANIFEST_NAME] = None
    home = out.resolve()
    return [  # never through a link out of the cache's folder
        path
        for path in found
        if (path.is_file() or path.is_symlink())
        and (path.parent.resolve() == home or home in path.parent.resolve().parents)
    ]
