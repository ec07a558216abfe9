"""Which rows of a batch each tower encodes when it skips the samples that lack its input.

Private helpers of :class:`~cmpt_lightning.models.cmpt.CMPTModel` (``skip_absent``,
``skip_absent_eval``): gather the present rows (padded to a power of two for compiled towers),
run a tower on them and scatter the outputs back into a [B, D] tensor of zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__: list[str] = []


@dataclass(frozen=True)
class _Rows:
    """The rows of a batch one tower encodes when it skips absent inputs.

    Attributes:
        encode: the rows the tower runs on, [m]: the present rows first, in batch order, then
            absent ones that pad ``m`` to a bucket size (their outputs are dropped).
        keep: the present rows, [n] (the first n of ``encode``), where the outputs go.
    """

    encode: torch.Tensor
    keep: torch.Tensor


def _bucket(count: int, batch: int) -> int:
    """The smallest power of two >= ``count`` (1 for 0), at most ``batch``."""
    return min(1 << max(count - 1, 0).bit_length(), batch)


def _select(present: torch.Tensor, count: int, *, bucketed: bool) -> _Rows | None:
    """The rows to encode for ``present`` [B] with ``count`` present rows; None: all of them.

    Exact (eager): the ``count`` present rows (one absent row if none is present: open_clip's
    patch embedding cannot reshape an empty batch, and every adapter stays in the graph).
    ``bucketed`` (compiled towers): padded with absent rows to a power of two, so that a
    compiled tower sees at most log2(B) + 2 batch sizes however the masks vary.
    """
    batch = present.shape[0]
    size = _bucket(count, batch) if bucketed else max(count, 1)
    if count == batch or size == batch:
        return None  # every row: no gather (the absent ones are zeroed after the tower)
    order = torch.argsort((~present).to(torch.uint8), stable=True)  # shape = [B], present first
    return _Rows(encode=order[:size], keep=order[:count])  # shapes = [size], [count]


def _scatter_rows(rows: _Rows | None, values: torch.Tensor, batch: int) -> torch.Tensor:
    """Place ``values`` [n, D] at ``rows.keep`` of a [batch, D] zero tensor (as is if None)."""
    if rows is None:
        return values
    out = values.new_zeros(batch, values.shape[-1])
    return out.index_copy(0, rows.keep, values)


def _run_tower(
    tower: Any, inputs: torch.Tensor, rows: _Rows | None, proxy: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode the ``rows`` of ``inputs`` (all of them if None); outputs [n kept rows, D].

    The tower runs on ``rows.encode``, which is never empty, so every adapter takes part in
    the graph (with zero gradient when no row is kept); the outputs of the padding rows are
    dropped.
    """
    if rows is None:
        return tower(inputs, proxy)
    real, proxy_out = tower(inputs.index_select(0, rows.encode), proxy)
    count = rows.keep.shape[0]
    if real.shape[0] == count:
        return real, proxy_out
    return real[:count], None if proxy_out is None else proxy_out[:count]  # shape = [n, D]


def _keep_rows(values: torch.Tensor, keep: torch.Tensor, rows: _Rows | None) -> torch.Tensor:
    """Zero the rows not in ``keep`` when the whole batch was encoded (``rows`` is None)."""
    if rows is not None:  # only the kept rows were encoded; the others are zeros already
        return values
    return torch.where(keep[:, None], values, torch.zeros_like(values))
