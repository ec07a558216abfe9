"""The ``cmpt`` entry point: one parser for Lightning's subcommands and cmpt's own commands.

``cmpt fit|validate|test|predict`` (Lightning's), ``cmpt sweep run|collect``, ``cmpt study`` and
``cmpt data check <family>``: every command is a subcommand of one jsonargparse parser
(:class:`~cmpt_lightning.cli.CMPTCLI`), and each takes ``--help``.
"""

from __future__ import annotations

import os

from lightning.pytorch.cli import ArgsType

from .cli import CMPTCLI, Command, cli_settings, trainer_defaults
from .datacheck import data_command
from .study import study_command
from .sweep.command import sweep_command

__all__ = ["CMPTCLI", "commands", "main"]


def commands() -> dict[str, Command]:
    """Cmpt's commands beside Lightning's, by name."""
    return {"sweep": sweep_command(), "study": study_command(), "data": data_command()}


def main(args: ArgsType = None) -> None:
    """Run the ``cmpt`` command line (``args``: the arguments, for tests; default: sys.argv).

    Raises:
        SystemExit: with the command's status when it is not 0 (a failed sweep cell or data
            check: 1; bad input: 2).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli = CMPTCLI(
        **cli_settings(),
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        commands=commands(),
        args=args,
    )
    if cli.exit_code:
        raise SystemExit(cli.exit_code)


if __name__ == "__main__":
    main()
