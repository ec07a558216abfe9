"""Training loaders that resume mid-epoch with the data order they would have had.

A run restarted from a mid-epoch checkpoint must see the same batches as an uninterrupted run.
Two pieces make that so without storing any sample order:

- :class:`EpochShuffleSampler` draws each epoch's order from (seed, epoch) alone, not from the
  global RNG (which Lightning does not restore), and is a ``RandomSampler`` so that Lightning's
  ``DistributedSampler`` replacement keeps shuffling (DistributedSampler is itself a pure
  function of its seed and the epoch).
- :class:`ResumableDataLoader` skips, at the start of an epoch's iteration, the batches the
  restored trainer has already processed in that epoch (only their indices are drawn: no
  sample is loaded), taking the count from the trainer's own loop progress.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

__all__ = ["EpochShuffleSampler", "ResumableDataLoader"]


class EpochShuffleSampler(RandomSampler):
    """A shuffling sampler whose order is a pure function of (seed, epoch).

    Lightning calls :meth:`set_epoch` at the start of every training epoch, but a resumed run
    may start its DataLoader workers (which draw indices ahead) before that call; ``epoch_fn``,
    when given, is asked for the epoch when an iteration starts instead.

    Args:
        data_source: the dataset (only its length is used).
        seed: the shuffling seed.
        epoch_fn: returns the current epoch (e.g. the trainer's); None: use :meth:`set_epoch`.
    """

    def __init__(
        self, data_source: Sized, seed: int = 0, epoch_fn: Callable[[], int] | None = None
    ) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self.epoch_fn = epoch_fn

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch if self.epoch_fn is None else self.epoch_fn()
        digest = hashlib.blake2b(f"{self.seed}:{epoch}".encode(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class _SkipFirst:
    """Iterates an index sampler, skipping the first ``offset()`` items (read when it starts)."""

    def __init__(self, base: Any, offset: Callable[[], int]) -> None:
        self.base = base
        self.offset = offset

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.base)
        skip = self.offset()
        if 0 < skip < len(self.base):
            for _ in range(skip):
                next(iterator)
        yield from iterator


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that continues a partly processed epoch after a restart.

    Args:
        *args: as for ``DataLoader``.
        resume_offset: returns how many batches of the current epoch were already processed
            (read at the start of each epoch's iteration; 0 for a fresh epoch).
        **kwargs: as for ``DataLoader``.
    """

    def __init__(
        self, *args: Any, resume_offset: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.resume_offset = resume_offset

    @property
    def _index_sampler(self) -> Any:
        base = super()._index_sampler
        if self.resume_offset is None:
            return base
        return _SkipFirst(base, self.resume_offset)

    def state_dict(self) -> dict[str, Any]:
        """Nothing to store: the position comes from the trainer's loop progress on restart."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Accept the (empty) state; see :meth:`state_dict`."""
