"""Tables that are refused with one message naming the file, and tables that now load (issue 20).

2. a label is a class name or an integer index, one kind per table (no ``true``, ``{...}``);
3. a CSV cell longer than the csv module's 131,072-character default loads;
5. a file that is not UTF-8 names the file, the byte and the fix; a JSON table with a byte
   order mark loads; a JSON syntax error names the file, line and column.
"""

import csv
import json

import pytest

from cmpt_lightning.datasets.csv import read_records, table_labels
from cmpt_lightning.datasets.errors import (
    DataDecodeError,
    LabelTypeError,
    TableSyntaxError,
)
from cmpt_lightning.datasets.labels import check_label_kinds, infer_classes
from cmpt_lightning.datasets.tables import read_table
from cmpt_lightning.errors import UserInputError

CLASSES = ["bird", "cat", "dog"]


def _jsonl(path, labels):
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(labels))
    )
    return path


# --- 2. labels: a class name or an integer index, one kind per table ------------------------------
@pytest.mark.parametrize(
    ("labels", "line", "value", "why"),
    [
        ([0, 1, True, False], 3, "true", "a boolean"),
        (["cat", {"name": "dog"}], 2, '{"name": "dog"}', "a JSON object"),
        ([0, 2.5], 2, "2.5", "a float"),
        ([1.0, 0], 1, "1.0", "a float"),
        (
            ["cat", ["dog", "bird"]],
            2,
            '["dog", "bird"]',
            "a list; a list of classes needs task: multilabel",
        ),
        ([0, -1], 2, "-1", "a negative number"),
    ],
)
def test_a_label_that_is_no_name_or_index_is_refused_by_line(tmp_path, labels, line, value, why):
    path = _jsonl(tmp_path / "t.jsonl", labels)
    for read in (
        lambda: table_labels(tmp_path, "t.jsonl"),  # inferring the classes
        lambda: read_records(tmp_path, "t.jsonl", classes=CLASSES),  # reading the rows
    ):
        with pytest.raises(LabelTypeError) as info:
            read()
        message = str(info.value)
        assert f"{str(path)!r} line {line}: label {value} is {why}" in message, message
        assert "a class name (a string) or an integer class index" in message
        assert isinstance(info.value, UserInputError) and isinstance(info.value, TypeError)


def test_names_and_indices_mixed_are_refused_naming_the_first_line_of_each(tmp_path):
    _jsonl(tmp_path / "t.jsonl", [0, 1, 1, "cat", 0, "dog"])
    with pytest.raises(LabelTypeError, match=r'the name "cat" on line 4, the index 0 on line 1'):
        table_labels(tmp_path, "t.jsonl")
    # a split the rows are read for does not hide the other splits' labels
    rows = [
        {"text": "a", "label": "cat", "split": "train"},
        {"text": "b", "label": 2, "split": "test"},
    ]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    with pytest.raises(LabelTypeError, match=r'the name "cat" on row 1, the index 2 on row 2'):
        read_records(tmp_path, "s.json", classes=CLASSES, splits=["test"])


def test_multilabel_elements_follow_the_same_rule(tmp_path):
    _jsonl(tmp_path / "m.jsonl", [["cat"], ["dog", True]])
    with pytest.raises(LabelTypeError, match=r"line 2: label true is a boolean"):
        read_records(tmp_path, "m.jsonl", classes=CLASSES, task="multilabel")
    _jsonl(tmp_path / "m.jsonl", [["cat", 0]])
    with pytest.raises(LabelTypeError, match=r'the name "cat" on line 1, the index 0 on line 1'):
        read_records(tmp_path, "m.jsonl", classes=CLASSES, task="multilabel")
    _jsonl(tmp_path / "m.jsonl", [[["cat"]]])
    with pytest.raises(LabelTypeError, match="a list inside a list"):
        read_records(tmp_path, "m.jsonl", classes=CLASSES, task="multilabel")


def test_good_tables_still_load(tmp_path):
    # integers, strings of digits with integers (the same classes), names; missing labels are
    # bad samples by their line, not a refusal of the table
    _jsonl(tmp_path / "i.jsonl", [0, "1", 2, None])
    labels = table_labels(tmp_path, "i.jsonl")
    assert infer_classes(labels, "multiclass") == ["0", "1", "2"]
    records = read_records(tmp_path, "i.jsonl", classes=["0", "1", "2"])
    assert [r.label for r in records] == [0, 1, 2, None]
    assert records[3].problems == ("missing label",)
    (tmp_path / "n.csv").write_text("text,label\na,cat\nb,3\nc,\n")  # CSV cells are names
    assert [r.label for r in read_records(tmp_path, "n.csv", classes=["3", "cat"])] == [1, 0, None]
    (tmp_path / "m.csv").write_text('text,label\na,"[0, 2]"\nb,1|2\n')
    multi = read_records(tmp_path, "m.csv", classes=CLASSES, task="multilabel")
    assert [r.label for r in multi] == [(0, 2), (1, 2)]


def test_check_label_kinds_lets_missing_labels_through():
    check_label_kinds(
        "x.jsonl", [(1, None), (2, float("nan")), (3, ""), (4, "nan"), (5, 3)], "multiclass"
    )


# --- 3. a CSV cell of any length -----------------------------------------------------------------
def test_a_csv_cell_longer_than_the_default_field_limit_loads(tmp_path):
    text = "word " * 40_000  # 200,000 characters
    (tmp_path / "t.csv").write_text(f'text,label\n"{text}",cat\nshort,dog\n')
    limit = csv.field_size_limit()
    (record, short) = read_records(tmp_path, "t.csv", classes=CLASSES)
    assert record.text == text and len(record.text) == 200_000 and short.label == 2
    assert csv.field_size_limit() == limit  # the process-wide limit is restored


# --- 5. encodings and JSON syntax ----------------------------------------------------------------
def test_a_latin1_table_names_the_file_the_byte_and_the_fix(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\nok,cat\ncrème brûlée,dog\n".encode("latin-1"))
    with pytest.raises(DataDecodeError) as info:
        read_records(tmp_path, "t.csv", classes=CLASSES)
    message = str(info.value)
    assert message.startswith(f"{str(path)!r} is not UTF-8 text: byte 0xe8 at byte offset 20")
    assert "(line 3, column 3)" in message and "Save the file as UTF-8" in message
    assert "iconv -f latin1 -t utf-8 t.csv" in message
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)
    bom = tmp_path / "b.jsonl"  # the offset counts the byte order mark
    bom.write_bytes(b"\xef\xbb\xbf" + '{"text": "\xe9", "label": "cat"}\n'.encode("latin-1"))
    with pytest.raises(DataDecodeError, match=r"byte 0xe9 at byte offset 13 \(line 1, column 11\)"):
        read_table(bom)


def test_a_json_table_with_a_byte_order_mark_loads(tmp_path):
    rows = [{"text": "a cat", "label": "cat"}, {"text": "a dog", "label": "dog"}]
    (tmp_path / "t.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    assert [r.label for r in read_records(tmp_path, "t.json", classes=CLASSES)] == [1, 2]


def test_a_json_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('[\n  {"text": "a", "label": "cat"},\n  {"text": "b", "label": "dog"},\n]\n')
    with pytest.raises(TableSyntaxError) as info:
        read_records(tmp_path, "t.json", classes=CLASSES)
    message = str(info.value)
    assert message.startswith(
        f"{str(path)!r} is not valid JSON: Expecting value at line 4, column 1"
    )
    assert "trailing comma" in message and isinstance(info.value, UserInputError)
