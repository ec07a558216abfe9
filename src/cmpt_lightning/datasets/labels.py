"""Label cells of your own tables: class names, integer classes and lists of them (multilabel).

A cell holds a class name, an integer class index, or for a multilabel task a list of either (a
JSON list ``["a", "b"]`` in a CSV cell or a real list in JSONL, or names joined by a separator).
:func:`infer_classes` reads the classes off the training labels; :func:`parse_label` turns a
cell into the class index (or indices) of :class:`~cmpt_lightning.datasets.records.Record`.

A label that is not there is never a class: an empty or whitespace-only cell, a JSON ``null``,
a float NaN (JSON ``NaN``) or the text ``nan`` (how a NaN reads once written to a CSV) is a
missing label, which :func:`infer_classes` skips and :func:`parse_label` reports, so that the
row becomes a bad sample named by its file and line (:func:`missing_label` says why).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..tasks import Task
from .errors import DataValueError

__all__ = [
    "class_key",
    "infer_classes",
    "is_blank",
    "label_tokens",
    "missing_label",
    "parse_label",
]


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
