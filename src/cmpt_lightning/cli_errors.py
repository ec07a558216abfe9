"""User errors on the command line: one short message, not a wall of tracebacks.

jsonargparse reports a bad value inside a subclass's dataclass option as nested union reports
(``Does not validate against any of the Union subtypes`` ... ``Given value: Namespace(...)``)
after the full usage, 60 to 110 lines for one wrong number; a dataclass's own check
(``missing rate must be in [0, 1], got 1.5``) fails later, at instantiation, under three
chained tracebacks. :class:`CMPTArgumentParser` is the parser class of ``cmpt`` (jsonargparse's
own error hook, ``ArgumentParser.error``), and :func:`condense` turns such a report into one
line naming the config key, the bad value and what is allowed. ``CMPT_DEBUG=1`` restores the
full report and the traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, NoReturn

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser

from .errors import UserInputError

__all__ = ["CMPTArgumentParser", "condense", "debug_enabled", "print_user_error"]

#: Lines of jsonargparse's union reports that say nothing about the value.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
    "Problem with given class_path",
    "Parser key",
)


def debug_enabled() -> bool:
    """Whether ``CMPT_DEBUG`` asks for full reports and tracebacks."""
    return os.environ.get("CMPT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _reason(text: str) -> str:
    """The informative line of a (nested) jsonargparse report."""
    text = re.sub(r"<class '(?:[\w]+\.)*([\w]+)'>", r"\1", text)  # <class 'float'> -> float
    lines = [line.strip(" -") for line in text.splitlines() if line.strip(" -")]
    useful = [line for line in lines if not line.startswith(_NOISE)]
    expected = [line for line in useful if line.startswith("Expected a ")]
    own = [line for line in useful if not line.startswith("Expected a ")]
    if own:
        return own[0]
    if expected:
        wanted, _, value = expected[0][len("Expected a ") :].partition(". Got value: ")
        return f"expected a {wanted}, got {value!r}" if value else f"expected a {wanted}"
    return lines[-1] if lines else text.strip()


def _leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every sub-namespace of ``config`` by its dotted key (the namespaces themselves)."""
    found: dict[str, Any] = {}
    if isinstance(config, Namespace):
        found[prefix] = config
        for key, value in vars(config).items():
            found.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return found


def _key(text: str, config: Any) -> str | None:
    """The config key a report is about: the namespace it prints, or the key it names."""
    given = re.findall(r"Given value: (Namespace\(.*\))", text)
    if given and config is not None:
        namespaces = _leaves(config)
        for inner in given:  # the innermost report comes first
            for key, namespace in namespaces.items():
                if key and str(namespace) == inner:
                    return key
    keys = re.findall(r'Parser key "([^"]+)"', text)
    nested = re.findall(r"NestedArg\(key='([^']+)'", text)
    if keys and nested:
        return f"{keys[0]}.init_args.{nested[-1]}"  # the outermost report names the whole key
    return keys[0] if keys else None


def _mentioned(reason: str, key: str) -> bool:
    """Whether the reason names the setting (``lora rank``, ``lora_rank``; ``rate`` for rates)."""
    name, text = key.rsplit(".", 1)[-1].lower(), reason.lower()
    spaced = name.replace("_", " ")
    return any(n in text for n in (name, spaced, name.rstrip("s"), spaced.rstrip("s")))


def _named(reason: str, items: dict[str, Any]) -> list[str]:
    """The keys of ``items`` whose value the reason quotes (``got 1.5``, ``'audio'``).

    Narrowed to the ones it names when several hold that value; else the ones it names.
    """
    for pattern in ("got {!r}", "{!r}"):
        found = [
            key
            for key, value in items.items()
            if not isinstance(value, Namespace | bool)
            and value not in (None, "")
            and pattern.format(value) in reason
        ]
        if len(found) > 1:
            found = [key for key in found if _mentioned(reason, key)] or found
        if found:
            return found
    return [key for key in items if _mentioned(reason, key)]


def _scalars(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every scalar setting of ``config`` by its dotted key."""
    found: dict[str, Any] = {}
    if isinstance(config, Namespace):
        for key, value in vars(config).items():
            name = f"{prefix}.{key}" if prefix else key
            found.update(_scalars(value, name) if isinstance(value, Namespace) else {name: value})
    return found


def _field(key: str | None, reason: str, config: Any) -> str | None:
    """The exact key: ``key.field`` when one field of ``key`` (or of the config) holds the value."""
    if config is None:
        return key
    namespace = _leaves(config).get(key) if key else config
    if not isinstance(namespace, Namespace):
        return key
    if key and isinstance(namespace.get("init_args"), Namespace):  # a class: its arguments
        key, namespace = f"{key}.init_args", namespace.init_args
    fields = {k: v for k, v in vars(namespace).items() if not isinstance(v, Namespace)}
    named = _named(reason, fields) if key else _named(reason, _scalars(config))
    if len(named) != 1:
        return key
    return f"{key}.{named[0]}" if key else named[0]


def condense(error: BaseException | str, config: Any = None) -> str:
    """One line from a jsonargparse report: ``key: what is wrong (the value, what is allowed)``.

    Args:
        error: the exception (its chain is searched) or the report's text.
        config: the parsed config, to find which key a reported value belongs to.

    Returns:
        The message, without usage, union reports or tracebacks.
    """
    texts = [error] if isinstance(error, str) else []
    cause: BaseException | None = None if isinstance(error, str) else error
    own: UserInputError | None = None  # the outermost error that is the user's to fix
    while cause is not None:
        texts.append(str(cause))
        if own is None and isinstance(cause, UserInputError):
            own = cause
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(texts)
    # an error of ours says what is wrong and how to fix it, in its own words
    reason = str(own) if own is not None else _reason(texts[-1] if len(texts) > 1 else text)
    key = _field(_key(text, config), reason, config)
    if "gpu" in reason.lower() and "accelerator" not in reason.lower():
        reason += " (no GPU? --trainer.accelerator cpu, or add --config configs/cpu_smoke.yaml)"
    return f"{key}: {reason}" if key else reason


def print_user_error(prog: str, message: str) -> None:
    """Print a user error the way every ``cmpt`` command does (stderr, with the debug hint)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    hint = f"  (`{prog} --help` lists the options; CMPT_DEBUG=1 prints the details)"
    print(hint, file=sys.stderr)


class CMPTArgumentParser(LightningArgumentParser):
    """The parser class of ``cmpt``: a parse error is one line naming the key and the value."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print the condensed error and exit with status 2 (the full report with CMPT_DEBUG)."""
        if debug_enabled() or not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        print_user_error(parser.prog.replace(" [options]", ""), condense(message))
        sys.exit(2)
