"""A bounded, process-wide memo of generated samples, so that each is made once per process.

The world's samples (:mod:`.world_tasks`) are pure functions of the world's settings, the
split, the index and the preprocessing, and making one (render, caption, transform) costs
about a millisecond. A study fits hundreds of runs on the same splits, one after the other in
one process (the ``debug`` executor of ``cmpt study`` and ``cmpt sweep run``), and every epoch
of every run asks for the same samples: the memo keeps them, least recently used out first,
within a byte budget (:data:`DEFAULT_MEMO_BYTES`, 256 MiB; ``WorldDataModule(memo_mb=...)``
sets it, 0 turns the memo off).

What a hit returns is what the miss computed, so the data are the same, bit for bit, with and
without the memo; only the key must name everything the sample depends on (the datasets build
it). A DataLoader worker process has its own memo: a forked one starts with a copy of its
parent's, a spawned one empty; what a worker adds stays in that worker.

When one run's samples exceed the budget, an epoch's scan evicts the samples before the next
epoch reaches them: expect few hits, and raise the budget (a ``cmpt-tiny`` sample takes about
14 KB: the default holds some 18,000).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import torch

from .base import Sample
from .errors import DataValueError

__all__ = ["DEFAULT_MEMO_BYTES", "ENTRY_OVERHEAD", "SampleMemo", "sample_memo", "sample_nbytes"]

#: The default byte budget of the process's memo (256 MiB).
DEFAULT_MEMO_BYTES = 256 * 2**20
#: Bytes counted per sample beyond its tensors' data: the dict, the key, the tensor objects.
ENTRY_OVERHEAD = 2048


def sample_nbytes(sample: Sample) -> int:
    """The bytes the memo counts for ``sample``: its tensors' data, its strings, the overhead."""
    total = ENTRY_OVERHEAD
    for value in sample.values():
        if isinstance(value, torch.Tensor):
            total += value.nelement() * value.element_size()
        elif isinstance(value, str):
            total += len(value)
    return total


class SampleMemo:
    """Samples by key, least recently used evicted first, within ``max_bytes``.

    A hit returns a new dict holding the stored tensors (the tensors are shared: do not
    change them in place). A sample larger than the whole budget is not kept.

    Args:
        max_bytes: the byte budget (see :func:`sample_nbytes`); 0 keeps nothing.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEMO_BYTES) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Sample, int]] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.max_bytes = 0
        self.resize(max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Sample | None:
        """The sample stored under ``key`` (a new dict; now the most recent), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return dict(entry[0])

    def put(self, key: Hashable, sample: Sample) -> None:
        """Store ``sample`` under ``key``, evicting the least recently used to fit the budget."""
        size = sample_nbytes(sample)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (dict(sample), size)
            self.nbytes += size
            self._evict()

    def resize(self, max_bytes: int) -> None:
        """Set the byte budget, evicting what no longer fits."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            msg = f"the memo's max_bytes must be an int >= 0, got {max_bytes!r}"
            raise DataValueError(msg)
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def clear(self) -> None:
        """Forget every sample and reset the hit and miss counts."""
        with self._lock:
            self._entries.clear()
            self.nbytes = self.hits = self.misses = 0

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self.nbytes -= size

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held

    def __repr__(self) -> str:
        return (
            f"SampleMemo({len(self)} samples, {self.nbytes} of {self.max_bytes} bytes, "
            f"{self.hits} hits, {self.misses} misses)"
        )


_MEMO = SampleMemo()
if hasattr(os, "register_at_fork"):  # POSIX: a forked DataLoader worker gets a fresh lock
    os.register_at_fork(after_in_child=_MEMO._after_fork)


def sample_memo() -> SampleMemo:
    """The memo of this process (shared by every world dataset in it)."""
    return _MEMO
