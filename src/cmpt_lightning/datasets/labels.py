"""Label cells of your own tables: class names, integer classes and lists of them (multilabel).

A cell holds a class name, an integer class index, or for a multilabel task a list of either (a
JSON list ``["a", "b"]`` in a CSV cell or a real list in JSONL, or names joined by a separator).
:func:`infer_classes` reads the classes off the training labels; :func:`parse_label` turns a
cell into the class index (or indices) of :class:`~cmpt_lightning.datasets.records.Record`.

A label that is not there is never a class: an empty or whitespace-only cell, a JSON ``null``,
a float NaN (JSON ``NaN``) or the text ``nan`` (how a NaN reads once written to a CSV) is a
missing label, which :func:`infer_classes` skips and :func:`parse_label` reports, so that the
row becomes a bad sample named by its file and line (:func:`missing_label` says why).

A label is a class name (a string) or an integer class index (``0``, ``1``, ...), one kind per
table; for a multilabel task the same holds for each element of a list.
:func:`check_label_kinds` refuses anything else (a boolean, a float, a JSON object, a list in a
single-label task, a negative index) and a table mixing names and indices, naming the file,
the line and the value, instead of letting ``true`` or ``{"a": 1}`` become a class of its own.
A CSV cell is always text, so a CSV's labels are names (``3`` reads as the name ``"3"``, which
is also class index 3 when every label is a number).

:func:`class_counts` and :func:`rare_class_report` find the classes seen in fewer training rows
than a minimum (a typo such as ``bird`` among ``cat`` and ``dog`` becomes a class of one row);
:class:`RareClasses` says whether that is ignored, a warning or an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..choices import Choice
from ..tasks import Task
from .errors import DataValueError, LabelTypeError

__all__ = [
    "ClassCount",
    "RareClasses",
    "check_label_kinds",
    "class_counts",
    "class_key",
    "infer_classes",
    "is_blank",
    "label_tokens",
    "missing_label",
    "parse_label",
    "rare_class_report",
]

#: What a label may be, for messages.
_LABEL_IS = (
    "a label is a class name (a string) or an integer class index (0, 1, ...), one kind per table"
)


def is_blank(value: Any) -> bool:
    """A cell with nothing in it: None, a string of whitespace, or a float NaN (JSON ``NaN``)."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and not value.strip())


def missing_label(value: Any, what: str = "label") -> str | None:
    """Why ``value`` is no label at all, or None if it is one (known or not).

    Args:
        value: a label cell, or one label of a list.
        what: what the value is, for the message (``label``, ``class``, ``genre``).

    Returns:
        ``missing label`` (None or an empty cell), ``missing label (whitespace only: '  ')``,
        ``label is nan (a missing value, not a label)`` (a float NaN or infinity, or the text
        ``nan`` as a NaN reads once written to a CSV), or None.
    """
    if value is None or value == "":
        return f"missing {what}"
    if isinstance(value, str) and not value.strip():
        return f"missing {what} (whitespace only: {value!r})"
    nan = value.strip().lower() == "nan" if isinstance(value, str) else False
    if nan or (isinstance(value, float) and not math.isfinite(value)):
        return f"{what} is {value!r} (a missing value, not a {what})"
    return None


def _int_like(token: Any) -> bool:
    if isinstance(token, bool):
        return False
    if isinstance(token, int):
        return token >= 0
    if isinstance(token, float):
        return token.is_integer() and token >= 0
    return isinstance(token, str) and token.strip().isdigit()


def class_key(token: Any) -> str:
    """The class name a label token stands for (``3.0`` -> ``"3"``, surrounding blanks cut)."""
    if isinstance(token, float) and token.is_integer():
        token = int(token)
    return str(token).strip()


def label_tokens(value: Any, task: Task, separator: str) -> list[Any] | None:
    """The class tokens of a label cell (None if the cell is empty)."""
    if is_blank(value):
        return None
    if task is not Task.MULTILABEL:
        return [value]
    if isinstance(value, list):
        return value
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return [t.strip() for t in text.split(separator) if t.strip()] if separator else [text]


def infer_classes(labels: Iterable[Any], task: Task | str, separator: str = "|") -> list[str]:
    """Class names from the label cells of the training rows.

    Integer labels give ``["0", "1", ..., str(max)]``; names give their sorted set (for a
    binary task the second name is the positive class: pass ``classes`` to choose). Missing
    labels (empty, NaN, ``nan``: see :func:`missing_label`) give no class; the rows holding
    them are bad samples when they are read.
    """
    task = Task(task)
    tokens = [t for value in labels for t in (label_tokens(value, task, separator) or [])]
    tokens = [t for t in tokens if missing_label(t) is None]  # NaN and blanks are no class
    if not tokens:
        msg = "no labels found in the training rows; check label_column, or pass classes"
        raise DataValueError(msg)
    if all(_int_like(t) for t in tokens):
        top = max(int(class_key(t)) for t in tokens)
        if task is Task.BINARY and top > 1:
            msg = f"binary labels must be 0 or 1, found {top}; use task: multiclass"
            raise DataValueError(msg)
        classes = [str(i) for i in range(max(top + 1, 2 if task is not Task.MULTILABEL else 1))]
    else:
        classes = sorted({class_key(t) for t in tokens})
    if task is Task.BINARY and len(classes) != 2:
        msg = f"a binary task needs 2 classes, found {len(classes)}: {classes[:10]}"
        raise DataValueError(msg)
    if task is Task.MULTICLASS and len(classes) < 2:
        msg = f"a multiclass task needs at least 2 classes, found {classes}"
        raise DataValueError(msg)
    return classes


def parse_label(
    value: Any, index: Mapping[str, int], task: Task, separator: str
) -> tuple[int | tuple[int, ...] | None, list[str]]:
    """The class index (sorted indices, multilabel) of a label cell, and its problems.

    Args:
        value: the cell.
        index: class name -> class index.
        task: the task (multilabel cells may hold several classes).
        separator: separator of several labels in one CSV cell (multilabel).

    Returns:
        The label (None if it is missing or unknown) and what is wrong with the cell.
    """
    tokens = label_tokens(value, task, separator)
    if tokens is None:
        return None, [missing_label(value) or "missing label"]
    missing = [reason for reason in map(missing_label, tokens) if reason is not None]
    if missing:
        return None, missing
    found, unknown = [], []
    for token in tokens:
        key = class_key(token)
        if key in index:
            found.append(index[key])
        elif _int_like(token) and int(key) < len(index):
            found.append(int(key))
        else:
            unknown.append(token)
    if unknown:
        return None, [f"unknown label {u!r} (classes: {list(index)[:10]})" for u in unknown]
    if task is Task.MULTILABEL:
        return tuple(sorted(set(found))), []
    return found[0], []


def _shown(value: Any) -> str:
    """``value`` as the file has it (JSON spelling: ``true``, ``3.5``, ``{"a": 1}``), cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _token_kind(token: Any, task: Task) -> tuple[str | None, str]:
    """The kind of a label token and, if it is no label, why.

    ``"index"`` (an integer), ``"name"`` (a string), ``"digits"`` (a string of digits, which
    is the same class read as a name or as an index), or None with the reason.

    A missing label (None, blank, NaN, ``nan``) is ``(None, "")``: it is reported as a bad
    sample by :func:`parse_label`, not here.
    """
    if missing_label(token) is not None:
        return None, ""
    if isinstance(token, bool):
        return None, 'a boolean; write the class as a name ("yes") or an index (1)'
    if isinstance(token, int):
        if token < 0:
            return None, "a negative number; a class index is 0 or more"
        return "index", ""
    if isinstance(token, float):
        return None, "a float; a class index is an integer (write 3, not 3.0)"
    if isinstance(token, str):
        return ("digits" if token.strip().isdigit() else "name"), ""
    if isinstance(token, dict):
        return None, "a JSON object; write the class name or index itself"
    if isinstance(token, list):
        if task is Task.MULTILABEL:
            return None, "a list inside a list; a multilabel cell is one flat list of classes"
        return None, "a list; a list of classes needs task: multilabel"
    return None, f"a {type(token).__name__}"


def check_label_kinds(
    file: str,
    cells: Iterable[tuple[int, Any]],
    task: Task | str,
    separator: str = "|",
    unit: str = "line",
) -> None:
    """Refuse label cells that are no class name or index, and tables mixing the two kinds.

    Args:
        file: the table, for messages.
        cells: (line, label cell) of each row.
        task: the task (a multilabel cell holds a list; each element is checked).
        separator: separator of several labels in one CSV cell (multilabel).
        unit: what the numbers count, for messages (``line``; ``row`` for a JSON list).

    Names and indices mix when one label is an integer and another a string that is not a
    number (``"cat"`` and ``3``); a string of digits (``"3"``, as every CSV cell is text) goes
    with either, since it is the same class both ways.

    Raises:
        LabelTypeError: naming the file, the line and the value of the first label that is a
            boolean, a float, an object, a nested list, a negative number or (single-label) a
            list; or the first line of each kind when names and indices are mixed.
    """
    task = Task(task)
    first: dict[str, tuple[int, Any]] = {}
    for line, cell in cells:
        if isinstance(cell, list) and task is Task.MULTILABEL:
            tokens: list[Any] = cell
        elif isinstance(cell, str):
            tokens = label_tokens(cell, task, separator) or []
        else:  # a JSON scalar, object or (single-label) list: the label itself
            tokens = [cell]
        for token in tokens:
            kind, why = _token_kind(token, task)
            if kind is None:
                if why:
                    msg = f"{file!r} {unit} {line}: label {_shown(token)} is {why}; {_LABEL_IS}"
                    raise LabelTypeError(msg)
                continue
            first.setdefault(kind, (line, token))
    if "name" in first and "index" in first:
        (name_line, name), (index_line, index) = first["name"], first["index"]
        msg = (
            f"{file!r} mixes class names and integer class indices in its labels: the name "
            f"{_shown(name)} on {unit} {name_line}, the index {_shown(index)} on {unit} "
            f"{index_line}; {_LABEL_IS}: write every label as a class name, or every one as "
            "an integer index"
        )
        raise LabelTypeError(msg)


class RareClasses(Choice):
    """What to do about classes seen in fewer training rows than ``min_class_count``."""

    WARN = "warn"  # log a warning naming each class, its count, the file and its first line
    ERROR = "error"  # stop at setup with that message
    IGNORE = "ignore"  # say nothing


@dataclass(frozen=True)
class ClassCount:
    """How often a class occurs in the training rows.

    Attributes:
        name: the class name.
        count: the rows holding it (a multilabel row counts once for each of its classes).
        first: where it first occurs (``file:line``); empty if it never does.
    """

    name: str
    count: int
    first: str = ""


def class_counts(
    labels: Iterable[tuple[str, int | tuple[int, ...] | None]], classes: Sequence[str]
) -> list[ClassCount]:
    """The count and first occurrence of each class, in class order.

    Args:
        labels: (where, label) of each training row: its ``file:line`` and its class index,
            indices (multilabel) or None (a bad sample, not counted).
        classes: the class names in label order.
    """
    counts = [0] * len(classes)
    first = [""] * len(classes)
    for where, label in labels:
        indices = label if isinstance(label, tuple) else () if label is None else (label,)
        for index in set(indices):
            if 0 <= index < len(classes):
                counts[index] += 1
                first[index] = first[index] or where
    return [ClassCount(n, c, f) for n, c, f in zip(classes, counts, first, strict=True)]


def rare_class_report(counts: Sequence[ClassCount], minimum: int) -> str | None:
    """A message naming the classes of ``counts`` seen fewer than ``minimum`` times, or None.

    Each class is named with its count and the ``file:line`` of its first row (a class that no
    training row holds says so), followed by the settings that change the check.
    """
    rare = [c for c in counts if c.count < minimum]
    if not rare:
        return None
    shown = [
        f"{c.name!r} ({c.count} row{'s' * (c.count != 1)}, first at {c.first})"
        if c.count
        else f"{c.name!r} (no training row)"
        for c in rare[:20]
    ]
    more = f" and {len(rare) - 20} more" if len(rare) > 20 else ""
    return (
        f"{len(rare)} class(es) seen in fewer than {minimum} training rows (min_class_count): "
        f"{'; '.join(shown)}{more}. A typo in a label becomes a class of its own: fix the "
        "label, or pass classes (a label outside them is then a bad sample naming its line). "
        "rare_classes: error makes this an error, rare_classes: ignore silences it, and a "
        "lower min_class_count allows smaller classes"
    )
