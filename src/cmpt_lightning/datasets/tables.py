"""Reading tables: CSV, TSV, JSONL and JSON lists of objects, each row with its line number.

Shared by the readers of your own tables (:mod:`~cmpt_lightning.datasets.csv`) and of the
JSONL annotations of Hateful Memes. A line that cannot be read as a row (a JSONL line that is
not valid JSON, or not an object) is kept as a :class:`Row` without cells that says why, so that
the reader reports it once, by its line, as a bad sample.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, NamedTuple

from .errors import DataValueError

__all__ = ["Row", "read_jsonl", "read_table"]


class Row(NamedTuple):
    """One row of a table.

    Attributes:
        line: its 1-based line number in the file (the position in the list, for JSON).
        cells: column name -> value; None if the line is not a row (see ``problem``).
        problem: why the line is not a row (``not a JSON object: <the JSON error>``).
    """

    line: int
    cells: dict[str, Any] | None
    problem: str = ""


#: The JSON names of the Python types :func:`json.loads` returns, for messages.
_JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _row(line: int, obj: Any) -> Row:
    if isinstance(obj, dict):
        return Row(line, obj)
    kind = _JSON_KINDS.get(type(obj), type(obj).__name__)
    return Row(line, None, f"not a JSON object but {kind}: {json.dumps(obj)[:40]}")


def read_jsonl(path: Path) -> list[Row]:
    """The non-blank lines of a JSON-lines file (a line that is not a JSON object has no cells)."""
    rows: list[Row] = []
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                try:
                    obj = json.loads(line.rstrip())  # columns as in the line
                except json.JSONDecodeError as err:
                    problem = f"not a JSON object: {err.msg} at column {err.colno}"
                    rows.append(Row(number, None, problem))
                    continue
                rows.append(_row(number, obj))
    return rows


def read_table(path: Path) -> tuple[list[str], list[Row]]:
    """The column names and rows of a ``.csv``, ``.tsv``, ``.jsonl`` or ``.json`` table.

    Lines of whitespace only are not rows; a CSV line of separators only (``,,``) is a row of
    empty cells, as ``{}`` is in JSONL.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows: list[Row] = []
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                cells = [v for v in row.values() if v is not None]  # None: a cell the line lacks
                if len(cells) > 1 or any(isinstance(v, str) and v.strip() for v in cells):
                    rows.append(Row(reader.line_num, dict(row)))
            return list(reader.fieldnames or []), rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            msg = f"{str(path)!r} must hold a JSON list of objects, got {type(data).__name__}"
            raise DataValueError(msg)
        rows = [_row(i + 1, obj) for i, obj in enumerate(data)]
    else:
        rows = read_jsonl(path)
    columns = list(dict.fromkeys(key for row in rows if row.cells is not None for key in row.cells))
    return columns, rows
