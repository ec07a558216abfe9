"""Masks files: the realised masks of a data module's splits, with their hashes, on disk.

A masks file says, per split and sample id, whether the image and the text are present, so
that a run can use exactly the masks another run (or another paper) used
(``missing.masks_file``), and two sets of masks can be compared by hash. Two forms:

- CSV, the canonical form: the columns ``split,id,image_present,text_present`` (one row per
  sample, ``0`` absent / ``1`` present, ids as the data module's sample ids), with the hashes
  and the settings that made the masks in a sidecar ``<file>.sha256.json`` beside it;
- JSON: ``{"format": "cmpt-masks/1", "splits": {split: {"ids": [...], "image_present":
  [...], "text_present": [...]}}, "sha256": {...}, "settings": {...}}``, all in one file.

The hashes of a split (:func:`split_sha256`) are sha256 digests of a canonical text that does
not depend on the order of the rows: ``masks`` over the lines ``id,image,text`` and ``ids`` over
the ids alone, sorted by id. Equal ``ids`` hashes: the same split; equal ``masks`` hashes: the
same masks as well. Reading is strict: an unknown column, a value other than 0 or 1, a
repeated id, a row with neither modality, or hashes that do not match is a
:class:`MasksFileError` naming the file, the line (the entry, in JSON) and the value.
Matching a file's rows to a split's samples, and the positional lists of missing types other
papers publish, are :mod:`cmpt_lightning.mask_import`'s.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserInputError
from .missing import MissingConfig, availability_counts

__all__ = [
    "COLUMNS",
    "MASKS_FORMAT",
    "SPLITS",
    "MasksFile",
    "MasksFileError",
    "MasksFileNotFoundError",
    "SplitMasks",
    "config_settings",
    "read_masks",
    "sidecar_path",
    "split_sha256",
    "write_masks",
]

#: The ``format`` of the JSON form and of the CSV's sidecar.
MASKS_FORMAT = "cmpt-masks/1"
#: The columns of the CSV form, in the order they are written.
COLUMNS = ("split", "id", "image_present", "text_present")
#: The splits a masks file may hold (predict has no simulated missingness).
SPLITS = ("train", "val", "test")
_JSON_KEYS = ("format", "splits", "sha256", "settings")
_SPLIT_KEYS = ("ids", "image_present", "text_present")
_FIX = "write 0 (absent) or 1 (present)"


class MasksFileError(UserInputError, ValueError):
    """A masks file that cannot be used as it is; the message names the file, line and value."""


class MasksFileNotFoundError(UserInputError, FileNotFoundError):
    """A masks file that does not exist."""


def sidecar_path(path: str | Path) -> Path:
    """The sidecar of a CSV masks file, holding its hashes and settings: ``<file>.sha256.json``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256.json")


def split_sha256(ids: Sequence[str], image: torch.Tensor, text: torch.Tensor) -> dict[str, str]:
    """The hashes of one split's masks: ``{"masks": ..., "ids": ...}`` (hex sha256).

    ``masks`` hashes the UTF-8 lines ``id,image,text`` (``0`` / ``1``, each line ending in a
    line feed), ``ids`` the lines ``id``, both sorted by id (code point order), so that neither
    depends on the order of the rows.
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    img, txt = image.bool().tolist(), text.bool().tolist()
    rows = "".join(f"{ids[i]},{int(img[i])},{int(txt[i])}\n" for i in order)
    names = "".join(f"{ids[i]}\n" for i in order)
    return {
        "masks": hashlib.sha256(rows.encode()).hexdigest(),
        "ids": hashlib.sha256(names.encode()).hexdigest(),
    }


@dataclass(frozen=True)
class SplitMasks:
    """One split's masks: per sample id (in the split's order), image and text present.

    Attributes:
        ids: the sample ids, unique strings.
        image_present: bool [len(ids)].
        text_present: bool [len(ids)].
    """

    ids: tuple[str, ...]
    image_present: torch.Tensor
    text_present: torch.Tensor

    def sha256(self) -> dict[str, str]:
        """See :func:`split_sha256`."""
        return split_sha256(self.ids, self.image_present, self.text_present)

    def counts(self) -> dict[str, int]:
        """Samples per availability case (:func:`~cmpt_lightning.missing.availability_counts`)."""
        return availability_counts(self.image_present, self.text_present)


@dataclass
class MasksFile:
    """The masks of several splits, and the settings that made each (free-form, for the record).

    Attributes:
        splits: split name -> its masks.
        settings: split name -> what made them (rate, type, seed, mechanism, ...; or a source).
    """

    splits: dict[str, SplitMasks]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def sha256(self) -> dict[str, dict[str, str]]:
        """Split name -> its hashes (:func:`split_sha256`)."""
        return {split: masks.sha256() for split, masks in self.splits.items()}


def config_settings(config: MissingConfig | None) -> dict[str, Any]:
    """The settings of ``config`` a masks file records (none: the data's own availability)."""
    if config is None:
        return {"simulated": False}
    if config.masks_file is not None:
        return {"masks_file": config.masks_file}
    settings: dict[str, Any] = {
        "rate": config.rate,
        "type": config.type,
        "seed": config.seed,
        "mechanism": config.mechanism,
        "both_ratio": config.both_ratio,
    }
    if config.mechanism != "mcar":
        settings["mechanism_key"] = list(config.mechanism_key)
    if config.resample_each_epoch:
        settings["resample_each_epoch"] = True
        settings["epoch"] = 0  # a redrawn split is written as its first epoch's draw
    return settings


def _ordered(masks: MasksFile) -> list[str]:
    unknown = [s for s in masks.splits if s not in SPLITS]
    if unknown:
        msg = f"a masks file holds the splits {', '.join(SPLITS)}; got {unknown}"
        raise MasksFileError(msg)
    return [s for s in SPLITS if s in masks.splits]


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        msg = (
            f"masks file {str(path)!r}: name it .csv or .json (the form is chosen by the "
            f"suffix), got {path.suffix!r}"
        )
        raise MasksFileError(msg)
    return suffix


def write_masks(path: str | Path, masks: MasksFile) -> list[Path]:
    """Write ``masks`` as CSV (plus the sidecar of hashes) or JSON, by the suffix of ``path``.

    Returns:
        The files written: ``[csv, sidecar]`` or ``[json]``.

    Raises:
        MasksFileError: for a suffix other than .csv / .json, or a split not in :data:`SPLITS`.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    splits = _ordered(masks)
    for split in splits:
        _validate(masks.splits[split], str(path), split)
    header = {
        "format": MASKS_FORMAT,
        "sha256": {s: masks.splits[s].sha256() for s in splits},
        "settings": {s: masks.settings[s] for s in splits if s in masks.settings},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        body = {
            split: {
                "ids": list(masks.splits[split].ids),
                "image_present": [int(v) for v in masks.splits[split].image_present.tolist()],
                "text_present": [int(v) for v in masks.splits[split].text_present.tolist()],
            }
            for split in splits
        }
        document = {"format": MASKS_FORMAT, "splits": body, **header}
        path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        return [path]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for split in splits:
            m = masks.splits[split]
            img, txt = m.image_present.tolist(), m.text_present.tolist()
            for i, key in enumerate(m.ids):
                writer.writerow((split, key, int(img[i]), int(txt[i])))
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps({**header, "file": path.name}, indent=1) + "\n")
    return [path, sidecar]


def _validate(masks: SplitMasks, file: str, split: str) -> None:
    """A split that cannot be written: repeated ids, or a sample with neither modality."""
    seen: set[str] = set()
    neither = (~masks.image_present.bool() & ~masks.text_present.bool()).tolist()
    for i, key in enumerate(masks.ids):
        if key in seen:
            msg = f"masks for {file!r}: split {split!r} repeats the sample id {key!r}"
            raise MasksFileError(msg)
        seen.add(key)
        if neither[i]:
            msg = (
                f"masks for {file!r}: sample {key!r} of split {split!r} has neither an image "
                "nor a text; a masks file never removes both modalities"
            )
            raise MasksFileError(msg)


def read_masks(path: str | Path) -> MasksFile:
    """Read and validate a masks file (CSV with an optional sidecar, or JSON).

    Raises:
        MasksFileNotFoundError: if ``path`` does not exist.
        MasksFileError: for anything that breaks the format (see the module's docstring), and
            for hashes (the JSON's, or the CSV's sidecar) that the rows do not match.
    """
    path = Path(path).expanduser()
    suffix = _check_suffix(path)
    if not path.is_file():
        msg = (
            f"masks file {str(path)!r} does not exist; write one with 'cmpt data masks "
            "export' or 'cmpt data masks import', or fix missing.masks_file"
        )
        raise MasksFileNotFoundError(msg)
    if suffix == ".json":
        document = _load_json(path)
        masks = _from_json(path, document)
        recorded = document.get("sha256")
        where = str(path)
    else:
        masks = _from_csv(path)
        sidecar = sidecar_path(path)
        recorded, where = None, str(sidecar)
        if sidecar.is_file():
            header = _load_json(sidecar)
            if not isinstance(header, dict) or header.get("format") != MASKS_FORMAT:
                msg = f"masks sidecar {where!r} is not a {MASKS_FORMAT} header; delete it"
                raise MasksFileError(msg)
            recorded = header.get("sha256")
            masks.settings = dict(header.get("settings") or {})
    if recorded is not None:
        _check_hashes(path, where, masks, recorded)
    return masks


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        msg = f"{str(path)!r} line {err.lineno}: not valid JSON ({err.msg})"
        raise MasksFileError(msg) from err


def _check_hashes(path: Path, where: str, masks: MasksFile, recorded: Any) -> None:
    if not isinstance(recorded, dict):
        msg = f"{where!r}: sha256 must map each split to its hashes, got {recorded!r}"
        raise MasksFileError(msg)
    for split, actual in masks.sha256().items():
        expected = recorded.get(split)
        if expected is None:
            continue
        for kind in ("ids", "masks"):
            if isinstance(expected, dict) and expected.get(kind) not in (None, actual[kind]):
                msg = (
                    f"masks file {str(path)!r}, split {split!r}: the {kind} sha256 is "
                    f"{actual[kind]}, but {where!r} records {expected[kind]}: the file was "
                    "changed after it was written; write it again (cmpt data masks export / "
                    "import), or remove the recorded hashes if the change is intended"
                )
                raise MasksFileError(msg)


def _flag(value: Any, file: str, where: str, column: str) -> bool:
    """A 0/1 value (also the strings "0"/"1" and JSON booleans), else a MasksFileError."""
    if isinstance(value, bool) or value in (0, 1, "0", "1"):
        return bool(int(value))
    msg = f"masks file {file!r} {where}: {column} is {value!r}; {_FIX}"
    raise MasksFileError(msg)


class _SplitBuilder:
    """Collects one split's rows, rejecting repeated ids and rows with neither modality."""

    def __init__(self, file: str, split: str) -> None:
        self.file, self.split = file, split
        self.where: dict[str, str] = {}
        self.image: list[bool] = []
        self.text: list[bool] = []

    def add(self, key: Any, image: Any, text: Any, where: str) -> None:
        if isinstance(key, bool) or not isinstance(key, str | int) or str(key) == "":
            msg = f"masks file {self.file!r} {where}: the id is {key!r}; give a non-empty id"
            raise MasksFileError(msg)
        key = str(key)
        if "\n" in key or "\r" in key:
            msg = f"masks file {self.file!r} {where}: the id {key!r} holds a line break"
            raise MasksFileError(msg)
        if key in self.where:
            msg = (
                f"masks file {self.file!r} {where}: sample id {key!r} of split {self.split!r} "
                f"is already at {self.where[key]}; keep one row per sample and split"
            )
            raise MasksFileError(msg)
        img = _flag(image, self.file, where, "image_present")
        txt = _flag(text, self.file, where, "text_present")
        if not (img or txt):
            msg = (
                f"masks file {self.file!r} {where}: sample {key!r} of split {self.split!r} has "
                "image_present 0 and text_present 0; the protocol never removes both "
                "modalities: set one of them to 1, or leave the sample out of the split"
            )
            raise MasksFileError(msg)
        self.where[key] = where
        self.image.append(img)
        self.text.append(txt)

    def build(self) -> SplitMasks:
        return SplitMasks(
            tuple(self.where),
            torch.tensor(self.image, dtype=torch.bool),
            torch.tensor(self.text, dtype=torch.bool),
        )


def _check_split(file: str, split: Any, where: str) -> str:
    if split not in SPLITS:
        msg = f"masks file {file!r} {where}: split is {split!r}; use one of {', '.join(SPLITS)}"
        raise MasksFileError(msg)
    return str(split)


def _from_csv(path: Path) -> MasksFile:
    file = str(path)
    builders: dict[str, _SplitBuilder] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        names = [name.strip() for name in header or []]
        unknown = [name for name in names if name not in COLUMNS]
        if unknown or sorted(names) != sorted(COLUMNS):
            seen = f"unknown column {unknown[0]!r}" if unknown else f"the columns {names}"
            msg = (
                f"masks file {file!r} line 1: {seen}; the header must be "
                f"{','.join(COLUMNS)} (each column once)"
            )
            raise MasksFileError(msg)
        column = {name: names.index(name) for name in COLUMNS}
        for row in reader:
            if not row:
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(COLUMNS):
                msg = (
                    f"masks file {file!r} {where}: {len(row)} values {row!r}; give "
                    f"{len(COLUMNS)} ({','.join(COLUMNS)})"
                )
                raise MasksFileError(msg)
            split = _check_split(file, row[column["split"]].strip(), where)
            builder = builders.setdefault(split, _SplitBuilder(file, split))
            builder.add(
                row[column["id"]],
                row[column["image_present"]].strip(),
                row[column["text_present"]].strip(),
                where,
            )
    if not builders:
        msg = f"masks file {file!r} has no rows; export one with 'cmpt data masks export'"
        raise MasksFileError(msg)
    return MasksFile({s: builders[s].build() for s in SPLITS if s in builders})


def _from_json(path: Path, document: Any) -> MasksFile:
    file = str(path)
    if not isinstance(document, dict) or document.get("format") != MASKS_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        msg = (
            f"masks file {file!r}: format is {found!r}, expected {MASKS_FORMAT!r}; a list of "
            "missing types per sample (0 complete, 1 text missing, 2 image missing) is read "
            "by 'cmpt data masks import --format map'"
        )
        raise MasksFileError(msg)
    unknown = sorted(set(document) - set(_JSON_KEYS))
    if unknown:
        msg = f"masks file {file!r}: unknown key {unknown[0]!r}; the keys are {list(_JSON_KEYS)}"
        raise MasksFileError(msg)
    splits = document.get("splits")
    if not isinstance(splits, dict) or not splits:
        msg = f"masks file {file!r}: 'splits' must map split names to their masks"
        raise MasksFileError(msg)
    out: dict[str, SplitMasks] = {}
    for split, body in splits.items():
        name = _check_split(file, split, "in 'splits'")
        if not isinstance(body, dict) or sorted(body) != sorted(_SPLIT_KEYS):
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            msg = f"masks file {file!r}, split {name!r}: the keys are {keys}; use {_SPLIT_KEYS}"
            raise MasksFileError(msg)
        columns = [body[key] for key in _SPLIT_KEYS]
        if not all(isinstance(c, list) for c in columns) or len({len(c) for c in columns}) > 1:
            lengths = {k: len(v) if isinstance(v, list) else v for k, v in body.items()}
            msg = f"masks file {file!r}, split {name!r}: give three lists of one length: {lengths}"
            raise MasksFileError(msg)
        builder = _SplitBuilder(file, name)
        for i, (key, img, txt) in enumerate(zip(*columns, strict=True)):
            builder.add(key, img, txt, f"split {name!r} entry {i}")
        out[name] = builder.build()
    settings = document.get("settings") or {}
    return MasksFile({s: out[s] for s in SPLITS if s in out}, dict(settings))
