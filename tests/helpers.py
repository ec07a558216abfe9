"""Callbacks that the subprocess tests load through the CLI (``tests.helpers.<name>``)."""

from __future__ import annotations

import os
import signal
import time

from lightning.pytorch import Callback


class KillAtStep(Callback):
    """SIGKILL the process (or send ``signal_name`` to it) when a given step is about to start."""

    def __init__(self, step: int, signal_name: str = "SIGKILL", wait: float = 0.0) -> None:
        self.step = step
        self.signal_name = signal_name
        self.wait = wait
        self.sent = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal_name))
            time.sleep(self.wait)  # let a handled signal do its work before the next step


class RecordBatches(Callback):
    """Append ``<global_step> <sample indices>`` of every training batch to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step} {batch['index'].tolist()}\n")


def cmpt(args: list[str]) -> int:
    """Run ``cmpt ARGS`` in this process and return its exit status (0 when it returns)."""
    from cmpt_lightning.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


class KillOnce(Callback):
    """SIGKILL the process when ``step`` is about to start, unless ``marker`` exists (it is
    created first, so that a retried run with the same config is not killed again)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write("killed\n")
            os.kill(os.getpid(), signal.SIGKILL)
