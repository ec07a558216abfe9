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

import csv
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser

from .cli_suggest import remember_tokens, suggest
from .errors import UserInputError

__all__ = [
    "CMPTArgumentParser",
    "condense",
    "debug_enabled",
    "describe",
    "is_user_error",
    "print_user_error",
    "unwrap_worker_error",
]

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


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors behind it, outermost first, as Python's traceback prints them.

    An explicit cause (``raise ... from err``) is followed; otherwise the context (the error
    being handled when this one was raised) unless ``raise ... from None`` suppressed it, as
    :func:`json.loads` does for the ``StopIteration`` behind a ``JSONDecodeError``.
    """
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    return chain


#: How torch re-raises, in the main process, an error of a DataLoader worker (or of its
#: pin-memory thread): ``Caught <type> in DataLoader worker process <n>.`` then the traceback.
_WORKER = re.compile(
    r"\ACaught (?P<type>\w+) (?P<where>in [^\n]*?)\.\nOriginal "
    r"(?P<trace>Traceback \(most recent call last\):\n.*)",
    re.DOTALL,
)


def _worker_origin(text: str) -> tuple[str, str, str] | None:
    """(the qualified type, the message, where it was caught) of a re-raised worker error."""
    found = _WORKER.match(text)
    if found is None:
        return None
    name, trace = found["type"], found["trace"]
    # the last exception line of the formatted traceback: `[module.]Type: message` at column 0
    lines = list(re.finditer(rf"^((?:[\w.]+\.)?{name})(?::[ ]?|$)", trace, flags=re.MULTILINE))
    if not lines:
        return None
    last = lines[-1]
    return last[1], trace[last.end() :].strip(), found["where"]


def unwrap_worker_error(text: str) -> str:
    """The original message of an error that torch re-raised from a DataLoader worker.

    ``Caught BadSampleError in DataLoader worker process 0.`` followed by ``Original Traceback
    ...`` becomes the message of the ``BadSampleError`` that the worker raised (the last line
    of that traceback, with the lines of the message after it); any other text is returned as
    it is.
    With ``CMPT_DEBUG`` the worker is named too (and the traceback is printed anyway).
    """
    origin = _worker_origin(text)
    if origin is None:
        return text
    _, message, where = origin
    return f"{message} ({where})" if debug_enabled() else message


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is the user's to fix.

    A :class:`UserInputError`, also one that torch re-raised from a DataLoader worker as a
    ``RuntimeError`` (when its type takes more arguments than a message; the original type,
    named in the text, decides), and an error decoding the contents of a file on disk (a
    ``JSONDecodeError``, ``UnicodeDecodeError``, CSV or YAML error that no reader of the package
    turned into one of its own: a cut or edited file; :func:`describe` names it).
    """
    if isinstance(error, UserInputError):
        return True
    if isinstance(error, _DECODE_ERRORS) and _file_of(error) is not None:
        return True
    origin = _worker_origin(str(error)) if isinstance(error, RuntimeError) else None
    if origin is None:
        return False
    module, _, name = origin[0].rpartition(".")
    found = getattr(sys.modules.get(module), name, None) if module else None  # no new imports
    return isinstance(found, type) and issubclass(found, UserInputError)


def _meaningful(text: str) -> bool:
    """Whether a message says something (words), unlike ``1198`` or a KeyError's ``'label'``."""
    text = text.strip()
    return " " in text and re.search(r"[A-Za-z]{3,}", text) is not None


#: Errors of reading a file's contents, whose message gives the position but not the file.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    json.JSONDecodeError,
    UnicodeError,
    csv.Error,
    yaml.YAMLError,
)


def _frames(traceback: TracebackType | None) -> Iterator[dict[str, Any]]:
    """The local variables of a traceback's frames, innermost first."""
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame.f_locals)
        traceback = traceback.tb_next
    yield from reversed(frames)


#: The largest file whose contents are compared with a decoding error's document.
_COMPARED_BYTES = 64 * 2**20


def _decoded_from(error: BaseException, path: Path) -> bool:
    """Whether ``error`` came from decoding the contents of the file at ``path``.

    A ``JSONDecodeError`` holds the document and a ``UnicodeDecodeError`` the bytes: they must
    be the file's (or a part of it: readers decode in chunks). CSV and YAML errors hold
    neither; for them the path of the frame is taken on trust.
    """
    if not path.is_file():
        return False
    document = getattr(error, "doc", None) if isinstance(error, json.JSONDecodeError) else None
    if isinstance(error, UnicodeDecodeError):
        document = bytes(error.object)
    if document is None:
        return True
    if path.stat().st_size > _COMPARED_BYTES:
        return False
    data = path.read_bytes()
    if isinstance(document, str):
        return document in data.decode("utf-8", errors="replace")
    return bool(document) and document in data


def _file_of(error: BaseException) -> str | None:
    """The file a decoding error was reading: a local path of the innermost frame holding one."""
    mark = getattr(error, "problem_mark", None)  # a YAML error read from a named stream
    name = getattr(mark, "name", None)
    if isinstance(name, str) and Path(name).is_file():
        return name
    for local in _frames(error.__traceback__):
        for value in local.values():
            if isinstance(value, os.PathLike):
                path = Path(os.fspath(value))
                if _decoded_from(error, path):
                    return str(path)
    return None


def _with_file(chain: Sequence[BaseException], reason: str) -> str:
    """``reason`` naming the file that a decoding error in ``chain`` was reading."""
    for error in chain:
        if isinstance(error, _DECODE_ERRORS):
            file = _file_of(error)
            if file is not None and file not in reason and Path(file).name not in reason:
                return f"{file}: {reason}"
            break
    return reason


def _plain(chain: Sequence[BaseException]) -> str:
    """The first message of ``chain`` that says something, with its type when none does."""
    for error in chain:
        text = unwrap_worker_error(str(error))
        if _meaningful(text):
            return text
    error = chain[-1]
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def describe(error: BaseException) -> str:
    """The one message for ``error``: never a bare number, and naming the file it was reading.

    The message of the outermost :class:`UserInputError` of its chain (which says what is
    wrong and how to fix it), without torch's DataLoader-worker wrapping; else the first
    message of the chain that says something (``KeyError: 'x'`` when none does), with the file
    that a ``JSONDecodeError`` or ``UnicodeDecodeError`` was reading.
    """
    chain = _chain(error)
    own = next((e for e in chain if isinstance(e, UserInputError)), None)
    if own is not None:
        return unwrap_worker_error(str(own))
    return _with_file(chain, _plain(chain))


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
    chain = [] if isinstance(error, str) else _chain(error)
    texts = [error] if isinstance(error, str) else [str(cause) for cause in chain]
    # the outermost error that is the user's to fix
    own = next((cause for cause in chain if isinstance(cause, UserInputError)), None)
    text = "\n".join(texts)
    if own is not None:  # an error of ours says what is wrong and how to fix it, in its words
        reason = unwrap_worker_error(str(own))
    else:
        reason = _reason(texts[-1] if len(texts) > 1 else text)
        if chain and not _meaningful(reason):  # `1198`: not a message
            reason = _plain(chain)
        reason = _with_file(chain, reason)
    if own is None and any(isinstance(cause, _DECODE_ERRORS) for cause in chain):
        return reason  # about a file's contents, not a setting (its numbers are positions)
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
        text = suggest(message, parser) or condense(message)
        print_user_error(parser.prog.replace(" [options]", ""), text)
        sys.exit(2)

    def parse_args(  # type: ignore[override]  # as jsonargparse's own
        self, args: Sequence[str] | None = None, *more: Any, **kwargs: Any
    ) -> Namespace:
        """Parse ``args`` (None: the command line), remembering them for error messages.

        An unknown key is reported with the config file and line it is in (see
        :func:`~cmpt_lightning.cli_suggest.suggest`).
        """
        remember_tokens(args)
        return super().parse_args(args, *more, **kwargs)
