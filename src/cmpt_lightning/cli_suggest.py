"""Did you mean: the closest valid key or class for a misspelt one, and the file it is in.

jsonargparse reports an unknown key as ``Subcommand 'fit' does not accept option
'trainer.max_epoch'`` or ``Option 'batch_sise' is not accepted`` (inside a union report), and a
misspelt class name as ``expected a path but Food101DataModul either not accessible or
invalid``: neither names the config file the key came from, the valid keys, or the classes a
short name may be. :func:`suggest` turns such a report into one message: the file and line of
the key (the config files are read from the command line :func:`remember_tokens` saw), the
closest valid key or class (:mod:`difflib`) and, for a class, the ones it may be.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

__all__ = ["remember_tokens", "suggest"]

#: The command line being parsed (for the config files it names).
_TOKENS: ContextVar[tuple[str, ...] | None] = ContextVar("cmpt_tokens", default=None)
_CONFIG_FLAGS = ("--config", "-c")


def remember_tokens(tokens: Sequence[str] | None) -> None:
    """Keep the command line being parsed (None: ``sys.argv``), for the files it names."""
    _TOKENS.set(tuple(str(t) for t in (sys.argv[1:] if tokens is None else tokens)))


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``name`` (compared by their last part too), if any is close."""
    unique = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(name, unique, n=1, cutoff=0.6)
    if found:
        return found[0]
    leaf = name.rsplit(".", 1)[-1]
    leaves = {c.rsplit(".", 1)[-1]: c for c in unique}
    found = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
    return leaves[found[0]] if found else None


def _config_files() -> list[tuple[str, Path]]:
    """(key prefix, file) of each config file on the command line, in order.

    ``--config FILE`` (and ``--config=FILE``, ``-c FILE``) at any level, and ``--data FILE``
    style values that are YAML files (their keys are under ``data``).
    """
    tokens = _TOKENS.get() or ()
    found: list[tuple[str, Path]] = []
    for i, token in enumerate(tokens):
        flag, eq, value = token.partition("=")
        if not eq:
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
        if not flag.startswith("-") or not value:
            continue
        path = Path(value)
        if flag in _CONFIG_FLAGS:
            prefix = ""
        elif flag.startswith("--") and path.suffix.lower() in (".yaml", ".yml", ".json"):
            prefix = flag[2:]
        else:
            continue
        if path.is_file():
            found.append((prefix, path))
    return found


def _keys(node: Any, prefix: str) -> Iterator[tuple[str, int]]:
    """(dotted key, 1-based line) of every mapping key under a composed YAML ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                name = f"{prefix}.{key.value}" if prefix else str(key.value)
                yield name, key.start_mark.line + 1
                yield from _keys(value, name)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _keys(item, prefix)


def _where(matches: Any) -> tuple[str, str, int] | None:
    """(the full key, the file, the line) of the last config file holding a matching key.

    The last one, since a later ``--config`` overrides an earlier one.
    """
    for prefix, path in reversed(_config_files()):
        try:
            node = yaml.compose(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, yaml.YAMLError, RecursionError):
            continue
        hits = [(key, line) for key, line in _keys(node, prefix) if matches(key)]
        if hits:
            return hits[-1][0], str(path), hits[-1][1]
    return None


def _dests(parser: Any) -> list[str]:
    """The dotted keys a (sub)command's parser accepts."""
    skip = {"help", "config", "print_config", argparse.SUPPRESS}
    return [
        a.dest
        for a in getattr(parser, "_actions", [])
        if a.dest not in skip and not a.dest.endswith(".help")
    ]


def _class_keys(class_path: str) -> list[str]:
    """The init arguments jsonargparse accepts for the class at ``class_path`` (none if unknown)."""
    from jsonargparse import ArgumentParser

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, fail_untyped=False)
    except Exception:  # only a suggestion: none when the class cannot be read
        return []
    return _dests(parser)


_SUBCOMMAND_KEY = re.compile(r"Subcommand '\w+' does not accept option '([^']+)'")
_GROUP_KEY = re.compile(r"Group '([^']+)' does not accept option '([^']+)'")
_OPTION = re.compile(r"Option '([^']+)' is not accepted")


def _unknown_key(message: str, parser: Any) -> str | None:
    """The message for an unknown key: its file and line, and the closest valid key."""
    option, in_group = _OPTION.search(message), _GROUP_KEY.search(message)
    in_subcommand = _SUBCOMMAND_KEY.search(message)
    if option is not None and "Parser key" in message:  # inside a class: data.init_args.<leaf>
        leaf = option[1]
        owners = re.findall(r"class_path '([\w.]+)'", message[: option.start()])
        candidates = _class_keys(owners[-1]) if owners else []
        top = re.search(r'Parser key "([^"]+)"', message)
        first = top[1] if top else ""
        where = _where(lambda key: key.startswith(f"{first}.") and key.endswith(f".{leaf}"))
        shown = where[0] if where else f"{first}.init_args.{leaf}" if first else leaf
    elif in_subcommand is not None or in_group is not None or option is not None:
        if in_subcommand is not None:
            leaf = in_subcommand[1]
        elif in_group is not None:
            leaf = f"{in_group[1]}.{in_group[2]}"
        else:
            leaf = option[1] if option is not None else ""
        candidates = _dests(parser)
        where = _where(lambda key: key == leaf)
        shown = where[0] if where else leaf
    else:
        return None
    place = f"{where[1]}, line {where[2]}: " if where else ""
    closest = _closest(leaf, candidates)
    if closest is not None:
        if "." not in closest and "." in shown:  # a class's argument: the same path, fixed
            closest = f"{shown.rsplit('.', 1)[0]}.{closest}"
        hint = f"; did you mean {closest}?"
    elif candidates:
        hint = f"; the valid keys there: {', '.join(sorted(set(candidates))[:20])}"
    else:
        hint = ""
    return f"{place}{shown} is not an option{hint}"


def _unrecognized(message: str, parser: Any) -> str | None:
    """The message for unknown command-line flags, with the closest valid flag of each."""
    found = re.match(r"unrecognized arguments: (.+)", message)
    if found is None:
        return None
    flags = [t.split("=", 1)[0] for t in found[1].split() if t.startswith("--")]
    options = [s for a in getattr(parser, "_actions", []) for s in a.option_strings]
    closest = {flag: _closest(flag, options) for flag in flags}
    hints = [f"{flag}: did you mean {near}?" for flag, near in closest.items() if near]
    if len(flags) == 1 and hints:
        return f"{message}; did you mean {closest[flags[0]]}?"
    return f"{message}; {'; '.join(hints)}" if hints else None


def _subclasses(base_path: str) -> list[type]:
    """The imported subclasses of the class at ``base_path`` that :func:`_listed` offers."""
    module, _, name = base_path.rpartition(".")
    base = getattr(sys.modules.get(module), name, None)
    if not isinstance(base, type):
        return []
    found: list[type] = [base]
    todo: list[type] = [base]
    while todo:
        subclasses: list[type] = todo.pop().__subclasses__()
        for sub in subclasses:
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return sorted((c for c in found if _listed(c, base)), key=lambda c: c.__name__)


def _listed(cls: type, base: type) -> bool:
    """Whether a subclass is one to offer.

    Public, and not a base of others that its package keeps private (``FileDataModule``); the
    base itself only when nothing subclasses it.
    """
    if cls.__name__.startswith("_") or "<locals>" in cls.__qualname__:
        return False
    if not cls.__subclasses__():
        return True
    if cls is base:
        return False
    exported = getattr(sys.modules.get(cls.__module__.split(".")[0]), "__all__", None)
    return exported is None or cls.__name__ in exported


def _unknown_class(message: str) -> str | None:
    """The message for a class name that is not one: the closest known class, and all of them."""
    given = re.search(r"Expected a dot import path string: (\S+)", message)
    if given is None:
        given = re.search(
            r"class_path '([\w.]+)':\s*(?:module '[^']*' has no attribute|No module named)",
            message,
        )
    base = re.search(r"Subtypes: \[<class '([\w.]+)'>", message)
    if given is None or base is None:
        return None
    value = given[1]
    if "/" in value or Path(value).suffix.lower() in (".yaml", ".yml", ".json"):
        return None  # a config file's path, not a class name
    classes = _subclasses(base[1])
    if not classes:
        return None
    names = [c.__name__ for c in classes]
    closest = _closest(value.rsplit(".", 1)[-1], names)
    key = re.search(r'Parser key "([^"]+)"', message)
    prefix = f"{key[1]}: " if key else ""
    where = _where(lambda found: found == f"{key[1]}.class_path") if key else None
    place = f"{where[1]}, line {where[2]}: {where[0]}: " if where else prefix
    hint = f"; did you mean {closest}?" if closest else ""
    return (
        f"{place}{value!r} is not a known class{hint} Known: {', '.join(names)} (or the full "
        "path of your own class, package.module.ClassName, or a YAML file)"
    )


def suggest(message: str, parser: Any) -> str | None:
    """One message for a report of an unknown key, flag or class; None for any other report.

    Args:
        message: jsonargparse's report.
        parser: the (sub)command's parser, whose keys are the valid ones.
    """
    found = _unknown_class(message) or _unrecognized(message, parser)
    return found or _unknown_key(message, parser)
