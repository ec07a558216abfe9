"""Reading tables: CSV, TSV, JSONL and JSON lists of objects, each row with its line number.

Shared by the readers of your own tables (:mod:`~cmpt_lightning.datasets.csv`) and of the
JSONL annotations of Hateful Memes. A line that cannot be read as a row (a JSONL line that is
not valid JSON, or not an object) is kept as a :class:`Row` without cells that says why, so that
the reader reports it once, by its line, as a bad sample. A file that is not UTF-8, or a
``.json`` file that is not valid JSON, is refused naming the file and where (byte offset, line
and column); a byte order mark is fine, and so is a CSV cell of any length.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from .errors import DataDecodeError, DataValueError, TableSyntaxError

__all__ = ["Row", "large_csv_fields", "read_jsonl", "read_table", "read_text"]

#: The largest CSV field :func:`large_csv_fields` allows: what fits a C long on every platform
#: (``csv.field_size_limit`` refuses ``sys.maxsize`` where a C long has 32 bits, e.g. Windows).
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


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


@contextmanager
def large_csv_fields() -> Iterator[None]:
    """Let the ``csv`` module read fields of any length while the block runs.

    Its default limit, 131,072 characters, fails a long page text or caption with ``field
    larger than field limit``; the limit is process-wide, so the previous one is restored.
    """
    previous = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_text(path: Path) -> str:
    """The text of a UTF-8 file, without its byte order mark if it has one.

    Raises:
        DataDecodeError: if the file is not UTF-8, naming the byte offset, line and column of
            the first byte that does not decode, and how to save the file as UTF-8.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # err.start counts from after it
        before = err.object[: err.start]
        line = before.count(b"\n") + 1
        column = err.start - (before.rfind(b"\n") + 1) + 1
        byte = err.object[err.start : err.start + 1].hex()
        msg = (
            f"{str(path)!r} is not UTF-8 text: byte 0x{byte} at byte offset {err.start + bom} "
            f"(line {line}, column {column}) does not decode ({err.reason}). Save the file as "
            "UTF-8 (in Excel: 'CSV UTF-8'; a Latin-1 file converts with `iconv -f latin1 -t "
            f"utf-8 {path.name} > {path.stem}.utf8{path.suffix}`)"
        )
        raise DataDecodeError(msg) from err


def read_jsonl(path: Path) -> list[Row]:
    """The non-blank lines of a JSON-lines file (a line that is not a JSON object has no cells).

    Raises:
        DataDecodeError: if the file is not UTF-8 (a byte order mark is fine).
    """
    rows: list[Row] = []
    for number, line in enumerate(io.StringIO(read_text(path), newline=None), start=1):
        if line.strip():
            try:
                obj = json.loads(line.rstrip())  # columns as in the line
            except json.JSONDecodeError as err:
                problem = f"not a JSON object: {err.msg} at column {err.colno}"
                rows.append(Row(number, None, problem))
                continue
            rows.append(_row(number, obj))
    return rows


def _read_json(path: Path) -> Any:
    """The JSON value of a ``.json`` file, or an error naming its line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        msg = (
            f"{str(path)!r} is not valid JSON: {err.msg} at line {err.lineno}, column "
            f"{err.colno} (a trailing comma, a missing quote or bracket?); a .json table is "
            "one JSON list of objects"
        )
        raise TableSyntaxError(msg) from err


def read_table(path: Path) -> tuple[list[str], list[Row]]:
    """The column names and rows of a ``.csv``, ``.tsv``, ``.jsonl`` or ``.json`` table.

    Lines of whitespace only are not rows; a CSV line of separators only (``,,``) is a row of
    empty cells, as ``{}`` is in JSONL. The file must be UTF-8 (a byte order mark is fine); a
    CSV cell may be of any length.

    Raises:
        DataDecodeError: if the file is not UTF-8.
        TableSyntaxError: if a ``.json`` file is not valid JSON.
        DataValueError: if a ``.json`` file is not a list.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows: list[Row] = []
        text = io.StringIO(read_text(path), newline="")  # newlines inside quotes kept as is
        reader = csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ",")
        with large_csv_fields():
            try:
                for row in reader:
                    cells = [v for v in row.values() if v is not None]  # None: a cell it lacks
                    if len(cells) > 1 or any(isinstance(v, str) and v.strip() for v in cells):
                        rows.append(Row(reader.line_num, dict(row)))
            except csv.Error as err:  # e.g. a NUL byte
                msg = f"{str(path)!r} line {reader.line_num + 1} cannot be read as {suffix}: {err}"
                raise TableSyntaxError(msg) from err
            return list(reader.fieldnames or []), rows
    if suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, list):
            msg = f"{str(path)!r} must hold a JSON list of objects, got {type(data).__name__}"
            raise DataValueError(msg)
        rows = [_row(i + 1, obj) for i, obj in enumerate(data)]
    else:
        rows = read_jsonl(path)
    columns = list(dict.fromkeys(key for row in rows if row.cells is not None for key in row.cells))
    return columns, rows
