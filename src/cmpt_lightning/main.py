"""The ``cmpt`` command line: Lightning's CLI over :class:`CMPTModule` and the data modules."""

from __future__ import annotations

import os
import sys
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from .callbacks import PredictionWriter
from .datamodules.base import CMPTDataModule
from .module import CMPTModule
from .tasks import Task

__all__ = ["CMPTCLI", "cli_settings", "main", "trainer_defaults"]


def _task_name(task: Task | str) -> str:
    """The plain string of a task, so that checkpoints hold no enum objects."""
    return Task(task).value


class CMPTCLI(LightningCLI):
    """LightningCLI with the model's preprocessing and the data's classes linked, never typed twice.

    ``model.init_args.clip`` / ``pretrained`` flow to the data module (its tokenizer and image
    preprocessing), ``data.num_classes`` / ``data.task`` flow to the model once the data module
    exists. ``--test_after_fit true`` tests the best checkpoint when ``fit`` ends.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link model and data arguments and add ``--test_after_fit``."""
        parser.link_arguments("model.init_args.clip", "data.init_args.clip_model")
        parser.link_arguments("model.init_args.pretrained", "data.init_args.pretrained")
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.task", "model.init_args.task", compute_fn=_task_name, apply_on="instantiate"
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint (the last weights if none was saved).",
        )

    def before_instantiate_classes(self) -> None:
        """Drop the default rich progress bar when the run disables progress bars."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("trainer", {}).get("enable_progress_bar") is False:
            callbacks = self.trainer_defaults.get("callbacks", [])
            self.trainer_defaults["callbacks"] = [
                c for c in callbacks if not isinstance(c, RichProgressBar)
            ]

    def after_fit(self) -> None:
        """Test the best checkpoint after fitting when ``--test_after_fit`` is set."""
        if not self.config[self.subcommand].get("test_after_fit", False):
            return
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        ckpt = best if best and not getattr(self.trainer, "fast_dev_run", False) else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def trainer_defaults() -> dict[str, Any]:
    """Callbacks every run gets unless the config replaces ``trainer.callbacks``."""
    return {
        "callbacks": [
            RichProgressBar(leave=True),
            PredictionWriter(),
            ModelCheckpoint(
                monitor="val/score",
                mode="max",
                save_last=True,
                filename="best-{epoch:02d}",
                auto_insert_metric_name=False,
            ),
        ],
    }


_MORE_COMMANDS = """\
cmpt: Cross-Modal Proxy Tokens. Besides Lightning's subcommands below:
  cmpt data check <food101|mmimdb|hateful_memes|csv> --root DIR   validate a dataset download
  cmpt sweep --config C --grid G --out DIR [--executor local|slurm]   sweep training settings
  cmpt sweep collect DIR                                          aggregate a sweep
  cmpt study [--config C] [--out DIR]                             CMPT against the baselines
Each takes --help.
"""


def cli_settings() -> dict[str, Any]:
    """The classes and options of the ``cmpt`` CLI, shared with the sweep's config checker."""
    return {
        "model_class": CMPTModule,
        "datamodule_class": CMPTDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "seed_everything_default": 0,
        "auto_configure_optimizers": False,
    }


def main(args: ArgsType = None) -> None:
    """Run ``cmpt fit|validate|test|predict`` or ``cmpt data check`` (``args``: for tests).

    ``cmpt data check <family> --root DIR`` validates a downloaded dataset (see
    :mod:`cmpt_lightning.datacheck`) and exits non-zero when it finds errors.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
    if argv[:1] in (["-h"], ["--help"]):
        print(_MORE_COMMANDS)
    if argv[:1] == ["data"]:
        from .datacheck import main as data_main

        raise SystemExit(data_main([str(a) for a in argv]))
    if argv[:1] == ["study"]:
        from .study import main as study_main

        raise SystemExit(study_main([str(a) for a in argv[1:]]))
    if argv[:1] == ["sweep"]:
        from .sweep.cli import main as sweep_main

        raise SystemExit(sweep_main([str(a) for a in argv]))
    CMPTCLI(
        **cli_settings(),
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
