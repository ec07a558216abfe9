"""The ``cmpt`` parser: Lightning's CLI over :class:`CMPTModule` and the data modules.

:class:`CMPTCLI` is a ``LightningCLI`` (``fit``, ``validate``, ``test``, ``predict``) that links
the model and data arguments, and takes further commands (``cmpt sweep``, ``cmpt study``,
``cmpt data check``) as :class:`Command` objects that become subcommands of the same
jsonargparse parser, so that every flag is spelled one way and every ``--help`` is generated.
:func:`run_fit` runs a fit from a config file in this process (what a sweep's job calls), and
:func:`fit_parser` gives the parser of ``cmpt fit`` without running anything (what the sweep
checks its cells with). The commands themselves live above this module (:mod:`cmpt_lightning.main`
puts them together).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from .callbacks import PredictionWriter, without_zero_flops
from .checkpoint_io import check_checkpoint, with_atomic_io
from .checkpoints import CMPTCheckpoint
from .cli_errors import CMPTArgumentParser, condense, debug_enabled, describe, print_user_error
from .cli_legacy import rename_flags
from .datamodules.base import CMPTDataModule
from .datamodules.registry import FAMILIES
from .datamodules.synthetic import SyntheticDataModule
from .datamodules.world import WorldDataModule
from .errors import UserInputError
from .evaluation import print_ceilings
from .help_text import complete_descriptions, use_plain_help
from .module import CMPTModule
from .notices import quiet_known_noise
from .tasks import Task

__all__ = [
    "CMPTCLI",
    "Command",
    "cli_settings",
    "fit_parser",
    "quiet_known_noise",
    "rename_flags",
    "run_fit",
    "trainer_defaults",
    "user_error",
]


def _task_name(task: Task | str) -> str:
    """The plain string of a task, so that checkpoints hold no enum objects."""
    return Task(task).value


@dataclass(frozen=True)
class Command:
    """A command of ``cmpt`` beside Lightning's own, added to the one parser as a subcommand.

    Attributes:
        help: its line in ``cmpt --help``.
        parser: builds its parser, from a dataclass or a typed function.
        run: runs it from its parsed namespace and returns the exit status.
        legacy: rewrites the tokens after the command's name from an older spelling to the
            current one (warning about each change); None when there is none.
        nested: adds the command's own subcommands (``cmpt sweep run``, ``cmpt sweep
            collect``) to its parser once that is attached (jsonargparse adds levels in order).
    """

    help: str
    parser: Callable[[], ArgumentParser]
    run: Callable[[Namespace], int]
    legacy: Callable[[list[str]], list[str]] | None = field(default=None)
    nested: Callable[[ArgumentParser], None] | None = field(default=None)


def user_error(prog: str, error: BaseException) -> int:
    """Print a user error as one message (no traceback) on stderr; return exit status 2."""
    if debug_enabled():
        raise error
    print_user_error(prog, describe(error))
    return 2


class CMPTCLI(LightningCLI):
    """LightningCLI with the model's preprocessing and the data's classes linked, never typed twice.

    ``model.init_args.clip`` / ``pretrained`` flow to the data module (its tokenizer and image
    preprocessing), ``data.num_classes`` / ``data.task`` flow to the model once the data module
    exists. ``--test_after_fit true`` tests the best checkpoint when ``fit`` ends.

    Args:
        *args: as for ``LightningCLI``.
        commands: further subcommands of the same parser, by name (see :class:`Command`).
        **kwargs: as for ``LightningCLI``.
    """

    def __init__(
        self, *args: Any, commands: Mapping[str, Command] | None = None, **kwargs: Any
    ) -> None:
        self.commands = dict(commands or {})
        #: The exit status of a :class:`Command` that ran (0 for Lightning's subcommands).
        self.exit_code = 0
        super().__init__(*args, **kwargs)

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

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands, then the :attr:`commands`, in one parser."""
        super()._add_subcommands(parser, **kwargs)
        action = parser._subcommands_action
        if action is None:  # pragma: no cover - LightningCLI always adds subcommands here
            msg = "LightningCLI added no subcommands; the cmpt commands cannot be attached"
            raise RuntimeError(msg)
        for name, command in self.commands.items():
            sub = command.parser()
            action.add_subcommand(name, sub, help=command.help)
            if command.nested is not None:
                command.nested(sub)
        complete_descriptions(parser, {name: getattr(Trainer, name) for name in self.subcommands()})
        use_plain_help(parser)  # help pages without the docstrings' RST markup

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (the command line when None), after rewriting legacy spellings."""
        if isinstance(args, dict | Namespace):
            self.config = parser.parse_object(args)
            return
        tokens = [str(a) for a in (sys.argv[1:] if args is None else args)]
        command = self.commands.get(tokens[0]) if tokens else None
        if command is not None and command.legacy is not None:
            tokens = [tokens[0], *command.legacy(tokens[1:])]
        self.config = parser.parse_args(tokens)

    def _set_seed(self) -> None:
        if self.config.get("subcommand") not in self.commands:
            super()._set_seed()

    def before_instantiate_classes(self) -> None:
        """Drop the default rich progress bar when the run disables progress bars."""
        if self.subcommand in self.commands:
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("trainer", {}).get("enable_progress_bar") is False:
            callbacks = self.trainer_defaults.get("callbacks", [])
            self.trainer_defaults["callbacks"] = [
                c for c in callbacks if not isinstance(c, RichProgressBar)
            ]

    def instantiate_classes(self) -> None:
        """Build the model, data and trainer (nothing for a :class:`Command`).

        A config value that the classes refuse (a rate out of range, an unknown choice, a GPU
        setting on a machine without one) is reported as one line naming the key and the
        value, with exit status 2 (``CMPT_DEBUG=1``: the full report and traceback).
        """
        if self.subcommand in self.commands:
            return
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, UserInputError, MisconfigurationException) as err:
            if debug_enabled():
                raise
            config = self.config[self.subcommand] if self.subcommand else self.config
            print_user_error(f"cmpt {self.subcommand or ''}".strip(), condense(err, config))
            raise SystemExit(2) from None

    def _parse_ckpt_path(self) -> None:
        """Rebuild the model from the checkpoint's hyper-parameters, keeping the options given.

        Lightning replaces the model's config by the checkpoint's hparams; options that are not
        hyper-parameters (the optimizer, the scheduler, the test grid) and options the user set
        to something else than their default survive, so a resumed run's saved config equals
        the original's and ``cmpt test --ckpt_path`` runs the test grid it is given.

        Raises:
            CheckpointNotFoundError: if ``ckpt_path`` names no file (the message lists the
                checkpoints near it).
            NotACheckpointError: if the file is not a Lightning checkpoint.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            super()._parse_ckpt_path()
            return
        check_checkpoint(self.config[subcommand]["ckpt_path"])  # before anything is built
        given = self.config[subcommand].get("model")
        super()._parse_ckpt_path()
        merged = self.config[subcommand].get("model")
        if not isinstance(given, Namespace) or not isinstance(merged, Namespace):
            return
        if given.get("class_path") != merged.get("class_path"):
            return
        defaults = _init_defaults(merged.get("class_path"))
        before, after = given.get("init_args"), merged.get("init_args")
        if not isinstance(before, Namespace) or not isinstance(after, Namespace):
            return
        for key, value in vars(before).items():
            if key not in defaults or value != defaults[key]:
                after[key] = value

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Build the trainer: atomic checkpoints unless a CheckpointIO is set, no zero FLOPs."""
        trainer = self._get(self.config_init, "trainer", default={})
        plugins = with_atomic_io(trainer.get("plugins"), trainer.get("strategy"))
        kwargs.setdefault("plugins", plugins)
        built = super().instantiate_trainer(**kwargs)
        without_zero_flops(built)  # no "Total FLOPs: 0" from a summary that counted none
        return built

    def _run_subcommand(self, subcommand: str) -> None:
        command = self.commands.get(subcommand)
        if command is None:
            super()._run_subcommand(subcommand)
            return
        self.exit_code = command.run(self.config[subcommand])

    def before_fit(self) -> None:
        """With ``--test_after_fit``, screen the test split too before the first step.

        The data module then reads and screens the test split at setup, so that a bad test
        sample stops the run before training, not after it.
        """
        if self.config[self.subcommand].get("test_after_fit", False) and hasattr(
            self.datamodule, "extra_fit_splits"
        ):
            self.datamodule.extra_fit_splits = ("test",)

    def after_fit(self) -> None:
        """Test the best checkpoint after fitting when ``--test_after_fit`` is set."""
        if not self.config[self.subcommand].get("test_after_fit", False):
            return
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        ckpt = best if best and not getattr(self.trainer, "fast_dev_run", False) else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        self.after_test()

    def after_test(self) -> None:
        """Print the test metric per availability case next to the data's Bayes ceilings.

        Only for data that knows them (:meth:`WorldDataModule.ceilings`), on rank zero.
        """
        ceilings = getattr(self.datamodule, "ceilings", None)
        task = getattr(self.model, "task", None)
        if callable(ceilings) and task is not None and self.trainer.is_global_zero:
            print_ceilings(self.trainer.callback_metrics, ceilings(), Task(task).main_metric)


def trainer_defaults() -> dict[str, Any]:
    """Callbacks every run gets unless the config replaces ``trainer.callbacks``."""
    return {
        "callbacks": [
            RichProgressBar(leave=True),
            PredictionWriter(),
            CMPTCheckpoint(),  # best by val/score, and last.ckpt after every epoch
        ],
    }


def _init_defaults(class_path: Any) -> dict[str, Any]:
    """The defaults of a model class's init arguments, as jsonargparse resolves them."""
    if not isinstance(class_path, str):
        return {}
    module, _, name = class_path.rpartition(".")
    parser = ArgumentParser()
    try:
        parser.add_class_arguments(getattr(importlib.import_module(module), name), "model")
    except (ImportError, AttributeError, ValueError):
        return {}
    defaults = parser.get_defaults().get("model")
    return dict(vars(defaults)) if isinstance(defaults, Namespace) else {}


#: The data modules ``--data`` accepts by their short names (``--data Food101DataModule``):
#: jsonargparse lists the subclasses that are imported.
DATA_MODULES = (SyntheticDataModule, WorldDataModule, *FAMILIES.values())


def cli_settings() -> dict[str, Any]:
    """The classes and options of the ``cmpt`` CLI, shared with the sweep's config checker."""
    return {
        "parser_class": CMPTArgumentParser,
        "model_class": CMPTModule,
        "datamodule_class": CMPTDataModule,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "seed_everything_default": 0,
        "auto_configure_optimizers": False,
    }


def run_fit(config: str | Path, ckpt_path: str | Path | None = None) -> None:
    """``cmpt fit --config CONFIG [--ckpt_path CKPT]``, in this process.

    Args:
        config: a ``cmpt fit`` config file (e.g. a sweep cell's resolved ``config.yaml``).
        ckpt_path: a checkpoint to resume from.

    Raises:
        SystemExit: when the config does not parse (the parser's own message is printed).
    """
    args = ["fit", "--config", str(config)]
    if ckpt_path is not None:
        args += ["--ckpt_path", str(ckpt_path)]
    with quiet_known_noise():
        CMPTCLI(
            **cli_settings(),
            trainer_defaults=trainer_defaults(),
            save_config_kwargs={"overwrite": True},
            args=args,
        )


class _ParserReady(Exception):
    """Carries the parser out of LightningCLI's constructor before it parses or builds."""

    def __init__(self, parser: Any) -> None:
        super().__init__("parser ready")
        self.parser = parser


def fit_parser() -> LightningArgumentParser:
    """The parser ``cmpt fit`` uses (same classes, links and defaults), without running anything.

    It raises instead of exiting on a bad config (``exit_on_error=False``).
    """

    class _ParserOnly(CMPTCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            raise _ParserReady(parser)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            _ParserOnly(
                **cli_settings(),
                run=False,
                parser_kwargs={"exit_on_error": False, "allow_abbrev": False},
            )
    except _ParserReady as ready:
        parser: LightningArgumentParser = ready.parser
        return parser
    msg = "LightningCLI did not call parse_arguments; cmpt's parser hook needs updating"
    raise RuntimeError(msg)
