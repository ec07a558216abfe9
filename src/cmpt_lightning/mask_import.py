"""Masks from elsewhere onto a split: by sample id, or by position (the published lists).

:func:`align_masks` puts a masks file's rows (:mod:`cmpt_lightning.mask_files`) in the order of
a split's samples, by id. :func:`read_missing_types` reads the format the missing-aware-prompts
family publishes (Lee et al., "Multimodal Prompting with Missing Modalities for Visual
Recognition", CVPR 2023, github.com/YiLunLee/missing_aware_prompts): per split, one missing type
per sample in dataset order, ``0`` complete, ``1`` text missing, ``2`` image missing (their
``torch.save`` of a float tensor). That format is positional, so :func:`from_missing_types`
needs the split's ids in the data module's order; for a split whose samples come in groups
(MM-IMDb's plots of one movie), one type per group is read too, as their tables are per image.
Nothing is unpickled: ``.pt`` files are read with ``torch.load(weights_only=True)``, ``.npy``
with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .mask_files import MasksFile, MasksFileError, MasksFileNotFoundError, SplitMasks

__all__ = [
    "MISSING_TYPES",
    "align_masks",
    "from_missing_types",
    "merge_masks",
    "read_missing_types",
]

#: The published missing types -> (image present, text present).
MISSING_TYPES = {0: (True, True), 1: (True, False), 2: (False, True)}
_CODES = "0 (complete), 1 (text missing) or 2 (image missing)"
_PICKLES = (".pkl", ".pickle")


def _code(value: Any, file: str, where: str) -> int:
    """One missing type: 0, 1 or 2 (also as a float, the published tensors' dtype)."""
    if not isinstance(value, bool) and isinstance(value, int | float) and value in MISSING_TYPES:
        return int(value)
    msg = f"missing-types file {file!r} {where}: the value is {value!r}; use {_CODES}"
    raise MasksFileError(msg)


def _codes(values: Any, file: str, split: str | None) -> list[int]:
    if isinstance(values, torch.Tensor | np.ndarray):
        if values.ndim != 1:
            shape = list(values.shape)
            msg = f"missing-types file {file!r}: expected a 1-D list, got shape {shape}"
            raise MasksFileError(msg)
        values = values.tolist()
    if not isinstance(values, list):
        msg = f"missing-types file {file!r}: expected a list of {_CODES}, got {type(values)}"
        raise MasksFileError(msg)
    label = f"split {split!r} " if split is not None else ""
    return [_code(v, file, f"{label}entry {i}") for i, v in enumerate(values)]


def _by_split(loaded: Any, file: str) -> dict[str | None, list[int]]:
    """A single list (split None), or a mapping of split names to lists."""
    if isinstance(loaded, dict):
        return {str(split): _codes(v, file, str(split)) for split, v in loaded.items()}
    return {None: _codes(loaded, file, None)}


def _read_text(path: Path) -> list[int]:
    codes: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for token in line.replace(",", " ").split():
            try:
                value: Any = float(token)
            except ValueError:
                value = token
            codes.append(_code(value, str(path), f"line {number}"))
    return codes


def read_missing_types(path: str | Path) -> dict[str | None, list[int]]:
    """Read a published list of missing types (``.json``, ``.pt``, ``.npy``, or plain text).

    A JSON object or a saved dict maps split names to lists; any other file is one list
    (key None: the caller names its split). Plain text holds the codes separated by spaces,
    commas or line breaks.

    Raises:
        MasksFileNotFoundError: if ``path`` does not exist.
        MasksFileError: for a pickle, a file that is not a list of 0 / 1 / 2, or a ``.pt``
            holding other objects than tensors and lists.
    """
    path = Path(path).expanduser()
    file = str(path)
    if not path.is_file():
        msg = f"missing-types file {file!r} does not exist"
        raise MasksFileNotFoundError(msg)
    suffix = path.suffix.lower()
    if suffix in _PICKLES:
        msg = (
            f"missing-types file {file!r}: pickles are not read (loading one can run any code); "
            'where you trust it, convert it to JSON first: python -c "import json, pickle, '
            "sys; json.dump([int(v) for v in pickle.load(open(sys.argv[1], 'rb'))], "
            "open(sys.argv[1] + '.json', 'w'))\" FILE"
        )
        raise MasksFileError(msg)
    if suffix == ".json":
        try:
            return _by_split(json.loads(path.read_text(encoding="utf-8")), file)
        except json.JSONDecodeError as err:
            msg = f"missing-types file {file!r} line {err.lineno}: not valid JSON ({err.msg})"
            raise MasksFileError(msg) from err
    if suffix in (".pt", ".pth"):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # an UnpicklingError names the object torch refused
            msg = (
                f"missing-types file {file!r} does not load with torch.load(weights_only=True) "
                f"({str(err).splitlines()[0]}); save the types as a tensor or a list of ints"
            )
            raise MasksFileError(msg) from err
        return _by_split(loaded, file)
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            msg = f"missing-types file {file!r} is not a numeric .npy array ({err})"
            raise MasksFileError(msg) from err
        return {None: _codes(array, file, None)}
    return {None: _read_text(path)}


def from_missing_types(
    codes: Sequence[int],
    ids: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    file: str,
    split: str,
) -> SplitMasks:
    """The masks of a split from its missing types in dataset order.

    Args:
        codes: one type per sample (or, with ``groups``, per group in first-seen order).
        ids: the split's sample ids, in the data module's order.
        groups: the group of each sample, for splits whose tables count groups, or None.
        file: the file's name, for messages.
        split: the split's name, for messages.

    Raises:
        MasksFileError: if the number of types is neither the split's samples nor its groups.
    """
    keys = [str(key) for key in ids]
    rows: list[int] | None = None
    if len(codes) == len(keys):
        rows = list(range(len(keys)))
    elif groups is not None:
        unique = list(dict.fromkeys(str(g) for g in groups))
        if len(codes) == len(unique):
            position = {g: i for i, g in enumerate(unique)}
            rows = [position[str(g)] for g in groups]
    if rows is None:
        size = f"{len(keys)} samples" + ("" if groups is None else " (or its groups)")
        msg = (
            f"missing-types file {file!r}: {len(codes)} types for split {split!r} of {size}; "
            "the format is positional: it needs one type per sample of the split, in the "
            "data module's order (check that the file is for this split and data)"
        )
        raise MasksFileError(msg)
    pairs = [MISSING_TYPES[int(codes[row])] for row in rows]
    image = torch.tensor([p[0] for p in pairs], dtype=torch.bool)
    text = torch.tensor([p[1] for p in pairs], dtype=torch.bool)
    return SplitMasks(tuple(keys), image, text)


def align_masks(
    masks: SplitMasks, ids: Sequence[str], *, file: str, split: str
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A file's masks in the order of a split's ``ids``.

    Args:
        masks: the file's masks of the split.
        ids: the split's sample ids, in the data module's order.
        file: the file's name, for messages.
        split: the split's name, for messages.

    Returns:
        ``(image_present, text_present, extra)``: bool tensors in the order of ``ids``, and the
        number of ids of the file that are not in the split (the caller reports them).

    Raises:
        MasksFileError: if samples of the split are not in the file (how many, and the first).
    """
    position = {key: i for i, key in enumerate(masks.ids)}
    keys = [str(key) for key in ids]
    absent = [key for key in keys if key not in position]
    if absent:
        msg = (
            f"masks file {file!r} has no row for {len(absent)} of the {len(keys)} samples of "
            f"split {split!r} (first: {', '.join(repr(k) for k in absent[:5])}); it must list "
            "every sample: write it from this data module (cmpt data masks export / import "
            "--config ...), or check that it was made for the same data and split"
        )
        raise MasksFileError(msg)
    rows = torch.tensor([position[key] for key in keys], dtype=torch.long)
    extra = len(masks.ids) - len(set(keys))
    return masks.image_present[rows], masks.text_present[rows], extra


def merge_masks(files: Mapping[str, MasksFile]) -> MasksFile:
    """The splits of several masks files, by file name; a split in two files is an error."""
    splits: dict[str, SplitMasks] = {}
    settings: dict[str, dict[str, Any]] = {}
    source: dict[str, str] = {}
    for name, masks in files.items():
        for split, body in masks.splits.items():
            if split in splits:
                msg = f"split {split!r} is in both {source[split]!r} and {name!r}; give it once"
                raise MasksFileError(msg)
            splits[split], source[split] = body, name
            if split in masks.settings:
                settings[split] = masks.settings[split]
    return MasksFile(splits, settings)
