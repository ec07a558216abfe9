"""Grids of training settings: read, expand into named cells, and check against the real CLI.

A grid file maps dotted ``cmpt fit`` config keys to lists of values::

    data.init_args.train_missing.rate: [0.1, 0.5, 0.7]
    seed_everything: [0, 1, 2]

Its cells are the product of the lists, in file order (the last key varies fastest). A key with
a single value is a fixed override: it applies to every cell and stays out of the cell names.
Named variants bundle overrides into one axis, ``variant``, that comes first::

    variants:
      cmpt: {}
      cmpt_no_align: {model.init_args.align_weight: 0}
      zero_fill: {model.init_args.method: zero_fill}

Each cell's full config (base config + the cell's values) is parsed by the parser of ``cmpt fit``
itself, so a misspelt key, a key the chosen model or data class does not take, or a value of the
wrong type fails before anything runs, naming the grid key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError

from ..cli import fit_parser

__all__ = [
    "RESERVED_KEYS",
    "VARIANT",
    "Cell",
    "ConfigResolver",
    "Grid",
    "expand_grid",
    "is_seed_key",
    "key_aliases",
    "load_grid",
    "read_grid_file",
]

#: Keys the sweep sets itself (the cell's run directory, the test after fit, the test sweep).
RESERVED_KEYS = (
    "trainer.default_root_dir",
    "test_after_fit",
    "model.init_args.test_grid",
    "model.init_args.sweep",
    "variant",
)


def is_seed_key(key: str) -> bool:
    """Whether ``key`` is a replicate seed (``seed_everything``, ``*.seed``, ``*_seed``).

    Results are averaged over the values of seed keys; every other varying key defines the
    "train cell".
    """
    last = key.rsplit(".", 1)[-1]
    return last in ("seed_everything", "seed") or last.endswith("_seed")


#: The axis of a grid's named variants (``variants:`` in a grid file).
VARIANT = "variant"


def _check_key(key: Any, where: str, *, variant_ok: bool = False) -> None:
    """A grid key must be a dotted config key that the sweep does not set itself."""
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        msg = (
            f"grid key {key!r}{where} is not a dotted config key; write keys as in "
            "'cmpt fit --print_config', e.g. data.init_args.train_missing.rate"
        )
        raise ValueError(msg)
    for reserved in RESERVED_KEYS:
        if (key == reserved or key.startswith(reserved + ".")) and not (
            variant_ok and key == VARIANT
        ):
            msg = (
                f"grid key {key!r}{where} is set by the sweep itself ({reserved}); use --out for "
                "the run directory, --test_rates/--test_types for the test grid, and a "
                "'variants:' mapping for named variants"
            )
            raise ValueError(msg)


@dataclass
class Grid:
    """The axes of a sweep: config keys and their values, in file order, and named variants.

    A variant is a named bundle of overrides (``cmpt_no_align: {model.init_args.align_weight:
    0}``); the variants form the first axis, ``variant``, whose values are their names.

    Attributes:
        axes: dotted config key (or ``variant``) -> the values it takes.
        source: the file it was read from (None when built in code).
        variants: variant name -> its overrides (dotted config key -> value); None: no variants.
    """

    axes: dict[str, list[Any]]
    source: Path | None = None
    variants: dict[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source is not None else ""
        if self.variants is not None:
            self._check_variants(where)
            self.axes = {VARIANT: list(self.variants), **self.axes}
        if not self.axes:
            msg = (
                f"the grid{where} is empty; map config keys to lists, e.g. seed_everything: [0, 1]"
            )
            raise ValueError(msg)
        for key, values in self.axes.items():
            _check_key(key, where, variant_ok=self.variants is not None)
            if not isinstance(values, list):
                msg = (
                    f"grid key {key!r}{where} must map to a list of values, got "
                    f"{type(values).__name__} {values!r}; write [{values!r}] for a single value"
                )
                raise TypeError(msg)
            if not values:
                msg = f"grid key {key!r}{where} has an empty list; give at least one value"
                raise ValueError(msg)

    def _check_variants(self, where: str) -> None:
        variants = self.variants or {}
        if not isinstance(variants, dict) or not variants:
            msg = (
                f"'variants'{where} must map names to overrides, e.g. {{cmpt: {{}}, "
                f"zero_fill: {{model.init_args.method: zero_fill}}}}; got {variants!r}"
            )
            raise TypeError(msg)
        for name, bundle in variants.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                msg = f"variant name {name!r}{where} must be letters, digits, '_', '-', '.' or '+'"
                raise ValueError(msg)
            if not isinstance(bundle, dict):
                msg = (
                    f"variant {name!r}{where} must map config keys to values, got "
                    f"{type(bundle).__name__} {bundle!r}; write {{}} for the base config as is"
                )
                raise TypeError(msg)
            for key in bundle:
                _check_key(key, where)
                if key in self.axes:
                    msg = f"variant {name!r}{where} sets {key!r}, which is also a grid axis"
                    raise ValueError(msg)

    def config_overrides(self, cell: Cell) -> dict[str, Any]:
        """The config keys a cell sets: its axis values, with its variant's bundle expanded."""
        overrides = {k: v for k, v in cell.overrides.items() if k != VARIANT}
        if self.variants is not None and VARIANT in cell.overrides:
            overrides.update(self.variants[cell.overrides[VARIANT]])
        return overrides

    @property
    def varying(self) -> list[str]:
        """The keys with more than one value (the ones that name the cells)."""
        return [key for key, values in self.axes.items() if len(values) > 1]

    @property
    def seed_keys(self) -> list[str]:
        """The varying keys that are replicate seeds (see :func:`is_seed_key`)."""
        return [key for key in self.varying if is_seed_key(key)]


def load_grid(path: str | Path) -> Grid:
    """Read a grid file (YAML mapping of dotted config keys to lists, and optional variants).

    Args:
        path: the grid file.

    Returns:
        The grid, checked for shape (keys, lists, no empty list, no reserved key).
    """
    path = Path(path)
    data = read_grid_file(path)
    variants = data.pop("variants", None)
    return Grid(axes=data, source=path, variants=variants)


def read_grid_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a grid file, before any section is taken out of it.

    Raises:
        FileNotFoundError: the file does not exist.
        TypeError: it is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"grid file {str(path)!r} not found; give a YAML file mapping config keys to lists"
        raise FileNotFoundError(msg)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        msg = (
            f"grid file {str(path)!r} must be a mapping of config keys to lists, got "
            f"{type(data).__name__}"
        )
        raise TypeError(msg)
    return data


def key_aliases(keys: Sequence[str]) -> dict[str, str]:
    """Short, unique, readable names for config keys (``init_args`` dropped).

    The last two components, extended to the left until unique: ``data.init_args.train_missing.
    rate`` -> ``train_missing.rate``, ``seed_everything`` -> ``seed_everything``.
    """
    parts = {key: [p for p in key.split(".") if p != "init_args"] for key in keys}
    depth = dict.fromkeys(keys, 2)
    while True:
        names = {key: ".".join(parts[key][-depth[key] :]) for key in keys}
        clashes = [key for key in keys if list(names.values()).count(names[key]) > 1]
        grow = [key for key in clashes if depth[key] < len(parts[key])]
        if not grow:
            return names
        for key in grow:
            depth[key] += 1


def _format_value(value: Any) -> str:
    """A path-safe, readable spelling of a grid value."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        value = value["class_path"]
        if value.count(".") and not value.endswith("."):
            value = value.rsplit(".", 1)[-1]
    if isinstance(value, str):
        text = re.sub(r"[^A-Za-z0-9.+-]+", "-", value).strip("-.")
        return text[:40] or "str"
    digest = hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    return f"{type(value).__name__}-{digest[:8]}"


@dataclass(frozen=True)
class Cell:
    """One point of the grid.

    Attributes:
        index: its position in the expansion.
        name: its run directory's name, e.g. ``train_missing.rate=0.3__seed_everything=1``.
        overrides: every grid key -> its value in this cell (fixed keys included).
    """

    index: int
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


def expand_grid(grid: Grid) -> list[Cell]:
    """The product of the grid's lists, each cell with a stable, readable, unique name.

    Names are ``alias=value`` pairs of the varying keys joined by ``__`` (``default`` when no
    key varies). Values that would spell alike get their position appended.
    """
    aliases = key_aliases(grid.varying)
    spelled: dict[str, list[str]] = {}
    for key in grid.varying:
        texts = [str(v) if key == VARIANT else _format_value(v) for v in grid.axes[key]]
        if len(set(texts)) < len(texts):
            texts = [f"{t}-{i}" for i, t in enumerate(texts)]
        spelled[key] = texts
    keys = list(grid.axes)
    cells = []
    for index, choice in enumerate(itertools.product(*(range(len(grid.axes[k])) for k in keys))):
        overrides = {k: grid.axes[k][i] for k, i in zip(keys, choice, strict=True)}
        pairs = [
            f"{aliases[k]}={spelled[k][i]}"
            for k, i in zip(keys, choice, strict=True)
            if k in spelled
        ]
        name = "__".join(pairs) or "default"
        if len(name) > 200:
            name = f"cell-{index:04d}"
        cells.append(Cell(index=index, name=name, overrides=overrides))
    return cells


def _as_arg(value: Any) -> str:
    """A command-line spelling jsonargparse reads back as ``value`` (strings as they are)."""
    return value if isinstance(value, str) else json.dumps(value)


def _reason(error: BaseException) -> str:
    """The informative part of a (long, nested) jsonargparse error."""
    text = re.sub(r"<class '(?:[\w]+\.)*([\w]+)'>", r"\1", str(error))  # <class 'int'> -> int
    lines = [line.strip(" -") for line in text.splitlines() if line.strip(" -")]
    for line in lines:
        if "not accepted" in line or "unrecognized arguments" in line.lower():
            return line
    expected = [
        re.split(r"\. Got value", line)[0][len("Expected a ") :]
        for line in lines
        if line.startswith("Expected a ")
    ]
    if expected:
        return "expected " + " or ".join(dict.fromkeys(expected))
    return lines[0] if lines else type(error).__name__


class ConfigResolver:
    """Parses full ``cmpt fit`` configs with the CLI's own parser, without running anything.

    Args:
        configs: the base config files, in order (later ones override earlier ones).
    """

    def __init__(self, configs: Sequence[str | Path]) -> None:
        if not configs:
            msg = "no base config; give --config FILE (e.g. configs/demo.yaml)"
            raise ValueError(msg)
        self.configs = [Path(c).resolve() for c in configs]
        for path in self.configs:
            if not path.is_file():
                msg = f"config file {str(path)!r} not found"
                raise FileNotFoundError(msg)
        self.parser = fit_parser()
        self.base_args = [arg for path in self.configs for arg in ("--config", str(path))]
        try:
            self.base = self.parser.parse_args(self.base_args)
        except (ArgumentError, TypeError, ValueError) as err:
            names = ", ".join(str(p) for p in self.configs)
            msg = f"the base config ({names}) does not parse: {_reason(err)}"
            raise ValueError(msg) from err

    def parse(self, overrides: Mapping[str, Any]) -> Any:
        """The full config (a jsonargparse Namespace) of the base with ``overrides`` applied.

        ``class_path`` keys are applied first, so that ``init_args`` keys are checked against
        the class the cell chooses. A failure names the first key that makes the config invalid.
        """
        items = sorted(overrides.items(), key=lambda kv: not kv[0].endswith("class_path"))
        args = [arg for key, value in items for arg in (f"--{key}", _as_arg(value))]
        try:
            return self.parser.parse_args([*self.base_args, *args])
        except (ArgumentError, TypeError, ValueError) as err:
            error: BaseException = err
        for n in range(1, len(items) + 1):  # find the first key that breaks the config
            key, value = items[n - 1]
            prefix = [arg for k, v in items[:n] for arg in (f"--{k}", _as_arg(v))]
            try:
                self.parser.parse_args([*self.base_args, *prefix])
            except (ArgumentError, TypeError, ValueError) as err:
                error = err
                break
        else:
            key, value = "(the combination)", overrides
        base = self.configs[-1].name
        msg = (
            f"grid key {key!r} with value {value!r} does not apply to the config "
            f"{str(self.configs[-1])!r}: {_reason(error)}. Check the key and its value against "
            f"'cmpt fit --config {base} --print_config'"
        )
        raise ValueError(msg) from error

    def dump(self, config: Any) -> str:
        """The YAML text of a parsed config, loadable by ``cmpt fit --config``."""
        with warnings.catch_warnings():  # the spelling Lightning's own config saving uses
            warnings.simplefilter("ignore", DeprecationWarning)
            return str(self.parser.dump(config, skip_none=False))
