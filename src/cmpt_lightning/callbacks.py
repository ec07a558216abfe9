"""Callbacks the CLI adds to every run: writing predictions to a file, the model summary."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, RichModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

from .tasks import Task

__all__ = ["CMPTModelSummary", "PredictionWriter", "without_zero_flops"]


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
        # the rows without inputs were reported (by id) when the data was set up: counted here
        listed = f", and {len(skipped)} row(s) without inputs listed with a note" if skipped else ""
        rank_zero_info(f"{len(unique)} predictions written to {self.path}{listed}")


class CMPTModelSummary(RichModelSummary):
    """Lightning's rich model summary, without the FLOPs it did not count.

    Lightning 2.6 counts FLOPs only for a module with an ``example_input_array``; without one
    its summary has a column of zeros and ``Total FLOPs: 0``. This one leaves both out then,
    and is Lightning's own otherwise. The CLI puts it in place of Lightning's default summary
    (:func:`without_zero_flops`).
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        """Print the summary table and totals (FLOPs only when some were counted)."""
        if total_flops:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            sizes = name in ("In sizes", "Out sizes")
            table.add_column(
                name,
                justify="right" if sizes or name.startswith("Params") else "left",
                style="dim" if name == " " else "white" if sizes else None,
                no_wrap=name == "Name",
            )
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        totals = Table.grid(expand=True)
        totals.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(frozen))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console.print(totals)


def without_zero_flops(trainer: Trainer) -> None:
    """Put :class:`CMPTModelSummary` in place of the trainer's default rich model summary.

    Only Lightning's own ``RichModelSummary`` (the one ``enable_model_summary`` adds) is
    replaced, by one with the same depth and options; any other summary class is left alone.
    """
    callbacks: list[Any] = getattr(trainer, "callbacks", [])  # set by Lightning's connector
    for i, callback in enumerate(callbacks):
        if type(callback) is RichModelSummary:
            depth, options = callback._max_depth, callback._summarize_kwargs
            callbacks[i] = CMPTModelSummary(max_depth=depth, **options)
