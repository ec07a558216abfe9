"""``cmpt data check <family> --root DIR``: validate a download before training on it.

Reads every split the way the family's data module does (``inspect()`` of the modules in
:data:`~cmpt_lightning.datamodules.registry.FAMILIES`), and reports the layout, the samples per
split against the official sizes (a different count is a warning: subsets are legitimate), and
every bad sample (unreadable image, empty text, unknown label), naming the file. Exits with 1
when there are errors, 0 otherwise. Each family's options are its data module's own constructor
arguments (``cmpt data check food101 --help`` lists them), so a new family needs nothing here.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from rich.console import Console
from rich.table import Table

from .cache_command import add_cache_command, run_cache
from .cli import Command, rename_flags, user_error
from .datamodules.base import CMPTDataModule
from .datamodules.registry import FAMILIES
from .datasets.checks import CheckReport
from .masks_command import add_masks_command, run_masks

__all__ = ["data_check", "data_command"]

#: Settings every data module shares (batches, masks, preprocessing): not a data check option.
SHARED = frozenset(inspect.signature(CMPTDataModule.__init__).parameters) - {"self"}
#: Settings of reading a cache instead of the files: not a data check option either.
NOT_CHECKED = SHARED | {"cache", "cache_order"}


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


def _options(family: str) -> set[str]:
    """The check options of ``family``: its data module's own constructor arguments."""
    if family not in FAMILIES:
        msg = f"unknown dataset family {family!r}; choose one of {', '.join(FAMILIES)}"
        raise ValueError(msg)
    names = set()
    for cls in FAMILIES[family].__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None and cls is not CMPTDataModule:
            params = inspect.signature(init).parameters.values()
            names |= {p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}
    return names - NOT_CHECKED - {"self"}


def data_check(family: str, root: str, **options: Any) -> int:
    """Check the dataset ``family`` at ``root``; print a summary table and every problem.

    Args:
        family: a name of :data:`~cmpt_lightning.datamodules.registry.FAMILIES` (``food101``,
            ``mmimdb``, ``hateful_memes``, ``csv``).
        root: the dataset's root folder.
        **options: the family's data module options (``image_check``, ``check_threads``,
            Food-101's ``text_source``, MM-IMDb's ``text_mode``, the CSV files and columns, ...).

    Returns:
        The exit code: 1 if the data is missing or has bad samples, else 0.

    Raises:
        ValueError: for an unknown family, or options that do not apply to it.
    """
    accepted = _options(family)
    unknown = sorted(set(options) - accepted)
    if unknown:
        msg = f"option(s) {unknown} do not apply to {family}; its options: {sorted(accepted)}"
        raise ValueError(msg)
    options.setdefault("image_check", "verify")
    path = Path(root).expanduser()
    console = Console()
    try:
        report = FAMILIES[family](root=str(path), **options).inspect()
    except (FileNotFoundError, ValueError) as err:
        console.print(f"error: {err}", style="red", markup=False, highlight=False, soft_wrap=True)
        return 1
    return _print_report(console, family, path, report)


def _parser() -> ArgumentParser:
    return ArgumentParser(prog="cmpt data", description="Work with datasets on disk.")


def _nested(parser: ArgumentParser) -> None:
    check = ArgumentParser(
        prog="cmpt data check",
        description="Validate a dataset download: layout, samples per split, unreadable images, "
        "empty texts and unknown labels. Exits with 1 on errors.",
    )
    subcommands = parser.add_subcommands()
    subcommands.add_subcommand("check", check, help="validate a dataset download")
    families = check.add_subcommands()
    for family, cls in FAMILIES.items():
        sub = ArgumentParser(prog=f"cmpt data check {family}", description=cls.__doc__)
        families.add_subcommand(family, sub, help=(cls.__doc__ or family).splitlines()[0])
        sub.add_class_arguments(cls, nested_key=None, skip=set(NOT_CHECKED))
    add_cache_command(subcommands)
    add_masks_command(subcommands)


def _legacy(tokens: list[str]) -> list[str]:
    """0.1's ``--classes a b`` (several values) -> ``--classes '[a, b]'``."""
    return rename_flags(tokens, {}, lists=["--classes"])


def _run(config: Namespace) -> int:
    if config.subcommand == "cache":
        return run_cache(config.cache)
    if config.subcommand == "masks":
        return run_masks(config.masks)
    family = config.check.subcommand
    options = {k: v for k, v in config.check[family].as_dict().items() if not k.startswith("__")}
    try:
        return data_check(family, **options)
    except ValueError as err:
        return user_error(f"cmpt data check {family}", err)


def data_command() -> Command:
    """``cmpt data``: ``check`` and ``cache`` per family, with its options from the registry."""
    return Command(
        "dataset tools: cmpt data check <family> --root DIR validates a download, cmpt data "
        "cache <family> --root DIR --out CACHE --clip_model NAME writes litdata chunks, cmpt "
        "data masks export|import --config CONFIG writes or imports a split's masks file",
        _parser,
        _run,
        _legacy,
        _nested,
    )
