"""The ``cmpt`` entry point: one parser for Lightning's subcommands and cmpt's own commands.

``cmpt fit|validate|test|predict`` (Lightning's), ``cmpt sweep run|collect``, ``cmpt study`` and
``cmpt data check <family>``: every command is a subcommand of one jsonargparse parser
(:class:`~cmpt_lightning.cli.CMPTCLI`), and each takes ``--help``. Plain help requests print the
page that parser rendered, remembered by :mod:`~cmpt_lightning.cli_help`, without importing
Lightning; everything else is imported when a command runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TYPE_CHECKING, Any

from . import cli_help

if TYPE_CHECKING:
    from lightning.pytorch.cli import ArgsType

    from .cli import CMPTCLI, Command

__all__ = ["CMPTCLI", "DESCRIPTION", "commands", "main", "render_help"]

#: The first paragraph of ``cmpt --help``.
DESCRIPTION = (
    "Train and evaluate image-text classifiers that keep working when a modality is missing "
    "(Cross-Modal Proxy Tokens). Add --help after any command for its options."
)


def __getattr__(name: str) -> Any:
    """``CMPTCLI``, imported on first use (it imports Lightning)."""
    if name == "CMPTCLI":
        from .cli import CMPTCLI

        return CMPTCLI
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def commands() -> dict[str, Command]:
    """Cmpt's commands beside Lightning's, by name."""
    from .datacheck import data_command
    from .study import study_command
    from .sweep.command import sweep_command

    return {"sweep": sweep_command(), "study": study_command(), "data": data_command()}


def _run(args: ArgsType) -> int:
    """Build the one parser, run the command ``args`` name and return its exit status."""
    from .cli import CMPTCLI, cli_settings, quiet_known_noise, trainer_defaults
    from .cli_errors import debug_enabled, describe, is_user_error, print_user_error

    try:
        with quiet_known_noise():
            cli = CMPTCLI(
                **cli_settings(),
                trainer_defaults=trainer_defaults(),
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": "cmpt", "description": DESCRIPTION},
                commands=commands(),
                args=args,
            )
    except Exception as err:
        # a dataset, a file or a value the user can fix (also one met by a DataLoader worker)
        if debug_enabled() or not is_user_error(err):
            raise
        tokens = sys.argv[1:] if args is None else list(args) if isinstance(args, list) else []
        print_user_error(f"cmpt {tokens[0]}" if tokens else "cmpt", describe(err))
        return 2
    return cli.exit_code


def render_help(path: tuple[str, ...]) -> str | None:
    """The parser's help page for the subcommands ``path``, at :data:`cli_help.WIDTH` columns.

    Returns None when the parser refuses the request (an unknown command).
    """
    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(cli_help.WIDTH)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _run([*path, "--help"])
    except SystemExit as exc:
        return out.getvalue() if exc.code in (0, None) else None
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return None


def _help(path: tuple[str, ...]) -> str | None:
    """The help page of ``path``: remembered, else rendered (and remembered when possible)."""
    key = cli_help.help_key()  # hashes the package's sources: once per request
    text = cli_help.lookup(path, key)
    if text is None:
        text = render_help(path)
        if text is not None:
            cli_help.remember(path, text, key)
    return text


def main(args: ArgsType = None) -> None:
    """Run the ``cmpt`` command line (``args``: the arguments, for tests; default: sys.argv).

    Raises:
        SystemExit: with the command's status when it is not 0 (a failed sweep cell or data
            check: 1; bad input, printed as one message without a traceback: 2), and with 0
            after a help page, as argparse does.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokens = sys.argv[1:] if args is None else args if isinstance(args, list) else None
    path = cli_help.help_request(tokens) if tokens is not None else None
    text = _help(path) if path is not None else None
    if text is not None:
        sys.stdout.write(text)
        raise SystemExit(0)
    code = _run(args)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
