"""The spellings of 0.1 that ``cmpt``'s commands still accept for one release, with a warning.

0.1's extra commands had hand-written argparse parsers with ``-`` in flag names and
space-separated lists (``--test-rates 0 0.5 1``); the one jsonargparse parser spells flags with
``_`` like Lightning's and takes lists as YAML (``--test_rates '[0, 0.5, 1]'``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

__all__ = ["rename_flags"]


def rename_flags(
    tokens: Sequence[str], renames: Mapping[str, str], *, lists: Sequence[str] = ()
) -> list[str]:
    """Rewrite old flag spellings (``--dry-run`` -> ``--dry_run``), warning once per flag.

    Args:
        tokens: the command's arguments.
        renames: old flag -> current flag (``--x=value`` forms are handled too).
        lists: current flags of list options that used to take several values (``--seeds 0 1``):
            their values are joined into one YAML list (``--seeds [0, 1]``).

    Returns:
        The rewritten tokens.
    """
    out: list[str] = []
    changed: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=")
        if name in renames:
            changed[name] = renames[name]
            name = renames[name]
            token = f"{name}{eq}{value}"
        if name in lists and not eq:
            values = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                values.append(tokens[i + 1])
                i += 1
            if len(values) == 1 and values[0].lstrip().startswith("["):
                out += [token, values[0]]
            else:
                if len(values) != 1:
                    changed.setdefault(f"{name} with several values", f"{name} '[a, b]'")
                out += [token, "[" + ", ".join(values) + "]"]
        else:
            out.append(token)
        i += 1
    for old, new in changed.items():  # FutureWarning: shown to the user by default
        warnings.warn(f"{old} is deprecated and removed in 0.3; write {new}", FutureWarning, 2)
    return out
