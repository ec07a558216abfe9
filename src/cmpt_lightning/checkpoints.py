"""Checkpoints that are always there: :class:`CMPTCheckpoint`.

Lightning's ``ModelCheckpoint`` with the package's defaults that also writes ``last.ckpt`` at
the end of every training epoch, not only when the monitored metric improves. The files
themselves are written whole or not at all by :mod:`cmpt_lightning.checkpoint_io`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from .checkpoint_io import CheckpointIOError

__all__ = ["CMPTCheckpoint"]


class CMPTCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with the package's defaults, and ``last.ckpt`` after every epoch.

    The top-k ("best") selection is Lightning's. ``last.ckpt`` is written at the end of every
    training epoch (after that epoch's validation, when it has one), whether or not the
    monitored metric improved, and when training is interrupted by an exception or Ctrl+C if
    the state is consistent: a single process (in DDP the other ranks may be elsewhere and the
    save's collectives would hang), no training batch in flight (an interruption while fetching a
    batch, during validation, or in an epoch hook), no gradients half accumulated, every
    parameter finite, and something trained since ``last.ckpt`` was last written. An
    interruption in the middle of a training batch, or a failed checkpoint save
    (:class:`CheckpointIOError`), leaves the previous ``last.ckpt`` as it was. An error while
    saving on an exception is logged as a warning, so that the original exception is what is
    raised. Resuming from a checkpoint written during validation runs that validation again;
    from one written between batches, the epoch goes on from the next batch (where the data
    loader can resume; Lightning warns where it cannot). With ``save_on_exception=True``,
    Lightning's own behaviour on exceptions applies instead.

    The state (best score, best path, top-k) is Lightning's and survives a ``ckpt_path`` resume;
    checkpoints written by a plain ``ModelCheckpoint`` with the same monitor, mode and
    frequency are read as well.

    Args:
        dirpath: the folder of the checkpoints (default: ``checkpoints`` in the log folder or
            ``default_root_dir``).
        filename: the name of the top-k checkpoints.
        monitor: the metric that ranks them.
        mode: ``"max"`` or ``"min"``: which values of ``monitor`` are better.
        save_last: write ``last.ckpt`` (``"link"`` is refused: it would point at an old epoch).
        auto_insert_metric_name: insert ``name=`` before each metric of ``filename``.
        save_top_k: how many of the best checkpoints to keep (-1: all).
        **kwargs: further arguments of ``ModelCheckpoint`` (``every_n_epochs``, ``verbose``...).

    Raises:
        ValueError: if ``save_last`` is ``"link"``.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = "best-{epoch:02d}",
        monitor: str | None = "val/score",
        mode: str = "max",
        save_last: bool = True,
        auto_insert_metric_name: bool = False,
        save_top_k: int = 1,
        **kwargs: Any,
    ) -> None:
        if save_last not in (True, False):
            msg = (
                f"CMPTCheckpoint(save_last=...) must be True or False, got {save_last!r}: "
                "'link' would point last.ckpt at the last improvement, not the last epoch"
            )
            raise ValueError(msg)
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_last=save_last,
            auto_insert_metric_name=auto_insert_metric_name,
            save_top_k=save_top_k,
            **kwargs,
        )
        self._last_written: tuple[int, int, int] | None = None

    @staticmethod
    def _position(trainer: Trainer) -> tuple[int, int, int]:
        """Epoch, optimizer steps and completed batches of the epoch: where training stands."""
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return trainer.current_epoch, trainer.global_step, batches

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written = self._position(trainer)

    def _may_write_last(self, trainer: Trainer) -> bool:
        return (
            bool(self.save_last)
            and not getattr(trainer, "fast_dev_run", False)
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
        )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Lightning's top-k (and last) saving, then ``last.ckpt`` unless just written."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._may_write_last(trainer) and self._last_written != self._position(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _consistent(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        """Whether the interrupted state is worth a ``last.ckpt`` (see the class docstring)."""
        batches = trainer.fit_loop.epoch_loop.batch_progress.current
        accumulate = trainer.accumulate_grad_batches
        return (
            self._may_write_last(trainer)
            and trainer.world_size == 1  # other ranks may be elsewhere: a save's barrier would hang
            and batches.ready == batches.completed
            and (accumulate <= 1 or batches.completed % accumulate == 0)
            and (self._last_written is None or self._last_written[1] != trainer.global_step)
            and trainer.global_step > 0
            and all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())
        )

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Write ``last.ckpt`` when training stops on an exception in a consistent state."""
        if self.save_on_exception:
            super().on_exception(trainer, pl_module, exception)
            return
        if isinstance(exception, CheckpointIOError) or not self._consistent(trainer, pl_module):
            return
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        except Exception as err:  # the original exception is the one to raise
            rank_zero_warn(f"last.ckpt was not saved after {type(exception).__name__}: {err}")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best score, path and top-k, also when resuming into a new folder.

        A resume with the CLI writes into a new logger version (``version_1/checkpoints``);
        Lightning would then forget the best score, and the first epoch after the resume would
        become "best" even if worse. The previous run's files stay where they are: they are
        compared with, never removed (see :meth:`_remove_checkpoint`).
        """
        if self.dirpath is not None and state_dict.get("dirpath") not in (None, self.dirpath):
            state_dict = {**state_dict, "dirpath": self.dirpath}
        super().load_state_dict(state_dict)

    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        """Remove an old checkpoint of this run; a previous run's (another folder) is kept."""
        if self.dirpath is not None and Path(filepath).parent != Path(self.dirpath):
            return
        super()._remove_checkpoint(trainer, filepath)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Use the state of a plain ``ModelCheckpoint`` with the same settings if ours is absent."""
        states = checkpoint.get("callbacks") or {}
        legacy = ModelCheckpoint.__qualname__ + self.state_key[len(type(self).__qualname__) :]
        if self.state_key not in states and legacy in states:
            states[self.state_key] = states[legacy]
