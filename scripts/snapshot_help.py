"""Write (or check) the snapshot of ``cmpt``'s help pages shipped in the package.

``cmpt [COMMAND ...] --help`` prints a remembered page instead of building the parser (see
``cmpt_lightning.cli_help``). This script renders every page reachable through subcommands with
the live parser and writes them, under this installation's key, to
``src/cmpt_lightning/help_pages.json``. Run it after changing the package's sources; the tests
fail while the snapshot is stale. ``--check`` only compares and exits with 1 on a difference.

    python scripts/snapshot_help.py [--check]
"""

from __future__ import annotations

import argparse
import sys
import time

from cmpt_lightning import cli_help
from cmpt_lightning.main import render_help


def render_all() -> dict[str, str]:
    """Every help page reachable from ``cmpt --help`` through subcommands, by page name."""
    pages: dict[str, str] = {}
    todo: list[tuple[str, ...]] = [()]
    while todo:
        path = todo.pop(0)
        text = render_help(path)
        if text is None:
            msg = f"the parser refused `cmpt {' '.join(path)} --help`"
            raise RuntimeError(msg)
        pages[cli_help.page_name(path)] = text
        todo += [(*path, name) for name in cli_help.subcommands(text)]
    return pages


def main() -> int:
    """Write the snapshot, or with ``--check`` report whether it is current (exit 1 if not)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when stale")
    options = parser.parse_args()
    start = time.perf_counter()
    pages = render_all()
    key = cli_help.help_key()
    if options.check:
        shipped = cli_help.snapshot_pages(key)
        stale = [name for name, text in pages.items() if shipped.get(name) != text]
        for name in stale:
            print(f"stale: `cmpt {name} --help`", file=sys.stderr)
        return 1 if stale else 0
    cli_help.write_snapshot(pages)
    took = time.perf_counter() - start
    print(f"wrote {len(pages)} help pages to {cli_help.SNAPSHOT} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
