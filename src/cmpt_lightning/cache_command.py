"""``cmpt data cache <family> --root RAW --out DIR --clip_model NAME``: a dataset as litdata chunks.

Reads the splits the family's data module reads (with the same options: ``cmpt data cache
food101 --help`` lists them), screens them, and writes each sample's id, label, real
availability, token ids and pre-resized image into litdata chunks with a manifest (see
:mod:`cmpt_lightning.datasets.cache` and
:func:`~cmpt_lightning.datamodules.cache_writer.write_cache`).
Training then reads ``--data.init_args.cache DIR`` (or the folder copied to an object store)
instead of the files. The parser is built from the data modules' signatures and the
:class:`CacheOptions` dataclass, never by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from rich.console import Console

from .cli import user_error
from .datamodules.cache_writer import CACHE_SPLITS, write_cache
from .datamodules.files import SHARED
from .datamodules.registry import FAMILIES
from .datasets.cache import ImageStorage
from .errors import UserInputError

__all__ = ["CacheOptions", "add_cache_command", "data_cache", "run_cache"]

#: Family options that do not apply to writing a cache (reading one, predicting a file).
NOT_CACHE_OPTIONS = frozenset({"cache", "cache_order", "predict_file", *SHARED})


@dataclass
class CacheOptions:
    """How ``cmpt data cache`` writes the cache.

    Args:
        out: the cache's folder (local or shared; copy it to an object store afterwards).
        clip_model: the open_clip model the cache is for: its image size and tokenizer. A
            cache refuses to load for a model with another image size or tokenizer.
        pretrained: the model's pretrained tag (recorded; its normalisation is applied when
            reading, so it does not change the cache).
        splits: the splits to cache (predict reads the test split).
        image_storage: ``uint8`` (the evaluation crop's pixels: bit-identical inputs, about
            150 KB per 224 x 224 sample) or ``jpeg`` (short side ``resize``, several times
            smaller, decoded at every read).
        resize: the short side of ``jpeg`` images (null: 8/7 of the input size, 256 for 224).
        jpeg_quality: the quality of ``jpeg`` images (1 to 95).
        workers: writer processes (null: the usable CPU cores).
        chunk_bytes: the size of a litdata chunk.
        overwrite: replace a cache built with other settings (or one that lost chunks) in
            ``out``. Only the files the build wrote (its manifest lists them) are deleted: a
            folder holding other files and no manifest is refused, and so is an ``out``
            that is the dataset's root, lies inside it or holds it.
        progress: show litdata's progress bar.
    """

    out: str
    clip_model: str
    pretrained: str | None = None
    splits: list[str] = field(default_factory=lambda: list(CACHE_SPLITS))
    image_storage: ImageStorage | str = "uint8"
    resize: int | None = None
    jpeg_quality: int = 90
    workers: int | None = None
    chunk_bytes: str = "64MB"
    overwrite: bool = False
    progress: bool = True


def data_cache(family: str, root: str, options: CacheOptions, **data: Any) -> int:
    """Cache the dataset ``family`` at ``root`` as ``options`` say; print what was written.

    Args:
        family: a name of :data:`~cmpt_lightning.datamodules.registry.FAMILIES`.
        root: the dataset's root folder.
        options: where and how to write.
        **data: the family's data module options (``val_fraction``, ``text_mode``, the CSV
            files and columns, ``on_bad_sample``, ...): the cache's splits are those.

    Returns:
        The exit code: 0.

    Raises:
        UserInputError: for missing data, bad samples, or a cache built with other settings.
    """
    if family not in FAMILIES:
        msg = f"unknown dataset family {family!r}; choose one of {', '.join(FAMILIES)}"
        raise ValueError(msg)
    dm = FAMILIES[family](
        root=str(Path(root).expanduser()),
        clip_model=options.clip_model,
        pretrained=options.pretrained,
        **data,
    )
    manifest = write_cache(
        dm,
        options.out,
        splits=options.splits,
        image_storage=options.image_storage,
        resize=options.resize,
        jpeg_quality=options.jpeg_quality,
        workers=options.workers,
        chunk_bytes=options.chunk_bytes,
        overwrite=options.overwrite,
        verbose=options.progress,
    )
    console = Console()
    size = "x".join(str(v) for v in manifest.image["size"])
    console.print(
        f"{family} cache at {options.out}: {manifest.image['storage']} images of {size}, "
        f"token ids of {manifest.text['tokenizer']} ({manifest.text['context_length']}), "
        + ", ".join(f"{split} {c['samples']:,}" for split, c in manifest.splits.items()),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0


def add_cache_command(subcommands: Any) -> None:
    """Add ``cache`` and one subcommand per family under it to ``cmpt data``'s subcommands."""
    cache = ArgumentParser(
        prog="cmpt data cache",
        description="Write a dataset's splits as litdata chunks with their token ids and "
        "pre-resized images, for a given model; train from them with --data.init_args.cache.",
    )
    subcommands.add_subcommand("cache", cache, help="write a dataset as litdata chunks")
    families = cache.add_subcommands()
    for family, cls in FAMILIES.items():
        sub = ArgumentParser(prog=f"cmpt data cache {family}", description=cls.__doc__)
        families.add_subcommand(family, sub, help=f"cache {family} ({cls.__name__}'s options)")
        sub.add_class_arguments(cls, nested_key=None, skip=set(NOT_CACHE_OPTIONS))
        sub.add_class_arguments(CacheOptions, nested_key=None)


def run_cache(config: Namespace) -> int:
    """Run ``cmpt data cache <family>`` from its parsed namespace; a user error exits 2."""
    family = config.subcommand
    values = {k: v for k, v in config[family].as_dict().items() if not k.startswith("__")}
    names = set(CacheOptions.__dataclass_fields__)
    options = CacheOptions(**{k: v for k, v in values.items() if k in names})
    data = {k: v for k, v in values.items() if k not in names}
    root = data.pop("root")
    try:
        return data_cache(family, root, options, **data)
    except (UserInputError, ValueError) as err:
        return user_error(f"cmpt data cache {family}", err)
