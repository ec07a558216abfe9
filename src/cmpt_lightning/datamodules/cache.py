"""Reading a cache from a data module: the training order, and the checks of the manifest.

A data module given ``cache: DIR`` (a folder or an object-store URL litdata reads) takes its
splits, classes and samples from the cache that ``cmpt data cache`` wrote, after checking that
the cache fits the run (:func:`open_manifest`). Validation, test and predict read the cached
splits by position, with the loaders of the image files: same order, same DDP sampler, and,
for a ``uint8`` cache, bit-identical tensors, so the metrics are the same as from the files.
Training reads as ``cache_order`` says (:class:`CacheOrder`; the ``stream`` loader is in
:mod:`~cmpt_lightning.datamodules.streaming`).
"""

from __future__ import annotations

from typing import Any

from ..choices import Choice
from ..datasets.cache import (
    MANIFEST_NAME,
    CacheManifest,
    CacheMismatchError,
    image_geometry,
    join_location,
    read_json,
    tokenizer_identity,
)
from ..datasets.cache_files import check_chunks

__all__ = ["CacheOrder", "expected_manifest", "open_manifest"]


class CacheOrder(Choice):
    """The order in which training reads a cache.

    - ``stream`` (the default): litdata's streaming order. Each epoch shuffles the chunks and
      the samples within a window of each chunk, from (seed, epoch); every DataLoader worker of
      every process reads whole chunks, and litdata splits the chunks among the processes of a
      DDP or multi-node run (each process gets the same number of samples; the remainder that
      does not divide is dropped each epoch). The fastest way to read an object store.
      Mid-epoch resumption restores the loader's own state from the checkpoint.
    - ``exact``: the order of the loader of the image files (a permutation of the whole split
      drawn from (seed, epoch), Lightning's DistributedSampler under DDP), reading the cache
      by position. A run then trains on the same batches as from the files and, from a
      ``uint8`` cache, reaches the same weights and test metrics. Each access may land in
      another chunk: meant for a cache on a local or shared file system.
    """

    STREAM = "stream"
    EXACT = "exact"


def expected_manifest(
    family: str,
    data: dict[str, Any],
    task: str,
    clip_model: str,
    transform: Any,
    tokenizer: Any,
) -> CacheManifest:
    """The manifest a cache for these settings would have (splits and classes left empty).

    Args:
        family: the dataset family.
        data: the data module's settings that decide the splits and labels.
        task: the task's name.
        clip_model: the open_clip model the transform and tokenizer are of.
        transform: the evaluation image transform.
        tokenizer: the tokenizer.
    """
    return CacheManifest(
        family=family,
        data=data,
        classes=[],
        task=task,
        image={**image_geometry(transform), "clip_model": clip_model},
        text={**tokenizer_identity(tokenizer), "clip_model": clip_model},
    )


def open_manifest(cache: str, expected: CacheManifest) -> CacheManifest:
    """The manifest of the cache at ``cache``, checked against the ``expected`` one.

    Raises:
        CacheNotFoundError: if there is no cache there.
        CacheMismatchError: if it is incomplete (an interrupted build) or does not fit
            (another family, other split settings, image size or tokenizer).
        CacheChunkError: if a local cache lacks a chunk that a split's ``index.json`` lists,
            or holds one of another size than recorded.
    """
    location = join_location(cache, MANIFEST_NAME)
    manifest = CacheManifest.from_dict(read_json(location), location)
    if not manifest.complete:
        msg = (
            f"the cache at {cache!r} is incomplete (its build was interrupted): run the same "
            "`cmpt data cache` command again to finish it"
        )
        raise CacheMismatchError(msg)
    manifest.check(expected, cache)
    check_chunks(cache, manifest)
    return manifest
