"""The LightningModule: :class:`CMPTModule` wraps :class:`~cmpt_lightning.models.CMPTModel`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_deprecation, rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from .checkpoint_state import (
    complete_state_dict,
    init_seeds,
    missing_message,
    missing_trainable,
    model_settings,
    moved_weights_error,
)
from .corruption_pass import with_corruptions
from .diagnostics import proxy_batch, proxy_hits
from .evaluation import TestGrid, one_pass, stage_metrics, write_sweep
from .losses import AlignLoss, CMPTLoss, LossParts
from .metrics import EvalCollector, train_metric
from .models.clip import WeightsFileNotFoundError
from .models.cmpt import CMPTModel, CMPTOutput
from .models.head import Fusion, Method
from .models.lora import LoRATargets
from .models.precision import cast_frozen
from .notices import (
    drop_lightning_tips,
    hide_leafspec_warning,
    quiet_stepping_estimate,
    show_leafspec_warning,
)
from .schedules import WarmupCosine
from .tasks import Task
from .thresholds import (
    THRESHOLDS_KEY,
    ThresholdMode,
    check_threshold_mode,
    checkpoint_thresholds,
    select_thresholds,
)

__all__ = ["CMPTModule"]


class CMPTModule(LightningModule):
    """Train and evaluate CMPT with Lightning.

    Loss: task loss + ``align_weight`` x alignment of each proxy with the real embedding it
    stands for, on complete samples. Metrics are logged as ``{stage}/{metric}`` over all samples
    and ``{stage}/{metric}_{case}`` for each availability case (``complete``, ``image_only``,
    ``text_only``), plus ``{stage}/score``, the task's main metric under one name for
    checkpoint selection; evaluation metrics are exact (per-sample results gathered over processes).
    Checkpoints hold the trainable weights only; the frozen towers are rebuilt from ``clip``,
    ``pretrained`` (stored as given) and ``tower_seed``, and :meth:`load_state_dict` takes such
    a state dict as well as a full one. The trainable parts start from ``init_seed``, which
    is the run seed (``seed_everything``) unless it is given; the seeds used are saved in the
    hyper-parameters (see docs/protocol.md, "Which seed drives what").

    Args:
        num_classes: number of classes (linked from the data module by the CLI).
        task: ``multiclass``, ``multilabel`` or ``binary`` (linked from the data module).
        clip: open_clip architecture, e.g. ``ViT-B-16``; ``cmpt-tiny`` is the package's tiny
            test model.
        lora_targets: ``qv``, ``qkv`` or ``all`` (adds attention output and MLP linears).
        fusion: ``gated``, ``concat`` or ``sum``.
        method: ``cmpt`` (the method), or a baseline in the same harness: ``zero_fill`` (an
            absent modality's embedding is zeros), ``learned_token`` (one learned vector per
            modality), ``modality_dropout`` (zeros, trained with modality dropout),
            ``cross_copy`` (the present modality's own CLIP embedding, after the towers'
            projections, where CLIP aligns the two); or a control: ``align_distill`` (a
            learned map of the present modality's embedding, trained with the alignment loss:
            distillation without a proxy token), ``image_specialist`` or ``text_specialist``
            (one modality alone, never fused). The ablation without alignment is ``cmpt`` with
            ``align_weight: 0``.
        modality_dropout: probability that a complete training sample loses one modality (image
            or text, equally likely) in a training step; null: 0.3 for ``modality_dropout``,
            0 otherwise.
        align_weight: lambda, weight of the alignment loss (used by ``cmpt`` and
            ``align_distill``; the other baselines have no stand-ins to align).
        align_loss: ``mse`` or ``cosine``.
        align_detach: stop the gradient through the real embeddings in the alignment loss.
        label_smoothing: label smoothing of the multiclass cross-entropy.
        optimizer: optimizer factory, called with the trainable parameters.
        lr_scheduler: scheduler factory, called with the optimizer and stepped every step; null
            for linear warm-up over ``warmup_ratio`` of the steps then cosine decay.
        warmup_ratio: fraction of the training steps used for warm-up by the default schedule.
        head_lr_scale: the learning rate of the head (proxy tokens, their output maps, fusion,
            classifier) as a multiple of the optimizer's; > 1 helps the identity-initialised
            output maps catch up with the alignment target (see docs/results/synthetic/README.md).
        test_grid: at test time, also evaluate every (missing rate, missing type) cell of this
            grid from the same single pass, and write ``sweep.csv``, ``sweep.json`` and
            ``sweep.png`` to the run directory; each cell equals a test run configured with that
            cell.
        sweep: deprecated alias of ``test_grid``, removed in 0.3.
        proxy_task_weight: mu, the weight of a task loss on the proxy-substituted logits of
            the complete samples (the text replaced by its proxy in one case, the image by
            its proxy in the other, both from the same encoding), averaged over the two
            cases, logged as ``train/proxy_task_loss`` and included in ``{stage}/loss``; a
            variant beyond the paper, which is mu = 0 (the default: the loss and gradients
            are exactly the paper's). Must be >= 0.
        threshold_mode: the decision thresholds of a ``multilabel`` task: ``fixed`` (0.5 for
            every class, the default), ``global`` (one) or ``per_class``, chosen for the best
            F1 on the validation samples at every validation epoch of a fit and saved with the
            checkpoint (the ``thresholds`` buffer), never chosen on test. Evaluation then adds
            ``{stage}/f1_*_tuned`` beside the F1 at 0.5, which keeps its name (on validation,
            measured on the samples the thresholds were chosen on).
        **kwargs: the other settings of :class:`~cmpt_lightning.models.CMPTModel`, passed
            through: ``pretrained``, ``quick_gelu``, ``init_seed`` (None: the run seed),
            ``tower_seed``, ``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``skip_absent``,
            ``skip_absent_eval``, ``grad_checkpointing``, ``compile_towers``; all are saved in
            the hyper-parameters, defaults included (the seeds as resolved).
    """

    def __init__(
        self,
        num_classes: int = 2,
        task: Task | str = "multiclass",
        clip: str = "cmpt-tiny",
        lora_targets: LoRATargets | str = "qv",
        fusion: Fusion | str = "gated",
        method: Method | str = "cmpt",
        modality_dropout: float | None = None,
        align_weight: float = 0.2,
        align_loss: AlignLoss | str = "mse",
        align_detach: bool = True,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        warmup_ratio: float = 0.05,
        head_lr_scale: float = 1.0,
        test_grid: TestGrid | None = None,
        sweep: TestGrid | None = None,
        proxy_task_weight: float = 0.0,
        threshold_mode: ThresholdMode | str = "fixed",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        drop_lightning_tips()  # Lightning's adverts, logged by the Trainer (see notices.py)
        # plain strings in the hparams, so checkpoints load with torch.load(weights_only=True)
        task, lora_targets = Task(task).value, LoRATargets(lora_targets).value
        fusion, align_loss = Fusion(fusion).value, AlignLoss(align_loss).value
        method = Method(method).value
        threshold_mode = check_threshold_mode(threshold_mode, task).value
        # every setting in the hparams, defaults included, and the seeds actually used
        kwargs = model_settings(init_seeds(kwargs))
        if modality_dropout is None:
            modality_dropout = 0.3 if method == Method.MODALITY_DROPOUT.value else 0.0
        if not 0.0 <= modality_dropout <= 1.0:
            msg = f"modality_dropout must be in [0, 1], got {modality_dropout!r}"
            raise ValueError(msg)
        if sweep is not None:
            if test_grid is not None:
                msg = (
                    "both model.init_args.test_grid and its deprecated alias "
                    "model.init_args.sweep are given; keep only test_grid"
                )
                raise ValueError(msg)
            rank_zero_deprecation(
                "model.init_args.sweep is deprecated, use model.init_args.test_grid "
                "(sweep is removed in 0.3)"
            )
            test_grid = sweep
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "test_grid", "sweep"])
        self.task = Task(task)
        self.num_classes = num_classes
        try:
            self.model = CMPTModel(
                clip,
                self.task.num_outputs(num_classes),
                lora_targets=lora_targets,
                fusion=fusion,
                method=method,
                **kwargs,
            )
        except WeightsFileNotFoundError as error:  # e.g. a checkpoint's weights file, moved
            raise moved_weights_error(error) from error
        self.method = Method(method)
        self.modality_dropout = modality_dropout
        self.loss = CMPTLoss(
            self.task,
            align_weight=align_weight if self.method.aligns else 0.0,
            align_loss=align_loss,
            detach_target=align_detach,
            label_smoothing=label_smoothing,
            proxy_task_weight=proxy_task_weight,
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
        self.test_grid = test_grid
        self.test_grid_results: list[dict[str, Any]] = []
        self.threshold_mode = ThresholdMode(threshold_mode)
        if self.threshold_mode is not ThresholdMode.FIXED:  # tuned on validation, checkpointed
            self.register_buffer(THRESHOLDS_KEY, torch.full((num_classes,), 0.5))
        self.galleries = {"val": EvalCollector(), "test": EvalCollector()}  # proxy retrieval

    @property
    def sweep_results(self) -> list[dict[str, Any]]:
        """Deprecated alias of :attr:`test_grid_results` (the cells of the last test grid)."""
        return self.test_grid_results

    @property
    def sweep(self) -> TestGrid | None:
        """Deprecated alias of :attr:`test_grid`."""
        return self.test_grid

    @sweep.setter
    def sweep(self, grid: TestGrid | None) -> None:
        rank_zero_deprecation("CMPTModule.sweep is deprecated, use CMPTModule.test_grid")
        self.test_grid = grid

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

    def setup(self, stage: str) -> None:
        """Store the frozen tower weights in bf16 when the trainer's precision is bf16.

        Under ``bf16-mixed`` autocast would otherwise cast them from fp32 in every step; the
        trainable weights stay fp32 (see :func:`~cmpt_lightning.models.precision.cast_frozen`).
        Any other precision stores them in fp32 again, and so does :meth:`teardown` at the end
        of every trainer call.
        """
        bf16 = str(self.trainer.precision).startswith("bf16")
        cast_frozen(self.model.clip, torch.bfloat16 if bf16 else torch.float32)
        hide_leafspec_warning()  # raised by Lightning's own loader code, until teardown

    def teardown(self, stage: str) -> None:
        """Store the frozen weights in fp32 again and show torch's ``LeafSpec`` warning again.

        After a bf16 run the module can then be called outside autocast (its frozen weights
        hold the bf16-rounded values the run used; rebuild the model for the exact fp32 ones).
        """
        cast_frozen(self.model.clip, torch.float32)
        show_leafspec_warning()

    def on_train_start(self) -> None:
        """Restart the training iterator when resuming a partly processed epoch.

        ``configure_optimizers`` asks for ``estimated_stepping_batches``, which makes Lightning
        create the training iterator before the checkpoint's loop progress is restored; with
        DataLoader workers that iterator has already drawn indices for the wrong position. A
        :class:`~cmpt_lightning.datamodules.loaders.ResumableDataLoader` reads the restored
        epoch and position when it is iterated again, here (any loader with a
        ``resume_offset`` is taken for one).
        """
        loop = self.trainer.fit_loop
        fetcher = getattr(loop, "_data_fetcher", None)
        loader = getattr(loop, "_combined_loader", None)
        if not loop.restarting or fetcher is None or loader is None:
            return
        if any(getattr(dl, "resume_offset", None) is not None for dl in loader.flattened):
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
        parts = self._loss(output, batch["label"])
        size = batch["label"].shape[0]
        self.log("train/loss", parts.total, prog_bar=True, batch_size=size)
        self.log("train/task_loss", parts.task, batch_size=size)
        self.log("train/align_loss", parts.align, batch_size=size)
        if self.loss.proxy_task_weight > 0:
            self.log("train/proxy_task_loss", parts.proxy_task, batch_size=size)
        self.train_metric(self._metric_input(output.logits), batch["label"].long())
        name = "f1_macro" if self.task is Task.MULTILABEL else "acc"
        self.log(f"train/{name}", self.train_metric, on_step=False, on_epoch=True, batch_size=size)
        return parts.total

    def _loss(self, output: CMPTOutput, target: torch.Tensor) -> LossParts:
        """The loss, with the case logits of the same encoding when the proxy task needs them."""
        cases = None
        if self.loss.proxy_task_weight > 0:  # the one-pass case logits: no second tower pass
            cases = self.model.case_logits(output.features)
        return self.loss(output, target, cases)

    def _metric_input(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.detach().float()
        return logits.squeeze(-1) if self.task is Task.BINARY else logits

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        extra: dict[str, torch.Tensor] = {}
        if stage == "test" and self.test_grid is not None:
            output, extra = one_pass(self.model, batch)  # every case, from one encoding
        else:
            output = self(batch)
        parts = self._loss(output, batch["label"])
        size = batch["label"].shape[0]
        self.log(f"{stage}/loss", parts.total, batch_size=size, sync_dist=True)
        self.collectors[stage].update(
            index=batch["index"],
            logits=output.logits.float(),
            label=batch["label"],
            image_present=batch["image_present"],
            text_present=batch["text_present"],
            **extra,
            **self._proxy_step(stage, batch, output, extra),
        )

    def _proxy_step(
        self, stage: str, batch: dict[str, Any], output: CMPTOutput, extra: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Per-sample proxy diagnostics (cmpt, align_distill); gathers the gallery's rows."""
        if not self.method.aligns:
            return {}
        per_sample, gallery = proxy_batch(
            output.features,
            batch["index"],
            extra.get("image_available", batch["image_present"]),  # what was encoded
            extra.get("text_available", batch["text_present"]),
        )
        self.galleries[stage].update(**gallery)
        return per_sample

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Evaluate a validation batch (metrics are computed at the epoch's end)."""
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Evaluate a test batch (metrics are computed at the epoch's end)."""
        self._eval_step("test", batch)

    def evaluation_metrics(self, stage: str) -> dict[str, float]:
        """Exact metrics of the epoch's collected samples, overall and per availability case.

        With a :attr:`test_grid` at test time, also evaluates and writes the grid's cells.
        """
        data = self.collectors[stage].compute(self.all_gather, self.trainer.world_size)
        gallery = self.galleries[stage].compute(self.all_gather, self.trainer.world_size)
        self.collectors[stage].reset()
        self.galleries[stage].reset()
        if not data:
            return {}
        if gallery:
            data.update(proxy_hits(data["index"], gallery))
        thresholds = self._thresholds(stage, data)
        if stage == "test" and self.test_grid is not None:
            self._run_test_grid(self.test_grid, data, thresholds)
        return stage_metrics(
            stage, data, task=self.task, num_classes=self.num_classes, thresholds=thresholds
        )

    def _thresholds(self, stage: str, data: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The tuned thresholds to apply (None if fixed), chosen here at a fit's validation."""
        if self.threshold_mode is ThresholdMode.FIXED:
            return None
        buffer = self.get_buffer(THRESHOLDS_KEY)
        fitting = self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking
        if stage == "val" and fitting:
            buffer.copy_(select_thresholds(data["logits"], data["label"], self.threshold_mode))
        return buffer.detach().cpu()

    def _run_test_grid(
        self, grid: TestGrid, data: dict[str, torch.Tensor], thresholds: torch.Tensor | None
    ) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        cells, settings = grid.evaluate(
            data, dm, task=self.task, num_classes=self.num_classes, thresholds=thresholds
        )
        cells = with_corruptions(self, grid, data, cells, settings, thresholds)  # more passes
        self.test_grid_results = cells
        directory = self.trainer.log_dir or self.trainer.default_root_dir  # a collective: all ranks
        if self.trainer.is_global_zero:
            metric = self.task.main_metric
            paths = write_sweep(cells, directory, main_metric=metric, settings=settings)
            rank_zero_info(f"test grid written to {', '.join(str(p) for p in paths.values())}")

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
            with quiet_stepping_estimate():  # Lightning's note that it loads the data for this
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
        """Keep only the trainable weights (and tuned thresholds); the frozen towers are rebuilt."""
        tuned = {THRESHOLDS_KEY} if self.threshold_mode is not ThresholdMode.FIXED else set()
        keys = self._trainable_keys() | tuned
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keys}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Complete a trainable-only checkpoint with this model's frozen weights.

        The checkpoint then loads strictly. One that lacks any trainable weight is refused.
        """
        state, keys = checkpoint.get("state_dict", {}), self._trainable_keys()
        checkpoint_thresholds(state, self.threshold_mode)  # tuned ones, kept where they apply
        missing = missing_trainable(state, keys)
        if missing:
            raise KeyError(missing_message(missing, "checkpoint"))
        checkpoint["state_dict"] = complete_state_dict(state, self.state_dict(), keys, strict=False)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a state dict: a checkpoint's (trainable weights only) or a full one.

        The frozen weights ``state_dict`` leaves out are this module's own. With ``strict``,
        a missing trainable weight or an unexpected key is a ``RuntimeError`` that names them.
        """
        keys = self._trainable_keys()
        state = complete_state_dict(state_dict, self.state_dict(), keys, strict=strict)
        return super().load_state_dict(state, strict=strict, assign=assign)
