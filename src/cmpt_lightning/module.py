"""The LightningModule: :class:`CMPTModule` wraps :class:`~cmpt_lightning.models.CMPTModel`."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from .datamodules.base import CMPTDataModule
from .datamodules.loaders import ResumableDataLoader
from .losses import AlignLoss, CMPTLoss
from .metrics import EvalCollector, availability_case, compute_metrics, train_metric
from .missing import SweepConfig
from .models.cmpt import CMPTModel, CMPTOutput
from .models.head import Fusion, Method
from .models.lora import LoRATargets
from .sweep.onepass import CASE_ORDER, evaluate_cells, select_case_logits, write_sweep
from .tasks import Task

__all__ = ["CMPTModule", "WarmupCosine"]


class WarmupCosine:
    """Linear warm-up over ``warmup_steps`` then cosine decay to zero at ``total_steps``."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)

    def __call__(self, step: int) -> float:
        """The learning-rate factor at ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class CMPTModule(LightningModule):
    """Train and evaluate CMPT with Lightning.

    Loss: task loss + ``align_weight`` x alignment of each proxy with the real embedding it
    stands for, on complete samples. Metrics are logged as ``{stage}/{metric}`` over all samples
    and ``{stage}/{metric}_{case}`` for each availability case (``complete``, ``image_only``,
    ``text_only``), plus ``{stage}/score``, the task's main metric under one name for
    checkpoint selection; evaluation metrics are exact (per-sample results gathered over processes).
    Checkpoints hold the trainable weights only; the frozen towers are rebuilt from ``clip``,
    ``pretrained`` and ``init_seed``.

    Args:
        num_classes: number of classes (linked from the data module by the CLI).
        task: ``multiclass``, ``multilabel`` or ``binary`` (linked from the data module).
        clip: open_clip architecture, e.g. ``ViT-B-16``; ``cmpt-tiny`` is the package's tiny
            test model.
        pretrained: open_clip pretrained tag (``openai``), a local weights file, or null for
            random weights.
        quick_gelu: force QuickGELU on or off; null decides from the weights (OpenAI: on).
        init_seed: seed of all random initialisation (towers without weights, adapters, head).
        lora_rank: LoRA rank r (0: no adapters).
        lora_alpha: LoRA scaling numerator; the update is ``(alpha / r) B A``.
        lora_dropout: dropout on the adapters' input.
        lora_targets: ``qv``, ``qkv`` or ``all`` (adds attention output and MLP linears).
        fusion: ``gated``, ``concat`` or ``sum``.
        method: ``cmpt`` (the method), or a baseline in the same harness: ``zero_fill`` (an
            absent modality's embedding is zeros), ``learned_token`` (one learned vector per
            modality), ``modality_dropout`` (zeros, trained with modality dropout). The
            ablation without alignment is ``cmpt`` with ``align_weight: 0``.
        modality_dropout: probability that a complete training sample loses one modality (image
            or text, equally likely) in a training step; null: 0.3 for ``modality_dropout``,
            0 otherwise.
        align_weight: lambda, weight of the alignment loss (baselines have no proxies to align:
            it is not used there).
        align_loss: ``mse`` or ``cosine``.
        align_detach: stop the gradient through the real embeddings in the alignment loss.
        label_smoothing: label smoothing of the multiclass cross-entropy.
        skip_absent: in training, run each tower only on samples that have its input.
        grad_checkpointing: recompute tower activations in the backward pass (less memory).
        compile_towers: run the towers through ``torch.compile`` (measured in BENCHMARKS.md).
        optimizer: optimizer factory, called with the trainable parameters.
        lr_scheduler: scheduler factory, called with the optimizer and stepped every step; null
            for linear warm-up over ``warmup_ratio`` of the steps then cosine decay.
        warmup_ratio: fraction of the training steps used for warm-up by the default schedule.
        head_lr_scale: the learning rate of the head (proxy tokens, their output maps, fusion,
            classifier) as a multiple of the optimizer's; > 1 helps the identity-initialised
            output maps catch up with the alignment target (see docs/results/README.md).
        sweep: at test time, also evaluate every (missing rate, missing type) cell of this grid
            from the same single pass, and write ``sweep.csv``, ``sweep.json`` and ``sweep.png``
            to the run directory; each cell equals a test run configured with that cell.
    """

    def __init__(
        self,
        num_classes: int = 2,
        task: Task | str = "multiclass",
        clip: str = "cmpt-tiny",
        pretrained: str | None = None,
        quick_gelu: bool | None = None,
        init_seed: int = 0,
        lora_rank: int = 1,
        lora_alpha: float = 1.0,
        lora_dropout: float = 0.0,
        lora_targets: LoRATargets | str = "qv",
        fusion: Fusion | str = "gated",
        method: Method | str = "cmpt",
        modality_dropout: float | None = None,
        align_weight: float = 0.2,
        align_loss: AlignLoss | str = "mse",
        align_detach: bool = True,
        label_smoothing: float = 0.0,
        skip_absent: bool = True,
        grad_checkpointing: bool = False,
        compile_towers: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        warmup_ratio: float = 0.05,
        head_lr_scale: float = 1.0,
        sweep: SweepConfig | None = None,
    ) -> None:
        super().__init__()
        # plain strings in the hparams, so checkpoints load with torch.load(weights_only=True)
        task, lora_targets = Task(task).value, LoRATargets(lora_targets).value
        fusion, align_loss = Fusion(fusion).value, AlignLoss(align_loss).value
        method = Method(method).value
        if modality_dropout is None:
            modality_dropout = 0.3 if method == Method.MODALITY_DROPOUT.value else 0.0
        if not 0.0 <= modality_dropout <= 1.0:
            msg = f"modality_dropout must be in [0, 1], got {modality_dropout!r}"
            raise ValueError(msg)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "sweep"])
        self.task = Task(task)
        self.num_classes = num_classes
        self.model = CMPTModel(
            clip,
            self.task.num_outputs(num_classes),
            pretrained=pretrained,
            quick_gelu=quick_gelu,
            init_seed=init_seed,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=lora_targets,
            fusion=fusion,
            method=method,
            skip_absent=skip_absent,
            grad_checkpointing=grad_checkpointing,
            compile_towers=compile_towers,
        )
        self.method = Method(method)
        self.modality_dropout = modality_dropout
        self.loss = CMPTLoss(
            self.task,
            align_weight=align_weight if self.method.uses_proxies else 0.0,
            align_loss=align_loss,
            detach_target=align_detach,
            label_smoothing=label_smoothing,
        )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        if not 0.0 <= warmup_ratio < 1.0:
            msg = f"warmup_ratio must be in [0, 1), got {warmup_ratio!r}"
            raise ValueError(msg)
        self.warmup_ratio = warmup_ratio
        if head_lr_scale <= 0:
            msg = f"head_lr_scale must be > 0, got {head_lr_scale!r}"
            raise ValueError(msg)
        self.head_lr_scale = head_lr_scale
        self.train_metric = train_metric(self.task, num_classes)
        self.collectors = {"val": EvalCollector(), "test": EvalCollector()}
        self.sweep = sweep
        self.sweep_results: list[dict[str, Any]] = []

    @property
    def monitor(self) -> str:
        """The validation metric used for model selection: ``val/score``.

        It is the task's main metric (accuracy, F1-macro or AUROC), also logged under its name.
        """
        return "val/score"

    def forward(self, batch: dict[str, Any]) -> CMPTOutput:
        """Run the model on a collated batch."""
        return self.model(
            batch["image"], batch["text"], batch["image_present"], batch["text_present"]
        )

    def on_train_start(self) -> None:
        """Restart the training iterator when resuming a partly processed epoch.

        ``configure_optimizers`` asks for ``estimated_stepping_batches``, which makes Lightning
        create the training iterator before the checkpoint's loop progress is restored; with
        DataLoader workers that iterator has already drawn indices for the wrong position. A
        :class:`~cmpt_lightning.datamodules.loaders.ResumableDataLoader` reads the restored
        epoch and position when it is iterated again, here.
        """
        loop = self.trainer.fit_loop
        fetcher = getattr(loop, "_data_fetcher", None)
        loader = getattr(loop, "_combined_loader", None)
        if not loop.restarting or fetcher is None or loader is None:
            return
        if any(isinstance(dl, ResumableDataLoader) for dl in loader.flattened):
            iter(fetcher)

    def drop_modalities(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Training-time modality dropout, applied to a batch's availability masks.

        Each complete sample loses one modality with probability :attr:`modality_dropout`
        (the image or the text, equally likely).
        """
        if self.modality_dropout <= 0:
            return batch
        image, text = batch["image_present"], batch["text_present"]
        draw = torch.rand(image.shape[0], 2, device=image.device)
        drop = (draw[:, 0] < self.modality_dropout) & image & text
        lose_image = draw[:, 1] < 0.5
        return {
            **batch,
            "image_present": image & ~(drop & lose_image),
            "text_present": text & ~(drop & ~lose_image),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; logs its parts and the running training metric."""
        batch = self.drop_modalities(batch)
        output = self(batch)
        parts = self.loss(output, batch["label"])
        size = batch["label"].shape[0]
        self.log("train/loss", parts.total, prog_bar=True, batch_size=size)
        self.log("train/task_loss", parts.task, batch_size=size)
        self.log("train/align_loss", parts.align, batch_size=size)
        self.train_metric(self._metric_input(output.logits), batch["label"].long())
        name = "f1_macro" if self.task is Task.MULTILABEL else "acc"
        self.log(f"train/{name}", self.train_metric, on_step=False, on_epoch=True, batch_size=size)
        return parts.total

    def _metric_input(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.detach().float()
        return logits.squeeze(-1) if self.task is Task.BINARY else logits

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        sweeping = stage == "test" and self.sweep is not None
        extra: dict[str, torch.Tensor] = {}
        if sweeping:
            output, extra = self._sweep_forward(batch)
        else:
            output = self(batch)
        parts = self.loss(output, batch["label"])
        size = batch["label"].shape[0]
        self.log(f"{stage}/loss", parts.total, batch_size=size, sync_dist=True)
        self.collectors[stage].update(
            index=batch["index"],
            logits=output.logits.float(),
            label=batch["label"],
            image_present=batch["image_present"],
            text_present=batch["text_present"],
            **extra,
        )

    def _sweep_forward(self, batch: dict[str, Any]) -> tuple[CMPTOutput, dict[str, torch.Tensor]]:
        """Encode with every available modality; the configured cell's logits are a selection."""
        image_available = batch.get("image_available", batch["image_present"])
        text_available = batch.get("text_available", batch["text_present"])
        features = self.model.encode(batch["image"], batch["text"], image_available, text_available)
        cases = self.model.case_logits(features)
        case_logits = torch.stack([cases[c] for c in CASE_ORDER], dim=1)  # shape = [B, 3, C]
        logits = select_case_logits(case_logits, batch["image_present"], batch["text_present"])
        seen = replace(
            features, image_present=batch["image_present"], text_present=batch["text_present"]
        )
        extra = {
            "case_logits": case_logits.float(),
            "image_available": image_available,
            "text_available": text_available,
        }
        return CMPTOutput(logits=logits, features=seen), extra

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Evaluate a validation batch (metrics are computed at the epoch's end)."""
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Evaluate a test batch (metrics are computed at the epoch's end)."""
        self._eval_step("test", batch)

    def evaluation_metrics(self, stage: str) -> dict[str, float]:
        """Exact metrics of the epoch's collected samples, overall and per availability case.

        With a :attr:`sweep` at test time, also evaluates and writes the sweep's cells.
        """
        data = self.collectors[stage].compute(self.all_gather, self.trainer.world_size)
        self.collectors[stage].reset()
        if not data:
            return {}
        if stage == "test" and self.sweep is not None:
            self._run_sweep(data)
        overall = compute_metrics(self.task, data["logits"], data["label"], self.num_classes)
        metrics = {f"{stage}/{k}": v for k, v in overall.items()}
        metrics[f"{stage}/score"] = overall[self.task.main_metric]  # task-agnostic monitor
        for case, rows in availability_case(data["image_present"], data["text_present"]).items():
            if bool(rows.any()):
                values = compute_metrics(
                    self.task, data["logits"][rows], data["label"][rows], self.num_classes
                )
                metrics.update({f"{stage}/{k}_{case.value}": v for k, v in values.items()})
            metrics[f"{stage}/count_{case.value}"] = float(rows.sum())
        return metrics

    def _run_sweep(self, data: dict[str, torch.Tensor]) -> None:
        assert self.sweep is not None  # checked by the caller
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, CMPTDataModule):
            msg = (
                "the one-pass sweep needs a cmpt_lightning data module (it ranks the test split's "
                f"sample ids with the protocol), got {type(datamodule).__name__}"
            )
            raise TypeError(msg)
        seed = datamodule.eval_missing.seed if self.sweep.seed is None else self.sweep.seed
        both_ratio = self.sweep.both_ratio
        if both_ratio is None:
            both_ratio = datamodule.eval_missing.both_ratio
        self.sweep_results = evaluate_cells(
            self.task,
            self.num_classes,
            data["case_logits"],
            data["label"],
            data["index"],
            data["image_available"].bool(),
            data["text_available"].bool(),
            datamodule.plan("test", seed),
            self.sweep.rates,
            self.sweep.types,
            both_ratio,
        )
        directory = self.trainer.log_dir or self.trainer.default_root_dir  # a collective: all ranks
        if self.trainer.is_global_zero:
            settings = {"seed": seed, "both_ratio": both_ratio, "samples": len(data["index"])}
            paths = write_sweep(
                self.sweep_results, directory, main_metric=self.task.main_metric, settings=settings
            )
            rank_zero_info(f"sweep written to {', '.join(str(p) for p in paths.values())}")

    def _log_eval(self, stage: str) -> None:
        metrics = self.evaluation_metrics(stage)
        if metrics:
            # every rank holds the same gathered values; sync_dist only silences the warning
            self.log_dict(metrics, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Log exact validation metrics."""
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        """Log exact test metrics."""
        self._log_eval("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Per-sample predictions: ids, logits, probabilities and the modalities used."""
        output = self(batch)
        logits = output.logits.float()
        if self.task is Task.MULTICLASS:
            probs = logits.softmax(-1)
        else:
            probs = torch.sigmoid(logits)
        return {
            "id": batch["id"],
            "index": batch["index"],
            "logits": logits,
            "probs": probs,
            "image_present": batch["image_present"],
            "text_present": batch["text_present"],
        }

    def configure_optimizers(self) -> Any:
        """The optimizer over trainable parameters and a per-step learning-rate schedule."""
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        ids = {id(p) for p in head}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        if self.head_lr_scale == 1.0:
            optimizer = self.optimizer_factory(rest + head)
        else:
            optimizer = self.optimizer_factory([{"params": rest}, {"params": head}])
            # the head's group: the same optimizer settings, its learning rate scaled
            optimizer.param_groups[1]["lr"] = optimizer.defaults["lr"] * self.head_lr_scale
        if self.lr_scheduler_factory is not None:
            scheduler = self.lr_scheduler_factory(optimizer)
        else:
            total = int(self.trainer.estimated_stepping_batches)
            warmup = int(self.warmup_ratio * total)
            scheduler = LambdaLR(optimizer, WarmupCosine(warmup, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # --- checkpoints: trainable weights only ---------------------------------------------------
    def _trainable_keys(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trainable weights; the frozen towers are rebuilt from the hparams."""
        keys = self._trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keys}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Complete a trainable-only checkpoint with this model's frozen weights.

        The checkpoint then loads strictly. One that lacks any trainable weight is refused.
        """
        state = checkpoint.get("state_dict", {})
        missing = sorted(self._trainable_keys() - set(state))
        if missing:
            msg = (
                f"checkpoint lacks {len(missing)} trainable weights of this model (first: "
                f"{missing[:3]}); was it saved with the same lora_rank, lora_targets and fusion?"
            )
            raise KeyError(msg)
        frozen = {k: v for k, v in self.state_dict().items() if k not in state}
        checkpoint["state_dict"] = {**frozen, **state}
