"""The ``cmpt`` entry point: one parser for Lightning's subcommands and cmpt's own commands.

``cmpt fit|validate|test|predict`` (Lightning's), ``cmpt sweep run|collect``, ``cmpt study`` and
``cmpt data check <family>``: every command is a subcommand of one jsonargparse parser
(:class:`~cmpt_lightning.cli.CMPTCLI`), and each takes ``--help``.
"""

from __future__ import annotations

import os
import sys

from lightning.pytorch.cli import ArgsType

from .cli import CMPTCLI, Command, cli_settings, quiet_known_noise, trainer_defaults
from .cli_errors import debug_enabled, print_user_error
from .datacheck import data_command
from .errors import UserInputError
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
            check: 1; bad input, printed as one message without a traceback: 2).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with quiet_known_noise():
            cli = CMPTCLI(
                **cli_settings(),
                trainer_defaults=trainer_defaults(),
                save_config_kwargs={"overwrite": True},
                commands=commands(),
                args=args,
            )
    except UserInputError as err:  # a dataset, a file or a value the user can fix
        if debug_enabled():
            raise
        tokens = sys.argv[1:] if args is None else list(args) if isinstance(args, list) else []
        print_user_error(f"cmpt {tokens[0]}" if tokens else "cmpt", str(err))
        raise SystemExit(2) from None
    if cli.exit_code:
        raise SystemExit(cli.exit_code)


if __name__ == "__main__":
    main()
