"""The cache of a dataset's splits: litdata chunks, and a manifest that says what they hold.

``cmpt data cache <family>`` writes, under one folder (or an object-store prefix copied from
one)::

    <cache>/manifest.json          what was cached, and for which model (below)
    <cache>/<split>/index.json     litdata's index of the split's chunks
    <cache>/<split>/chunk-*.bin    the samples, in the split's order
    <cache>/<split>/samples.json   the split's sample ids and real availability, in order

Each sample holds its stable id, its position in the split, its label, the availability of
its image and text in the data, the token ids of its text (for one tokenizer and context
length) and its image, pre-resized (:class:`ImageStorage`). The manifest records the family,
the data module settings that decide the splits and labels, the classes, the image geometry
and the tokenizer's identity. A data module reading the cache compares them with its own
(:meth:`CacheManifest.check`): another tokenizer, another image size or other split settings
are a :class:`CacheMismatchError` naming the cache's value and the requested one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..choices import Choice
from ..errors import UserInputError
from .base import cap_text, context_length

__all__ = [
    "CACHE_FORMAT",
    "MANIFEST_NAME",
    "SAMPLES_NAME",
    "CacheCorruptError",
    "CacheDependencyError",
    "CacheManifest",
    "CacheMismatchError",
    "CacheNotFoundError",
    "ImageStorage",
    "image_geometry",
    "is_url",
    "join_location",
    "read_json",
    "require_litdata",
    "split_image_transform",
    "tokenizer_identity",
    "write_json",
]

#: The version of the cache layout; a cache of another version is refused, not misread.
CACHE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.json"

#: Texts tokenized to fingerprint a tokenizer: a cache is refused by a tokenizer that gives
#: other ids for them (another vocabulary, lower-casing, context length, padding).
PROBE_TEXTS = (
    "a photo of a dog on the beach",
    "Crème brûlée, PAD THAI & 42 dumplings!? https://example.org/x_y",
    "word " * 100,
    "",
)


class ImageStorage(Choice):
    """How a cached image is stored.

    - ``uint8`` (the default): the evaluation transform's resized and center-cropped pixels
      before normalisation, H x W x 3 bytes. Loading is a copy, a division and a
      normalisation: the tensors are bit-identical to those read from the image files, so the
      metrics are too. 150 KB per 224 x 224 sample.
    - ``jpeg``: the image resized to a short side of ``resize`` (a little above the input
      size) and re-encoded as JPEG: about 5 to 10 times smaller, but decoded and resized again
      at every read, and no longer bit-identical (a second resize and a lossy encoding).
    """

    UINT8 = "uint8"
    JPEG = "jpeg"


class CacheNotFoundError(UserInputError, FileNotFoundError):
    """The cache, its manifest or one of its splits is not where it was looked for."""


class CacheMismatchError(UserInputError, ValueError):
    """A cache built with other settings than those of the run reading (or extending) it."""


class CacheDependencyError(UserInputError, ImportError):
    """litdata, which reads and writes caches, is not installed."""


class CacheCorruptError(UserInputError, ValueError):
    """A file of a cache that is not valid JSON (cut short, edited): it names the file."""


def _parse_json(text: str, location: str) -> Any:
    """The JSON document ``text`` read from ``location``; a broken one names the file."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        lineno, colno = getattr(err, "lineno", None), getattr(err, "colno", None)
        where = f", line {lineno} column {colno}" if lineno is not None else ""
        reason = getattr(err, "msg", None) or type(err).__name__
        msg = (
            f"{location!r} is not valid JSON ({reason}{where}): the cache is damaged (cut "
            "short or edited); build it again with `cmpt data cache`"
        )
        raise CacheCorruptError(msg) from err


def require_litdata() -> None:
    """Check that litdata can be imported.

    Raises:
        CacheDependencyError: if not, saying how to install it.
    """
    try:
        import litdata  # noqa: F401
    except ImportError as err:
        msg = (
            f"reading or writing a cache needs litdata ({err}): pip install 'cmpt-lightning[cache]'"
        )
        raise CacheDependencyError(msg) from None


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``s3://``, ``gs://``, ...) rather than a local path."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme not in ("", "file") and "/" not in scheme


def join_location(location: str, *parts: str) -> str:
    """``location`` / ``parts``, for a local path or a URL."""
    if is_url(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location).expanduser().joinpath(*parts))


def read_json(location: str) -> Any:
    """The JSON document at a local path or an object-store URL (read with litdata's clients).

    Raises:
        CacheNotFoundError: if there is no file there.
        CacheCorruptError: if it is not valid JSON.
    """
    if not is_url(location):
        path = Path(location)
        if not path.is_file():
            msg = f"no {path.name} at {str(path)!r}"
            raise CacheNotFoundError(msg)
        return _parse_json(path.read_text(encoding="utf-8", errors="replace"), str(path))
    require_litdata()
    from litdata.streaming.fs_provider import _get_fs_provider

    provider = _get_fs_provider(location)
    if not provider.exists(location):
        msg = f"no {location.rsplit('/', 1)[-1]} at {location!r}"
        raise CacheNotFoundError(msg)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "file.json")
        provider.download_file(location, local)
        return _parse_json(Path(local).read_text(encoding="utf-8", errors="replace"), location)


def write_json(path: Path, content: Any) -> None:
    """Write ``content`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=1) + "\n")
    temporary.replace(path)


def split_image_transform(transform: Any) -> tuple[list[Any], list[Any]]:
    """The steps of an open_clip transform before its to-tensor step, and the steps from it on.

    The first part is the geometry (resize, crop, RGB conversion) that a ``uint8`` cache
    applies once; the second turns the pixels into the normalised tensor at every read.
    """
    steps = list(getattr(transform, "transforms", [transform]))
    for position, step in enumerate(steps):
        if "ToTensor" in type(step).__name__:
            return steps[:position], steps[position:]
    msg = f"the image transform has no ToTensor step to split at: {transform!r}"
    raise ValueError(msg)


def image_geometry(transform: Any) -> dict[str, Any]:
    """What an evaluation transform does to the pixels before normalising them.

    ``size`` is the (H, W) of its output, ``steps`` the descriptions of its resize, crop and
    conversion steps (size and interpolation included), ``mean`` / ``std`` its normalisation
    (recorded, not compared: a cache holds the pixels before normalising them).
    """
    geometry, tail = split_image_transform(transform)
    size = None
    for step in geometry:  # the last resize or crop decides the output size
        size = getattr(step, "size", size)
    if isinstance(size, int):
        size = (size, size)
    normalize = next((s for s in tail if hasattr(s, "mean")), None)
    return {
        "size": [int(size[0]), int(size[1])] if size is not None else None,
        "steps": [repr(step) for step in geometry],
        "mean": [float(v) for v in getattr(normalize, "mean", ())],
        "std": [float(v) for v in getattr(normalize, "std", ())],
    }


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """A tokenizer's class, context length, and a digest of its ids for :data:`PROBE_TEXTS`."""
    length = context_length(tokenizer)
    ids = tokenizer([cap_text(text, length) for text in PROBE_TEXTS])
    digest = hashlib.sha256(torch.as_tensor(ids).to(torch.int64).numpy().tobytes()).hexdigest()
    return {"tokenizer": type(tokenizer).__name__, "context_length": length, "probe": digest[:16]}


@dataclass
class CacheManifest:
    """What a cache holds and for which model; ``manifest.json`` in the cache's folder.

    Attributes:
        family: the dataset family (``food101``, ``mmimdb``, ``hateful_memes``, ``csv``).
        data: the data module settings that decide the splits and labels, by name.
        classes: the class names, in label order.
        task: ``multiclass``, ``multilabel`` or ``binary``.
        image: the image storage (``storage``, ``resize``, ``jpeg_quality``), the geometry of
            :func:`image_geometry`, and the ``clip_model`` it was built for.
        text: :func:`tokenizer_identity` and the ``clip_model`` it was built for.
        splits: per split, its sample count and real availability counts.
        complete: False while ``cmpt data cache`` is writing it (an interrupted build).
        format: :data:`CACHE_FORMAT` of the writer.
        versions: the versions of cmpt-lightning and litdata that wrote it.
        build: how it was built, for the record (the raw root, the image check, the writer
            processes of each split started).
        files: the files the build wrote, relative to the cache's folder (each finished
            split's chunks, ``index.json`` and ``samples.json``, and the manifest): all that
            ``cmpt data cache --overwrite true`` may delete.
    """

    family: str
    data: dict[str, Any]
    classes: list[str]
    task: str
    image: dict[str, Any]
    text: dict[str, Any]
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    complete: bool = False
    format: int = CACHE_FORMAT
    versions: dict[str, str] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, content: dict[str, Any], location: str = "the cache") -> CacheManifest:
        """The manifest of a ``manifest.json`` document (``location`` names it in errors)."""
        found = content.get("format") if isinstance(content, dict) else None
        if found != CACHE_FORMAT:
            msg = (
                f"{location} has cache format {found!r}, this cmpt-lightning reads format "
                f"{CACHE_FORMAT}: rebuild it with `cmpt data cache`"
            )
            raise CacheMismatchError(msg)
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in content.items() if k in names})

    def build_settings(self) -> dict[str, Any]:
        """The settings that decide the cache's bytes (compared before extending a build)."""
        return {"family": self.family, "data": self.data, "image": self.image, "text": self.text}

    def check(self, expected: CacheManifest, location: str) -> None:
        """Refuse to serve a run whose family, split settings, image size or tokenizer differ.

        Only what changes the samples is compared: the image geometry (size, resize and crop,
        interpolation; not the normalisation, applied when reading) and the tokenizer's ids
        (not the model's name: models sharing a tokenizer share a cache).

        Raises:
            CacheMismatchError: naming each difference, the cache's value and the requested one.
        """
        problems = []
        if self.family != expected.family:
            problems.append(
                f"family: the cache holds {self.family!r}, this run reads {expected.family!r}"
            )
        for key in sorted(set(self.data) | set(expected.data)):
            have, want = self.data.get(key), expected.data.get(key)
            if have != want:
                problems.append(
                    f"data setting {key}: the cache has {have!r}, this run has {want!r}"
                )
        have_image, want_image = self.image, expected.image
        if (have_image["size"], have_image["steps"]) != (want_image["size"], want_image["steps"]):
            problems.append(
                f"image size: the cache was built for {_size(have_image)} "
                f"(clip_model {have_image.get('clip_model')!r}: {', '.join(have_image['steps'])}), "
                f"this run asks for {_size(want_image)} (clip_model "
                f"{want_image.get('clip_model')!r}: {', '.join(want_image['steps'])})"
            )
        keys = ("tokenizer", "context_length", "probe")
        if [self.text.get(k) for k in keys] != [expected.text.get(k) for k in keys]:
            problems.append(
                f"tokenizer: the cache holds the token ids of clip_model "
                f"{self.text.get('clip_model')!r} ({_tokens(self.text)}), this run tokenizes "
                f"with clip_model {expected.text.get('clip_model')!r} ({_tokens(expected.text)})"
            )
        if problems:
            listed = "\n  ".join(problems)
            msg = (
                f"the cache at {location!r} does not fit this run:\n  {listed}\nBuild a cache "
                "with these settings (`cmpt data cache ... --out NEW_DIR`), or use the settings "
                "the cache was built with"
            )
            raise CacheMismatchError(msg)


def _size(image: dict[str, Any]) -> str:
    size = image.get("size") or ["?", "?"]
    return f"{size[0]}x{size[1]}"


def _tokens(text: dict[str, Any]) -> str:
    length, probe = text.get("context_length"), text.get("probe")
    return f"{text.get('tokenizer')}, context length {length}, ids {probe}"
