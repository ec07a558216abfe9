"""Reading tables: CSV, TSV, JSONL and JSON lists of objects, each row with its line number.

Shared by the readers of your own tables (:mod:`~cmpt_lightning.datasets.csv`) and of the
JSONL annotations of Hateful Memes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["Row", "read_jsonl", "read_table"]

#: One row: its 1-based line number in the file, and its cells (None: not a JSON object).
Row = tuple[int, dict[str, Any] | None]


def read_jsonl(path: Path) -> list[Row]:
    """The non-blank lines of a JSON-lines file (a line that is not a JSON object gives None)."""
    rows: list[Row] = []
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                rows.append((number, obj if isinstance(obj, dict) else None))
    return rows


def read_table(path: Path) -> tuple[list[str], list[Row]]:
    """The column names and rows of a ``.csv``, ``.tsv``, ``.jsonl`` or ``.json`` table."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows: list[Row] = []
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    rows.append((reader.line_num, dict(row)))
            return list(reader.fieldnames or []), rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            msg = f"{str(path)!r} must hold a JSON list of objects, got {type(data).__name__}"
            raise ValueError(msg)
        rows = [(i + 1, obj if isinstance(obj, dict) else None) for i, obj in enumerate(data)]
    else:
        rows = read_jsonl(path)
    columns = list(dict.fromkeys(key for _, obj in rows if obj is not None for key in obj))
    return columns, rows
