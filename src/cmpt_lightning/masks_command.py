"""``cmpt data masks export`` / ``import``: the realised masks of a config's splits, as a file.

``export`` writes what the model sees of every sample of the configured data module's splits
(``train_missing`` for train, ``eval_missing`` for val and test, AND the data's own
availability) as a masks file (:mod:`cmpt_lightning.mask_files`) with the settings that made
them and their hashes. ``import`` turns another run's masks file, or a paper's published lists
of missing types (``--format map``, :mod:`cmpt_lightning.mask_import`), into the canonical file
for the config's data module, checked against its sample ids, and prints the
``missing.masks_file`` lines that make a run use it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from .choices import Choice
from .cli import fit_parser, user_error
from .datamodules.base import CMPTDataModule
from .errors import UserInputError
from .mask_files import (
    SPLITS,
    MasksFile,
    MasksFileError,
    SplitMasks,
    config_settings,
    read_masks,
    write_masks,
)
from .mask_import import align_masks, from_missing_types, merge_masks, read_missing_types
from .missing import availability_counts, combine_availability

__all__ = [
    "MasksFormat",
    "add_masks_command",
    "export_masks",
    "load_data_module",
    "masks_export",
    "masks_import",
    "run_masks",
]

_STAGE = {"train": "fit", "val": "validate", "test": "test"}
_PHASE = {"train": "train_missing", "val": "eval_missing", "test": "eval_missing"}


class MasksFormat(Choice):
    """The form of the masks ``cmpt data masks import`` reads."""

    CMPT = "cmpt"  # a masks file of this package (CSV or JSON, by sample id)
    MAP = "map"  # per split, a list of missing types in dataset order (missing-aware prompts)


def load_data_module(config: str | Path) -> CMPTDataModule:
    """The data module a ``cmpt fit`` config configures (the model is not built).

    Raises:
        FileNotFoundError: if ``config`` does not exist.
        ValueError: if the config does not parse, or its data is not a cmpt data module.
    """
    path = Path(config).expanduser()
    if not path.is_file():
        msg = f"config file {str(path)!r} not found; give a cmpt fit config (configs/demo.yaml)"
        raise FileNotFoundError(msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = fit_parser().parse_args(["--config", str(path)])
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(CMPTDataModule, "data", required=True)
        data = parser.instantiate(Namespace(data=parsed.data)).data
    if not isinstance(data, CMPTDataModule):
        msg = f"config {str(path)!r}: data must be a cmpt_lightning data module"
        raise ValueError(msg)
    return data


def _ids(data: CMPTDataModule, split: str, *, setup: bool = True) -> list[str]:
    """The ids of ``split``, built by ``setup`` (which logs its counts) or on its own."""
    if split not in _STAGE:
        msg = f"split must be one of {', '.join(SPLITS)}, got {split!r}"
        raise ValueError(msg)
    if split not in data.datasets:
        if setup:
            data.setup(_STAGE[split])
        else:  # the split's samples only: not its masks (the config's own masks_file)
            data.datasets[split] = data.build_split(split)
    return [str(key) for key in data.datasets[split].ids]


def export_masks(data: CMPTDataModule, splits: list[str] | None = None) -> MasksFile:
    """The realised masks of ``splits`` (default: train, val, test) and their settings.

    Realised: the protocol's masks (simulated, or the config's own masks file) AND the data's
    availability, i.e. what the model sees; a redrawn training split is its epoch 0.
    """
    out: dict[str, SplitMasks] = {}
    settings: dict[str, dict[str, Any]] = {}
    for split in splits or list(SPLITS):
        ids = _ids(data, split)
        image, text = data.availability(split)
        out[split] = SplitMasks(tuple(ids), image, text)
        settings[split] = config_settings(data.missing_config(split))
    return MasksFile(out, settings)


def _report(masks: MasksFile, written: list[Path], spared: dict[str, int] | None = None) -> None:
    print(f"wrote {', '.join(str(p) for p in written)}")
    for split, body in masks.splits.items():
        counts = body.counts()
        hashes = body.sha256()
        line = (
            f"{split}: {counts['total']} samples, {counts['complete']} complete, "
            f"{counts['image_only']} image only, {counts['text_only']} text only"
        )
        if spared and spared.get(split):
            line += f" ({spared[split]} kept a modality the data lacks the other of)"
        print(line)
        print(f"  sha256 ids   {hashes['ids']}")
        print(f"  sha256 masks {hashes['masks']}")


def masks_export(config: str, out: str, splits: list[str] | None = None) -> int:
    """Write the realised masks of a config's data module, with their settings and hashes.

    Args:
        config: a ``cmpt fit`` config file; its ``data`` (and its ``train_missing`` /
            ``eval_missing``) decide the masks.
        out: the masks file to write: ``.csv`` (with the hashes in ``<out>.sha256.json``
            beside it) or ``.json`` (all in one file).
        splits: the splits to write (default: train, val and test).

    Returns:
        The exit code: 0.
    """
    masks = export_masks(load_data_module(config), splits)
    _report(masks, write_masks(out, masks))
    return 0


def _read_source(
    data: CMPTDataModule, files: list[str], kind: MasksFormat, splits: list[str] | None
) -> dict[str, SplitMasks]:
    """The masks of each split to import, in the data module's order of its samples."""
    out: dict[str, SplitMasks] = {}
    if kind is MasksFormat.CMPT:
        read = {f: read_masks(f) for f in files}
        merged = merge_masks(read)
        wanted = splits or list(merged.splits)
        for split in wanted:
            if split not in merged.splits:
                msg = f"split {split!r} is not in {files} (it has {', '.join(merged.splits)})"
                raise MasksFileError(msg)
            ids = _ids(data, split, setup=False)
            name = next(f for f, m in read.items() if split in m.splits)
            image, text, extra = align_masks(merged.splits[split], ids, file=name, split=split)
            if extra:
                print(f"{split}: {extra} row(s) of {name} are not samples of the split (left out)")
            out[split] = SplitMasks(tuple(ids), image, text)
        return out
    lists: list[tuple[str, str, list[int]]] = []
    unnamed: list[tuple[str, list[int]]] = []
    for f in files:
        for key, codes in read_missing_types(f).items():
            if key is None:
                unnamed.append((f, codes))
            else:
                lists.append((f, key, codes))
    names = list(splits or [])
    if len(names) != len(unnamed) and unnamed:
        msg = (
            f"{len(unnamed)} list(s) of missing types without a split name; give one split per "
            f"file in order with --splits (e.g. --splits '[train, val, test]'), got {names}"
        )
        raise ValueError(msg)
    lists += [(f, split, codes) for (f, codes), split in zip(unnamed, names, strict=False)]
    for f, split, codes in lists:
        if split in out:
            msg = f"split {split!r} is given twice (again in {f!r}); give it once"
            raise MasksFileError(msg)
        ids = _ids(data, split, setup=False)
        groups = data.plan_groups(split)
        out[split] = from_missing_types(codes, ids, groups=groups, file=f, split=split)
    return out


def masks_import(
    config: str,
    masks: str | list[str],
    out: str,
    format: MasksFormat | str = "cmpt",  # the option's name on the command line
    splits: list[str] | None = None,
) -> int:
    """Convert and check masks for a config's data module; print the lines that use them.

    Args:
        config: a ``cmpt fit`` config file whose data module the masks are for (its sample
            ids and order; its own missing settings are not used here).
        masks: the file to import, or a list of them. ``cmpt``: masks files of this package
            (CSV or JSON). ``map``: lists of missing types per sample in dataset order, ``0``
            complete, ``1`` text missing, ``2`` image missing (the missing-aware-prompts
            format: .pt, .npy, .json or plain text; a JSON object maps split names to lists).
        out: the canonical masks file to write (``.csv`` with its ``.sha256.json``, or
            ``.json``).
        format: ``cmpt`` or ``map``.
        splits: ``cmpt``: the splits to import (default: all the files have). ``map``: the
            split of each list without a name, in the order of the files.

    Returns:
        The exit code: 0.
    """
    kind = MasksFormat.parse(format, "--format")
    files = [masks] if isinstance(masks, str) else list(masks)
    data = load_data_module(config)
    imported = _read_source(data, files, kind, splits)
    spared: dict[str, int] = {}
    for split, body in imported.items():  # what the model will see: AND the data's own
        real_img, real_txt = data.real_availability(split)
        img, txt, kept = combine_availability(
            real_img, real_txt, body.image_present, body.text_present
        )
        if availability_counts(img, txt)["neither"]:
            msg = f"split {split!r} has samples with neither modality in the data itself"
            raise MasksFileError(msg)
        spared[split] = int(kept.sum())
    settings = {s: {"source": ", ".join(files), "format": kind.value} for s in imported}
    ordered = {s: imported[s] for s in SPLITS if s in imported}
    result = MasksFile(ordered, settings)
    _report(result, write_masks(out, result), spared)
    phases = sorted({_PHASE[s] for s in ordered}, key=["train_missing", "eval_missing"].index)
    print("use them: put these lines under data.init_args of the config")
    for phase in phases:
        print(f"  {phase}:\n    masks_file: {out}")
    for split in ("val", "test"):
        if "eval_missing" in phases and split not in ordered:
            print(
                f"note: eval_missing.masks_file applies to val and test; {out} has no {split} "
                f"split, so a run that uses {split} stops with an error: import it too"
            )
    return 0


def add_masks_command(subcommands: Any) -> None:
    """Add ``masks`` (``export``, ``import``) to ``cmpt data``'s subcommands."""
    masks = ArgumentParser(
        prog="cmpt data masks",
        description="Write the realised masks of a config's splits with their hashes "
        "(export), or check and convert masks from elsewhere into that file (import).",
    )
    subcommands.add_subcommand("masks", masks, help="export or import the masks of a config")
    nested = masks.add_subcommands()
    for name, function, help_text in (
        ("export", masks_export, "write the realised masks and their hashes"),
        ("import", masks_import, "convert and check masks for the config's data module"),
    ):
        sub = ArgumentParser(prog=f"cmpt data masks {name}", description=function.__doc__)
        sub.add_function_arguments(function, nested_key=None)
        nested.add_subcommand(name, sub, help=help_text)


def run_masks(config: Namespace) -> int:
    """Run ``cmpt data masks export|import`` from its parsed namespace; a user error exits 2."""
    name = config.subcommand
    options = {k: v for k, v in config[name].as_dict().items() if not k.startswith("__")}
    function = masks_export if name == "export" else masks_import
    try:
        return function(**options)
    except (UserInputError, ValueError, FileNotFoundError, TypeError) as err:
        return user_error(f"cmpt data masks {name}", err)
