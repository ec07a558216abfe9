"""The ``stream`` training loader of a cache: litdata's StreamingDataLoader, resumed exactly.

Imported only when a run trains from a cache with ``cache_order: stream``, so that litdata
stays an optional dependency (``pip install 'cmpt-lightning[cache]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import default_collate

from ..datasets.cache_files import vanished
from ..datasets.cache_samples import SampleDecoder

__all__ = ["CheckedStreamingDataset", "StreamingTrainLoader", "streaming_train_loader"]


class CheckedStreamingDataset(StreamingDataset):
    """litdata's ``StreamingDataset``, whose missing chunk is a ``CacheChunkError``.

    litdata waits for a chunk that is not on disk and raises its ``ChunkWaitTimeoutError``
    with a traceback; a chunk that vanished after the run checked the cache is instead one
    message naming it and how to fix the cache (in a DataLoader worker too).
    """

    def __getitem__(self, index: Any) -> Any:
        try:
            return super().__getitem__(index)
        except FileNotFoundError as err:
            raise vanished(str(self.input_dir.url or self.input_dir.path), err) from None


class StreamingTrainLoader(StreamingDataLoader):
    """litdata's ``StreamingDataLoader`` for training, resumed exactly by Lightning.

    Lightning saves a loader's ``state_dict`` in each checkpoint and loads it when a run
    restarts mid-epoch. Two adjustments make that resumption exact:

    - The state is that after the batches the trainer has processed (``consumed``), not after
      those the loader has yielded: when Lightning fetches ahead (it does for a loader without
      a length), a checkpoint's loader has yielded a batch that was not trained on, and the
      resumed run must start with it.
    - The shuffling epoch follows the trainer's epoch (``epoch``) when an epoch starts, so a
      run resumed from an end-of-epoch checkpoint (whose loader state Lightning does not load)
      draws the next epoch's order, not the first one's.

    Args:
        dataset: the training split as a litdata ``StreamingDataset``.
        epoch: returns the trainer's current epoch (0-based).
        consumed: returns the batches of the current epoch the trainer has processed.
        **kwargs: as for ``StreamingDataLoader`` (``batch_size``, ``num_workers``, ...).
    """

    def __init__(
        self,
        dataset: StreamingDataset,
        *,
        epoch: Callable[[], int],
        consumed: Callable[[], int],
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("collate_fn", default_collate)  # the batches of the files' loader
        super().__init__(dataset, **kwargs)
        self.restore: bool = self.restore
        self._num_samples_yielded_streaming: int = self._num_samples_yielded_streaming
        self._latest_worker_idx: int = self._latest_worker_idx
        self._loaded = False
        self.epoch = epoch
        self.consumed = consumed

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Resume from ``obj`` at the next iteration (the next epoch's iteration only)."""
        super().load_state_dict(obj)
        self._loaded = True

    def __iter__(self) -> Any:
        if self.restore and not self._loaded:
            # litdata clears ``restore`` only when an epoch is read to its end; Lightning stops
            # a resumed epoch after its remaining batches, without that last call
            self.restore = False
        self._loaded = False
        if not self.restore:
            self.current_epoch = self.epoch()  # StreamingDataLoader counts from 1: it adds 1
        yield from super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """The loader's state after the batches the trainer has processed (see above)."""
        batches = self.consumed()
        workers = max(1, self.num_workers)
        yielded, latest = self._num_samples_yielded_streaming, self._latest_worker_idx
        if batches * int(self.batch_size or 1) < yielded:
            self._num_samples_yielded_streaming = batches * int(self.batch_size or 1)
            self._latest_worker_idx = (batches - 1) % workers
        try:
            return super().state_dict()
        finally:
            self._num_samples_yielded_streaming, self._latest_worker_idx = yielded, latest


def streaming_train_loader(
    location: str,
    decoder: SampleDecoder,
    *,
    seed: int,
    epoch: Callable[[], int],
    consumed: Callable[[], int],
    options: dict[str, Any],
) -> StreamingTrainLoader:
    """The ``stream`` loader of a cached training split (see :class:`CacheOrder`).

    Args:
        location: the split's folder or URL (``<cache>/train``).
        decoder: turns cached items into Samples (with the training transform).
        seed: the shuffling seed.
        epoch: returns the trainer's current epoch.
        consumed: returns the batches of the current epoch the trainer has processed.
        options: the options of the files' loaders (batch size, workers, pinning, prefetch).
    """
    dataset = CheckedStreamingDataset(location, shuffle=True, seed=seed, transform=decoder)
    return StreamingTrainLoader(
        dataset,
        epoch=epoch,
        consumed=consumed,
        batch_size=options["batch_size"],
        num_workers=options["num_workers"],
        pin_memory=options["pin_memory"],
        prefetch_factor=options["prefetch_factor"],
        # fresh workers each epoch: litdata hands a resumed state to the workers it starts
        persistent_workers=False,
    )
