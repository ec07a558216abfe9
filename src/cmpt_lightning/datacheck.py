"""``cmpt data check <family> --root DIR``: validate a download before training on it.

Reads every split the way the data modules do, and reports the layout, the samples per split
against the official sizes (a different count is a warning: subsets are legitimate), and every
bad sample (unreadable image, empty text, unknown label), naming the file. Exits with 1 when
there are errors, 0 otherwise.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .datasets import csv as tables
from .datasets import food101, hateful_memes, mmimdb
from .datasets.checks import BadSample, ImageCheck, find_bad_samples, parse_choice
from .datasets.errors import DatasetNotFoundError
from .datasets.records import Record, RecordDataset
from .tasks import Task

__all__ = ["FAMILIES", "CheckReport", "SplitReport", "data_check", "main"]


@dataclass
class SplitReport:
    """What was found in one split.

    Attributes:
        split: the split's name.
        file: the file it was read from.
        count: its samples.
        official: the official count (None if there is none).
        bad: its bad samples.
        note: a warning about the split as a whole (e.g. it has no labels).
    """

    split: str
    file: str
    count: int
    official: int | None = None
    bad: list[BadSample] = field(default_factory=list)
    note: str = ""

    @property
    def warning(self) -> str:
        """The split's warning: its note, or a count that differs from the official one."""
        if self.note:
            return self.note
        if self.official is not None and self.count != self.official:
            return f"{self.count:,} samples, the official split has {self.official:,}"
        return ""


@dataclass
class CheckReport:
    """What was found in a dataset: one report per split, and notes about the whole."""

    splits: list[SplitReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    def add(
        self,
        split: str,
        file: str | Path,
        records: Sequence[Record],
        bad: list[BadSample],
        official: int | None = None,
        note: str = "",
    ) -> None:
        """Add a split's findings."""
        self.splits.append(SplitReport(split, str(file), len(records), official, bad, note))


def _bad(
    records: Sequence[Record],
    family: type[RecordDataset],
    image_check: ImageCheck,
    threads: int | None,
) -> list[BadSample]:
    return find_bad_samples(
        records,
        requires_image=family.requires_image,
        requires_text=family.requires_text,
        image_check=image_check,
        threads=threads,
    )


def check_food101(
    root: Path,
    image_check: ImageCheck,
    check_threads: int | None = None,
    text_source: str = "auto",
    class_index: str | None = None,
) -> CheckReport:
    """Check UPMC Food-101 (train and test)."""
    report = CheckReport()
    classes = food101.food101_classes(root, class_index)
    if len(classes) != food101.OFFICIAL_CLASSES:
        full = food101.OFFICIAL_CLASSES
        report.warnings.append(f"{len(classes)} classes, the full dataset has {full}")
    source = parse_choice(food101.TextSource, text_source, "text_source")
    for split in ("train", "test"):
        records = food101.read_food101(root, split, classes, source)
        bad = _bad(records, food101.Food101Dataset, image_check, check_threads)
        official = food101.OFFICIAL_SIZES[split]
        report.add(split, f"images/{split}", records, bad, official)
        on_disk = {p.stem for p in (root / "images" / split).rglob("*") if p.is_file()}
        unlisted = len(on_disk - {r.id for r in records})
        if unlisted:
            report.warnings.append(f"{split}: {unlisted} image file(s) have no text (not used)")
    return report


def check_mmimdb(
    root: Path,
    image_check: ImageCheck,
    check_threads: int | None = None,
    text_mode: str = "outline",
) -> CheckReport:
    """Check MM-IMDb (train, dev and test of split.json)."""
    report = CheckReport()
    mode = parse_choice(mmimdb.TextMode, text_mode, "text_mode")
    for split in ("train", "dev", "test"):
        records = mmimdb.read_mmimdb(root, split, mode)
        bad = _bad(records, mmimdb.MMIMDbDataset, image_check, check_threads)
        official = mmimdb.OFFICIAL_SIZES[split] if mode is mmimdb.TextMode.OUTLINE else None
        report.add(split, "split.json", records, bad, official)
    return report


def check_hateful_memes(
    root: Path, image_check: ImageCheck, check_threads: int | None = None
) -> CheckReport:
    """Check Hateful Memes (every split file present)."""
    report = CheckReport()
    base = hateful_memes.find_hateful_memes(root)
    for split in hateful_memes.MemeSplit:
        try:
            path = hateful_memes.split_file(base, split)
        except DatasetNotFoundError:
            report.warnings.append(f"{split.value}: no file ({split.value}.jsonl)")
            continue
        note = ""
        try:
            records = hateful_memes.read_hateful_memes(root, split)
        except hateful_memes.UnlabelledSplitError:
            records = hateful_memes.read_hateful_memes(root, split, labelled=False)
            note = "no labels (the challenge's hidden test set): usable for predict only"
        bad = _bad(records, hateful_memes.HatefulMemesDataset, image_check, check_threads)
        official = hateful_memes.OFFICIAL_SIZES[split.value]
        report.add(split.value, path.name, records, bad, official, note)
    return report


def check_csv(
    root: Path,
    image_check: ImageCheck,
    check_threads: int | None = None,
    data_file: str | None = None,
    train_file: str | None = None,
    val_file: str | None = None,
    test_file: str | None = None,
    predict_file: str | None = None,
    task: str = "multiclass",
    classes: list[str] | None = None,
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    id_column: str = "id",
    split_column: str = "split",
    label_separator: str = "|",
) -> CheckReport:
    """Check your own tables (the options of ``MultimodalCSVDataModule``)."""
    report = CheckReport()
    kind = parse_choice(Task, task, "task")
    columns = tables.Columns(image_column, text_column, label_column, id_column, split_column)
    sources: list[tuple[str, str, list[str] | None]] = []
    if data_file is not None:
        present = tables.table_splits(root, data_file, columns)
        if present is None:
            sources.append(("train", data_file, None))
        else:
            sources += [(s, data_file, [s]) for s in ("train", "val", "test") if s in present]
    files = (("train", train_file), ("val", val_file), ("test", test_file))
    sources += [(split, file, None) for split, file in files if file]
    if not sources and predict_file is None:
        msg = "give --data_file, or --train_file (and --val_file, --test_file), or --predict_file"
        raise ValueError(msg)
    if classes is None and sources:
        split, file, splits = next((s for s in sources if s[0] == "train"), sources[0])
        labels = tables.table_labels(root, file, columns, splits)
        classes = tables.infer_classes(labels, kind, label_separator)
        report.info.append(f"{len(classes)} classes, from the {split} labels: {classes[:20]}")
    for split, file, splits in sources:
        records = tables.read_records(
            root,
            file,
            classes=classes or [],
            task=kind,
            columns=columns,
            splits=splits,
            label_separator=label_separator,
        )
        bad = _bad(records, tables.MultimodalCSVDataset, image_check, check_threads)
        report.add(split, file, records, bad)
    if predict_file is not None:
        records = tables.read_records(
            root, predict_file, classes=classes or [], columns=columns, labelled=False
        )
        bad = _bad(records, tables.MultimodalCSVDataset, image_check, check_threads)
        neither = [b for b in bad if b.reason == "neither image nor text"]
        if neither:
            ids = [b.id for b in neither][:20]
            report.warnings.append(f"predict: rows {ids} have no image and no text: not predicted")
        report.add("predict", predict_file, records, [b for b in bad if b not in neither])
    return report


#: The families ``cmpt data check`` knows, and their checks.
FAMILIES: dict[str, Callable[..., CheckReport]] = {
    "food101": check_food101,
    "mmimdb": check_mmimdb,
    "hateful_memes": check_hateful_memes,
    "csv": check_csv,
}


def _print_report(console: Console, family: str, root: Path, report: CheckReport) -> int:
    table = Table(title=f"{family} at {root}")
    for name in ("split", "file", "samples", "official", "bad", "status"):
        numeric = name in ("samples", "official", "bad")
        table.add_column(name, justify="right" if numeric else "left")
    for s in report.splits:
        bad = len({b.index for b in s.bad})
        status = "[red]error[/red]" if bad else "[green]ok[/green]"
        if s.warning and not bad:
            status = "[yellow]warning[/yellow]"
        official = "-" if s.official is None else f"{s.official:,}"
        table.add_row(s.split, s.file, f"{s.count:,}", official, str(bad), status)
    console.print(table)
    for line in report.info:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    warnings = report.warnings + [f"{s.split}: {s.warning}" for s in report.splits if s.warning]
    for warning in warnings:
        line = f"warning: {warning}"
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
    problems = [(s.split, b) for s in report.splits for b in s.bad]
    if problems:
        console.print(f"{len(problems)} problem(s):", style="red bold", markup=False)
        for split, b in problems:
            line = f"{split}: {b.file}: {b.reason} (sample {b.id!r})"
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    errors = sum(len({b.index for b in s.bad}) for s in report.splits)
    summary = f"{errors} bad sample(s), {len(warnings)} warning(s)"
    console.print(summary, style="red bold" if errors else "green bold", markup=False)
    return 1 if errors else 0


def _option_error(family: str, options: dict[str, Any]) -> str | None:
    """Why ``options`` do not fit ``family``'s check, or None if they do."""
    if family not in FAMILIES:
        return f"unknown dataset family {family!r}; choose one of {', '.join(FAMILIES)}"
    accepted = set(inspect.signature(FAMILIES[family]).parameters) - {"root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        return f"option(s) {unknown} do not apply to {family}; its options: {sorted(accepted)}"
    return None


def data_check(family: str, root: str, **options: Any) -> int:
    """Check the dataset ``family`` at ``root``; print a summary table and every problem.

    Args:
        family: ``food101``, ``mmimdb``, ``hateful_memes`` or ``csv``.
        root: the dataset's root folder.
        **options: ``image_check`` (``none``, ``exists``, ``verify``, ``decode``; default
            ``verify``), ``check_threads``, and the family's own reader options (Food-101:
            ``text_source``, ``class_index``; MM-IMDb: ``text_mode``; CSV: the file and column
            options of ``MultimodalCSVDataModule``).

    Returns:
        The exit code: 1 if the data is missing or has bad samples, else 0.

    Raises:
        ValueError: for an unknown family, or options that do not apply to it.
    """
    error = _option_error(family, options)
    if error is not None:
        raise ValueError(error)
    image_check = options.get("image_check", ImageCheck.VERIFY)
    options["image_check"] = parse_choice(ImageCheck, image_check, "image_check")
    path = Path(root).expanduser()
    console = Console()
    try:
        report = FAMILIES[family](path, **options)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"error: {err}", style="red", markup=False, highlight=False, soft_wrap=True)
        return 1
    return _print_report(console, family, path, report)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmpt data check",
        description="Validate a dataset download: layout, samples per split, unreadable images, "
        "empty texts and unknown labels. Exits with 1 on errors.",
    )
    parser.add_argument("family", choices=list(FAMILIES), help="the dataset family")
    parser.add_argument("--root", required=True, help="the dataset's root folder")
    parser.add_argument(
        "--image_check",
        choices=[c.value for c in ImageCheck],
        default="verify",
        help="how thoroughly to check images (decode also finds truncated files)",
    )
    parser.add_argument("--check_threads", type=int, help="threads of the image check")
    food = parser.add_argument_group("food101")
    food.add_argument("--text_source", choices=[c.value for c in food101.TextSource])
    food.add_argument("--class_index", help="JSON {class: index} file")
    imdb = parser.add_argument_group("mmimdb")
    imdb.add_argument("--text_mode", choices=[c.value for c in mmimdb.TextMode])
    own = parser.add_argument_group("csv (the options of MultimodalCSVDataModule)")
    for name in ("data_file", "train_file", "val_file", "test_file", "predict_file"):
        own.add_argument(f"--{name}")
    own.add_argument("--task", choices=[t.value for t in Task])
    own.add_argument("--classes", nargs="+", help="class names in label order")
    columns = ("image_column", "text_column", "label_column", "id_column", "split_column")
    for name in (*columns, "label_separator"):
        own.add_argument(f"--{name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``[data check] <family> --root DIR [options]``; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["data", "check"]:
        args = args[2:]
    elif args[:1] == ["check"]:
        args = args[1:]
    parser = _parser()
    namespace = vars(parser.parse_args(args))
    family, root = namespace.pop("family"), namespace.pop("root")
    options = {key: value for key, value in namespace.items() if value is not None}
    error = _option_error(family, options)
    if error is not None:
        parser.error(error)
    return data_check(family, root, **options)
