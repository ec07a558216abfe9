"""Callbacks the CLI adds to every run: writing predictions to a file."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from .tasks import Task

__all__ = ["PredictionWriter"]


def _rows(batch: dict[str, Any], task: Task, names: list[str]) -> list[dict[str, Any]]:
    """One output row per sample of a ``predict_step`` batch."""
    probs = batch["probs"].float().cpu()
    rows = []
    for i, sample_id in enumerate(batch["id"]):
        p = probs[i]
        row: dict[str, Any] = {"index": int(batch["index"][i]), "id": sample_id}
        if task is Task.MULTICLASS:
            k = int(p.argmax())
            row["prediction"], row["score"] = names[k], round(float(p[k]), 6)
        elif task is Task.MULTILABEL:
            row["prediction"] = "|".join(
                n for n, q in zip(names, p.tolist(), strict=True) if q > 0.5
            )
            row["score"] = round(float(p.max()), 6)
        else:
            positive = float(p.reshape(-1)[0])
            row["prediction"] = names[-1] if positive > 0.5 else names[0]
            row["score"] = round(positive, 6)
        if task is not Task.BINARY:
            row.update(
                {f"p_{n}": round(float(q), 6) for n, q in zip(names, p.tolist(), strict=True)}
            )
        row["image_present"] = bool(batch["image_present"][i])
        row["text_present"] = bool(batch["text_present"][i])
        row["note"] = ""
        rows.append(row)
    return rows


class PredictionWriter(BasePredictionWriter):
    """Write ``predictions.csv`` to the run directory when ``cmpt predict`` ends.

    One row per sample: ``id``, ``prediction`` (class name; ``a|b`` for multilabel),
    ``score`` (its probability; the positive class's for binary), ``p_<class>`` per class,
    which modalities were present, and a ``note``. Samples the data module left out because
    they have neither an image nor a text are listed with an empty prediction and a note,
    never guessed. Under DDP the ranks' rows are gathered and de-duplicated by sample.

    Args:
        filename: the file's name, in the run directory (the logger's, else
            ``default_root_dir``).
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: Path | None = None

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Gather every rank's predictions and write them on rank zero."""
        task = Task(getattr(pl_module, "task", Task.MULTICLASS))
        datamodule = getattr(trainer, "datamodule", None)
        outputs = predictions
        if outputs and isinstance(outputs[0], list):  # several dataloaders
            outputs = [batch for loader in outputs for batch in loader]
        num = int(outputs[0]["probs"].shape[-1]) if outputs else 0
        names = list(getattr(datamodule, "class_names", []) or [])
        if task is Task.BINARY and len(names) != 2:
            names = ["0", "1"]
        elif task is not Task.BINARY and len(names) != num:
            names = [str(i) for i in range(num)]
        rows = [row for batch in outputs for row in _rows(batch, task, names)]
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        directory = Path(trainer.log_dir or trainer.default_root_dir)  # a collective: all ranks
        if not trainer.is_global_zero:
            return
        unique = {row["index"]: row for row in rows}
        ordered = [unique[k] for k in sorted(unique)]
        skipped = list(getattr(datamodule, "without_inputs", []) or [])
        fields = ["id", "prediction", "score"]
        if ordered:
            fields = [k for k in ordered[0] if k != "index"]
        for sample_id in skipped:
            empty: dict[str, Any] = dict.fromkeys(fields, "")
            empty.update({"id": sample_id, "image_present": False, "text_present": False})
            empty["note"] = "not predicted: the sample has neither an image nor a text"
            ordered.append(empty)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / self.filename
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(ordered)
        rank_zero_info(f"{len(unique)} predictions written to {self.path}")
        if skipped:
            rank_zero_warn(
                f"{len(skipped)} samples have neither an image nor a text and were not "
                f"predicted; they are listed in {self.path} with a note"
            )
