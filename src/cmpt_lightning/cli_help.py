"""Help pages without building the parser: the one parser's own ``--help`` output, remembered.

Building ``cmpt``'s parser imports Lightning and PyTorch (seconds, about 1 GB). A help page depends
only on the parser's definition, so ``cmpt [COMMAND ...] --help`` prints the page that the parser
printed for the same sources and library versions (the *key*):

1. the snapshot shipped in the package (``help_pages.json``, written by
   ``python scripts/snapshot_help.py`` and compared with the live parser by the tests);
2. else the user's cache (``$CMPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/cmpt-lightning``, else
   ``~/.cache/cmpt-lightning``), filled by the first live rendering under that key;
3. else the live parser renders it (and it is remembered in the cache when the disk allows).

The key holds a hash of the package's sources and the versions of Python, jsonargparse and
Lightning, so an edited checkout or another Lightning renders live and a page is never stale.
Pages are rendered at a fixed width of :data:`WIDTH` columns so that they do not depend on the
terminal. Only requests made of subcommand names and a final ``-h``/``--help`` are served here;
anything else (``cmpt --config x.yaml fit --help``) goes to the parser.

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

__all__ = [
    "MAX_BYTES",
    "SNAPSHOT",
    "WIDTH",
    "cache_dir",
    "help_key",
    "help_request",
    "lookup",
    "page_name",
    "remember",
    "snapshot_pages",
    "subcommands",
    "write_snapshot",
]

#: The width, in columns, at which every help page is rendered.
WIDTH = 80
#: The largest help cache file that is read (the shipped snapshot of every page is ~0.2 MB).
MAX_BYTES = 16 * 2**20
#: The snapshot of help pages shipped in the package.
SNAPSHOT = Path(__file__).with_name("help_pages.json")
_PACKAGE = Path(__file__).parent
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_HELP_FLAGS = ("-h", "--help")


def help_request(tokens: Sequence[str]) -> tuple[str, ...] | None:
    """The subcommand path of a plain help request, or None when ``tokens`` are anything else.

    ``["data", "check", "--help"]`` gives ``("data", "check")``.
    """
    if not tokens or tokens[-1] not in _HELP_FLAGS:
        return None
    path = tuple(tokens[:-1])
    return path if all(_NAME.match(token) for token in path) else None


def page_name(path: Sequence[str]) -> str:
    """The name of a help page in the snapshot: its subcommands joined by spaces."""
    return " ".join(path)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def help_key() -> dict[str, str]:
    """What a help page depends on: the package's sources, Python's and the libraries' versions."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "cmpt-lightning": _version("cmpt-lightning"),
        "jsonargparse": _version("jsonargparse"),
        "lightning": _version("lightning"),
        "sources": digest.hexdigest(),
        "width": str(WIDTH),
    }


def cache_dir() -> Path:
    """The user's cache of rendered help pages (see the module's docstring for the order)."""
    if os.environ.get("CMPT_CACHE_DIR"):
        return Path(os.environ["CMPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cmpt-lightning"


def _cache_file(key: dict[str, str]) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"help-{name}.json"


def _pages(file: Path, key: dict[str, str]) -> dict[str, str]:
    """The pages stored in ``file`` under ``key``; none when it is absent, unreadable or stale.

    A file that is not what :func:`remember` writes (cut short, edited, crafted: not JSON,
    nested too deep to parse, other types, larger than :data:`MAX_BYTES`) counts as a miss:
    the page is rendered again and the file rewritten. Pages that are not strings are dropped.
    """
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            return {}
        stored = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError, MemoryError):
        return {}
    if not isinstance(stored, dict) or stored.get("key") != key:
        return {}
    pages = stored.get("pages")
    if not isinstance(pages, dict):
        return {}
    return {name: text for name, text in pages.items() if isinstance(text, str)}


def snapshot_pages(key: dict[str, str] | None = None) -> dict[str, str]:
    """The shipped snapshot's pages, or none when it was not written under ``key``.

    ``key`` defaults to this installation's (:func:`help_key`).
    """
    return _pages(SNAPSHOT, help_key() if key is None else key)


def lookup(path: Sequence[str], key: dict[str, str] | None = None) -> str | None:
    """The remembered help page of ``path``, or None when it must be rendered.

    ``key`` defaults to this installation's (:func:`help_key`).
    """
    key = help_key() if key is None else key
    for file in (SNAPSHOT, _cache_file(key)):
        text = _pages(file, key).get(page_name(path))
        if isinstance(text, str):
            return text
    return None


def _write_json(file: Path, content: dict[str, object]) -> None:
    """Write ``content`` to ``file`` atomically (a reader never sees half a file)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=1, sort_keys=True)
            stream.write("\n")
        os.chmod(temporary, 0o644)  # mkstemp's 0o600 would hide a shipped snapshot from users
        os.replace(temporary, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remember(path: Sequence[str], text: str, key: dict[str, str] | None = None) -> bool:
    """Add a rendered page to the user's cache; False when the disk refused (read-only, full).

    A help cache that cannot be written costs only speed, so the failure is returned, not raised.
    """
    key = help_key() if key is None else key
    file = _cache_file(key)
    pages = _pages(file, key)
    pages[page_name(path)] = text
    try:
        _write_json(file, {"key": key, "pages": pages})
    except OSError:
        return False
    return True


def subcommands(text: str) -> list[str]:
    """The subcommands a help page lists under "Available subcommands:" (none for a leaf)."""
    _, found, rest = text.partition("Available subcommands:")
    if not found:
        return []
    return re.findall(r"^ {4}([a-z][a-z0-9_]*)(?:\s|$)", rest, flags=re.MULTILINE)


def write_snapshot(pages: dict[str, str], file: Path = SNAPSHOT) -> None:
    """Write the snapshot of ``pages`` under this installation's key.

    ``scripts/snapshot_help.py`` calls it with every page the parser renders.
    """
    _write_json(file, {"key": help_key(), "pages": dict(sorted(pages.items()))})
