"""Data faults of issue 13, "Nothing lost, nothing silent": each one on a copy of a fake layout.

1. a NaN, empty or whitespace-only label is a bad sample at its ``file:line``, never a class;
2. an image path that leads outside the data root is a bad sample (unless allowed);
3. the tokenizer is handed at most what its context can use;
4. a malformed JSONL line is reported once, with its JSON error;
5. the errors are ``UserInputError`` as well as their built-in type.
"""

import json
import os
import pickle
import random
import shutil

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from cmpt_lightning.datamodules.registry import FAMILIES
from cmpt_lightning.datasets.base import TokenCache, cap_text
from cmpt_lightning.datasets.checks import find_bad_samples
from cmpt_lightning.datasets.csv import read_records, table_labels
from cmpt_lightning.datasets.errors import BadSampleError, DatasetNotFoundError
from cmpt_lightning.datasets.food101 import read_food101
from cmpt_lightning.datasets.hateful_memes import UnlabelledSplitError, read_hateful_memes
from cmpt_lightning.datasets.labels import infer_classes
from cmpt_lightning.datasets.mmimdb import read_mmimdb
from cmpt_lightning.datasets.records import Record, RecordDataset
from cmpt_lightning.errors import UserInputError

from .conftest import DATA

CLASSES = ["bird", "cat", "dog"]
NAN = "label is nan (a missing value, not a label)"
BROKEN = "not a JSON object: Expecting property name enclosed in double quotes at column {}"
FOOD = DATA / "food101" / "header"
MEMES = DATA / "hateful_memes" / "final"
IMDB = DATA / "mmimdb" / "raw"


def _copy(source, tmp_path, name="data"):
    return shutil.copytree(source, tmp_path / name)


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")


def _bad(report):
    return [b for split in report.splits for b in split.bad]


# --- 1. NaN, empty and whitespace-only labels ----------------------------------------------------
def test_missing_labels_of_tables_are_bad_samples_not_classes(tmp_path):
    root = _copy(DATA / "csv", tmp_path)
    _write_lines(
        root / "t.csv",
        ["image,text,label", ",a,bird", ",b,nan", ",c,   ", ",d,NaN", ",e,cat", ",f,dog", ",g,"],
    )
    labels = table_labels(root, "t.csv")
    assert infer_classes(labels, "multiclass") == CLASSES  # no class 'nan', '' or '   '
    records = read_records(root, "t.csv", classes=CLASSES)
    problems = {r.source.rpartition("/")[2]: r.problems for r in records if r.problems}
    assert problems == {
        "t.csv:3": (NAN.replace("nan", "'nan'", 1),),
        "t.csv:4": ("missing label (whitespace only: '   ')",),
        "t.csv:5": (NAN.replace("nan", "'NaN'", 1),),
        "t.csv:8": ("missing label",),
    }
    # JSONL: a real NaN, in a single-label cell and inside a multilabel list
    lines = [{"text": "x", "label": float("nan")}, {"text": "y", "label": ["cat", float("nan")]}]
    _write_lines(root / "t.jsonl", [json.dumps(line) for line in lines])
    _write_lines(root / "single.jsonl", [json.dumps(lines[0])])  # a list is no single label
    (single,) = read_records(root, "single.jsonl", classes=CLASSES)
    assert single.problems == (NAN,) and single.source.endswith("single.jsonl:1")
    multi = read_records(root, "t.jsonl", classes=CLASSES, task="multilabel")
    assert [r.problems for r in multi] == [(NAN,), (NAN,)]
    assert infer_classes([float("nan"), ["cat", float("nan"), ""], "dog"], "multilabel") == [
        "cat",
        "dog",
    ]


def test_missing_labels_are_named_by_file_and_line_at_setup(tmp_path):
    root = _copy(DATA / "csv", tmp_path)
    _write_lines(root / "t.csv", ["image,text,label", ",a,bird", ",b,nan", ",c,cat"])
    dm = FAMILIES["csv"](root=str(root), train_file="t.csv", val_fraction=0.0, image_check="none")
    assert dm.classes == ["bird", "cat"]
    with pytest.raises(BadSampleError, match=r"t\.csv:3: label is 'nan' \(a missing value"):
        dm.build_split("train")


def test_missing_labels_of_the_dataset_families(tmp_path):
    memes = _copy(MEMES, tmp_path, "memes")
    lines = (memes / "train.jsonl").read_text().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[1])
    first["label"], second["label"] = float("nan"), " "
    _write_lines(memes / "train.jsonl", [json.dumps(first), json.dumps(second), *lines[2:]])
    records = read_hateful_memes(memes, "train")
    assert records[0].problems == (f"{NAN} (expected 0 or 1)",)
    assert records[1].problems == ("missing label (whitespace only: ' ') (expected 0 or 1)",)
    assert records[1].source.endswith("train.jsonl:2")

    food = _copy(FOOD, tmp_path, "food")
    titles = food / "texts" / "train_titles.csv"
    rows = titles.read_text().splitlines()
    rows[1] = rows[1].rsplit(",", 1)[0] + ",nan"
    rows[2] = rows[2].rsplit(",", 1)[0] + ","
    _write_lines(titles, rows)
    records = read_food101(food, "train", ["apple_pie", "beef_tartare", "caesar_salad", "donuts"])
    assert [r.problems for r in records[:3]] == [
        ("class is 'nan' (a missing value, not a class)",),
        ("missing class",),
        (),
    ]
    assert records[1].label is None and records[1].source.endswith("train_titles.csv:3")

    imdb = _copy(IMDB, tmp_path, "imdb")
    movies = json.loads((imdb / "mmimdb" / "split.json").read_text())["train"]
    for movie, genres in zip(movies, (["Drama", float("nan")], [""]), strict=False):
        path = imdb / "mmimdb" / "dataset" / f"{movie}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "genres": genres}))
    records = read_mmimdb(imdb, "train")
    genre_nan = "genre is nan (a missing value, not a genre) in genres ['Drama', nan]"
    assert records[0].problems == (genre_nan,)
    assert records[1].problems == ("missing genre in genres ['']",) and not records[2].problems


# --- 2. image paths outside the data root ---------------------------------------------------------
@pytest.fixture
def outside(tmp_path):
    """An image file outside every data root of the test: what a hostile table points at."""
    path = tmp_path / "elsewhere" / "secret.png"
    path.parent.mkdir()
    shutil.copy(DATA / "csv" / "images" / "001.png", path)
    shutil.copy(path, path.with_name("hidden.png"))
    return path


def _escape_csv(root, outside):
    lines = ["image,text,label", "images/000.jpg,a,bird", "../elsewhere/secret.png,b,cat"]
    _write_lines(root / "t.csv", [*lines, f"{outside},c,cat"])
    options = {"train_file": "t.csv", "val_fraction": 0.0, "classes": ["bird", "cat"]}
    return options, ["t.csv:3", "t.csv:4"]


def _escape_memes(root, outside):
    lines = (root / "dev_seen.jsonl").read_text().splitlines()
    line = {**json.loads(lines[1]), "img": "../elsewhere/secret.png"}
    _write_lines(root / "dev_seen.jsonl", [lines[0], json.dumps(line), *lines[2:]])
    return {}, ["dev_seen.jsonl:2"]


def _escape_food(root, outside):
    titles = root / "texts" / "test_titles.csv"
    rows = titles.read_text().splitlines()
    rows.insert(2, f"{outside},a stolen image,apple_pie")
    rows.insert(3, "../../../../elsewhere/hidden.png,and again,apple_pie")
    _write_lines(titles, rows)
    return {}, ["test_titles.csv:3", "test_titles.csv:4"]


def _escape_imdb(root, outside):
    base = root / "mmimdb"
    movie = json.loads((base / "split.json").read_text())["test"][0]
    (base / "dataset" / f"{movie}.jpeg").unlink()
    (base / "dataset" / f"{movie}.jpeg").symlink_to(outside)  # a link that leads out of the root
    return {}, [f"{movie}.json"]


ESCAPES = {
    "csv": (DATA / "csv", _escape_csv),
    "hateful_memes": (MEMES, _escape_memes),
    "food101": (FOOD, _escape_food),
    "mmimdb": (IMDB, _escape_imdb),
}


@pytest.mark.parametrize("family", list(ESCAPES))
def test_image_paths_outside_the_root_are_refused_unless_allowed(family, tmp_path, outside):
    source, escape = ESCAPES[family]
    root = _copy(source, tmp_path)
    options, rows = escape(root, outside)
    report = FAMILIES[family](root=str(root), **options).inspect()
    refused = [b for b in _bad(report) if "elsewhere" in b.reason]
    assert sorted(b.file.rpartition("/")[2] for b in refused) == rows  # named by the row
    for bad in refused:
        assert "leads outside the data root" in bad.reason and "elsewhere" in bad.reason
        assert bad.reason.endswith("or set allow_outside_root: true to read images outside it")
    allowed = FAMILIES[family](root=str(root), allow_outside_root=True, **options).inspect()
    assert not [b for b in _bad(allowed) if "elsewhere" in b.reason + b.file]


def test_outside_images_are_never_opened_and_fail_setup(tmp_path, outside):
    root = _copy(DATA / "csv", tmp_path)
    options, _ = _escape_csv(root, outside)
    _write_lines(root / "t.csv", [*(root / "t.csv").read_text().splitlines(), "/no/such.png,d,cat"])
    records = read_records(root, "t.csv", classes=["bird", "cat"])
    bad = find_bad_samples(records, requires_image=False, requires_text=False, root=root)
    assert [b.reason.split(" leads")[0] for b in bad] == [
        "image path '" + str(root / "../elsewhere/secret.png") + "'",
        f"image path {str(outside)!r}",
        "image path '/no/such.png'",  # refused, not looked for: no 'does not exist'
    ]
    dm = FAMILIES["csv"](root=str(root), **options)
    with pytest.raises(BadSampleError, match=r"(?s)t\.csv:3: image path .*outside_root: true"):
        dm.build_split("train")


def test_allow_outside_root_reads_an_absolute_path(tmp_path, outside):
    root = _copy(DATA / "csv", tmp_path)
    options, _ = _escape_csv(root, outside)
    dm = FAMILIES["csv"](root=str(root), allow_outside_root=True, **options)
    dataset = dm.build_split("train")
    position = dataset.ids.index("2")  # the row of the absolute path
    assert dataset.records[position].image == outside
    assert dataset[position]["image_present"] and dataset[position]["image"].abs().sum() > 0


@pytest.mark.parametrize("family", list(ESCAPES))
def test_a_symlinked_root_keeps_working(family, tmp_path):
    real = _copy(ESCAPES[family][0], tmp_path, "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    options = {"data_file": "data.csv"} if family == "csv" else {}
    report = FAMILIES[family](root=str(link), **options).inspect()
    assert report.splits and _bad(report) == []


def test_a_link_inside_the_root_to_outside_is_refused(tmp_path, outside):
    root = _copy(DATA / "csv", tmp_path)
    (root / "images" / "000.jpg").unlink()
    os.symlink(outside, root / "images" / "000.jpg")
    bad = _bad(FAMILIES["csv"](root=str(root), data_file="data.csv").inspect())
    assert len(bad) == 1 and bad[0].file.endswith("data.csv:2")
    assert "through a symbolic link" in bad[0].reason


def test_mmimdb_ids_that_are_paths_read_no_file(tmp_path):
    root = _copy(IMDB, tmp_path)
    split = json.loads((root / "mmimdb" / "split.json").read_text())
    split["dev"][0] = "../../../elsewhere/secret"
    (root / "mmimdb" / "split.json").write_text(json.dumps(split))
    (record, *_) = read_mmimdb(root, "dev")
    assert record.image is None and record.text is None and not record.parsed
    assert record.problems == (
        "movie id '../../../elsewhere/secret' is not a name such as '0012345'; fix split.json",
    )
    assert len(find_bad_samples([record], image_check="none")) == 1


# --- 3. the tokenizer is handed what its context can use -----------------------------------------
class Spy:
    """A tokenizer of context 8 that records the texts it is handed."""

    context_length = 8

    def __init__(self):
        self.seen = []

    def __call__(self, texts):
        self.seen += texts
        return torch.zeros(len(texts), self.context_length, dtype=torch.long)


def test_a_huge_word_is_cut_before_tokenizing(preprocess):
    word, spaced = "x" * 50_000, "word " * 5_000
    spy = Spy()
    TokenCache(spy).add([word, spaced])
    assert spy.seen == [word[: 16 * 8], ("word " * 128).rstrip()]  # 16 x 8 and 64 x 8 chars
    records = [Record("a", None, word, 0, "t.csv:2")]
    dataset = RecordDataset(records, 2, False, preprocess[0], Spy(), preprocess[2])
    dataset.cache_tokens = False
    dataset[0]
    assert dataset.tokenizer.seen == [word[:128]]


def _normal_text(seed, chars):
    rng = random.Random(seed)
    words = ["the", "a", "photo", "of", "grilled", "salmon", "with", "lemon,", "served", "on",
             "rice.", "Best", "recipe:", "2", "cups", "(250g)", "https://example.com/food?id=42",
             "«gâteau»", "don't", "café", "\n", "   ", "internationalisation"]  # fmt: skip
    text = ""
    while len(text) < chars:
        text += rng.choice(words) + " "
    return text + "\n" * 3_000 + text  # a long run of whitespace in the middle too


@pytest.mark.parametrize("context", [77, 32])
def test_the_cap_keeps_the_tokens_of_long_normal_texts(context):
    tokenizer = SimpleTokenizer(context_length=context)
    text = _normal_text(context, 40_000)
    assert len(cap_text(text, context)) < len(text) // 5  # the cap applies
    assert torch.equal(TokenCache(tokenizer)[text], tokenizer([text])[0].long())


# --- 4. a malformed JSONL line: one message, with its line ---------------------------------------
def test_a_malformed_jsonl_line_is_reported_once(tmp_path):
    lines = ['{"text": "a", "label": "cat"}', "{broken", "[1, 2]", '{"text": "b", "label": "dog"}']
    _write_lines(tmp_path / "t.jsonl", lines)
    records = read_records(tmp_path, "t.jsonl", classes=CLASSES)
    bad = find_bad_samples(records, requires_image=False, requires_text=False, image_check="none")
    assert [(b.file.rpartition("/")[2], b.reason) for b in bad] == [
        ("t.jsonl:2", BROKEN.format(2)),
        ("t.jsonl:3", "not a JSON object but an array: [1, 2]"),
    ]
    # with a split column, a line that is not a row is reported too (it has no split)
    _write_lines(tmp_path / "s.jsonl", ['{"text": "a", "label": "cat", "split": "train"}', "{"])
    records = read_records(tmp_path, "s.jsonl", classes=CLASSES, splits=["train"])
    assert [r.problems for r in records] == [(), (BROKEN.format(2),)]


def test_a_malformed_meme_line_is_reported_once(tmp_path):
    root = _copy(MEMES, tmp_path)
    lines = (root / "train.jsonl").read_text().splitlines()
    _write_lines(root / "train.jsonl", [lines[0], '{"id": 7,', *lines[1:]])
    bad = find_bad_samples(read_hateful_memes(root, "train"), image_check="none")
    assert [(b.file.rpartition("/")[2], b.reason) for b in bad] == [
        ("train.jsonl:2", BROKEN.format(10))
    ]


# --- 5. the errors are the user's to fix --------------------------------------------------------
def test_errors_are_user_input_errors_and_pickle():
    missing = DatasetNotFoundError("X", "/r", "/r/a.csv", "<root>/a.csv", "download it")
    bad = BadSampleError("1 bad sample(s) ...")
    for error, builtin in ((missing, FileNotFoundError), (bad, ValueError)):
        copy = pickle.loads(pickle.dumps(error))
        assert isinstance(copy, UserInputError) and isinstance(copy, builtin)
        assert type(copy) is type(error) and str(copy) == str(error)
    assert pickle.loads(pickle.dumps(missing)).hint == "download it"
    assert issubclass(UnlabelledSplitError, UserInputError)
    assert issubclass(UnlabelledSplitError, ValueError)
