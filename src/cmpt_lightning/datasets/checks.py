"""Finding bad samples before training: unreadable images, empty texts, unknown labels.

Data modules screen each split at setup (:func:`screen`), so that a bad file fails the run at
once with the list of offending files, or is skipped and counted (``on_bad_sample: skip``),
instead of crashing a loader worker hours later. ``cmpt data check`` reports the same findings.

How thoroughly images are checked is the ``image_check`` setting; per image, from cheapest:

- ``none``: nothing (an unreadable file then fails in a loader worker, naming the file);
- ``exists``: the file exists and is not empty (one ``stat``);
- ``verify`` (default): PIL opens the file and runs ``Image.verify()``: the header is parsed and
  (PNG) the chunk checksums are read, without decoding pixels. This catches missing, empty,
  non-image and mislabelled files and broken headers, but not a JPEG cut off mid-stream;
- ``decode``: the pixels are decoded (JPEGs at 1/8 scale, which still reads all the data), which
  also catches truncated files.

Before any image is opened, its path must lie inside the data root (``..``, absolute paths and
symbolic links that lead out of it are refused, see :mod:`~cmpt_lightning.datasets.paths`)
unless ``allow_outside_root`` is set; a refused file is neither checked nor read.

The checks run on a thread pool (PIL releases the GIL while reading and decoding). Measured on
the development machine (2 cores, warm page cache, 2,000 noisy 512 x 384 JPEGs of 75 KB,
extrapolated to 100k images): ``exists`` 1 to 3 s, ``verify`` 5 to 10 s, ``decode`` 35 to 75 s;
from a cold network disk each is bounded by reading the files instead. ``verify`` is the
default: it finds the usual download damage in seconds at every setup, and
``cmpt data check <family> --root DIR --image_check decode`` is the one-off thorough pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image

from ..choices import Choice
from .errors import BadSampleError
from .paths import RootGuard
from .records import IMAGE_ERRORS, Record, RecordDataset

__all__ = [
    "BadSample",
    "CheckReport",
    "ImageCheck",
    "OnBadSample",
    "SplitReport",
    "check_image",
    "describe_bad_samples",
    "find_bad_samples",
    "screen",
]

log = logging.getLogger(__name__)

_D = TypeVar("_D", bound=RecordDataset)

#: At most this many offending files are listed in an exception (``cmpt data check`` lists all).
MAX_LISTED = 50


class ImageCheck(Choice):
    """How thoroughly image files are checked at setup (see the module docstring for costs)."""

    NONE = "none"
    EXISTS = "exists"
    VERIFY = "verify"
    DECODE = "decode"


class OnBadSample(Choice):
    """What to do with bad samples found at setup."""

    ERROR = "error"  # fail, listing the offending files
    SKIP = "skip"  # leave them out, count them and log the count


@dataclass(frozen=True)
class BadSample:
    """A sample that cannot be used.

    Attributes:
        index: its position among the records checked.
        id: its sample id.
        file: the offending file (image, text file, or annotation file and line).
        reason: what is wrong.
    """

    index: int
    id: str
    file: str
    reason: str


@dataclass
class SplitReport:
    """What ``cmpt data check`` found in one raw split.

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
    """What was found in a dataset: one report per raw split, and notes about the whole.

    Attributes:
        splits: the reports of the splits, in reading order.
        warnings: problems of the dataset as a whole that do not stop training.
        info: facts worth showing (e.g. the classes inferred from the labels).
    """

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


def check_image(path: Path, mode: ImageCheck | str = ImageCheck.VERIFY) -> str | None:
    """What is wrong with the image file at ``path`` under check ``mode``, or None if nothing."""
    mode = ImageCheck(mode)
    if mode is ImageCheck.NONE:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return "image file does not exist"
    if size == 0:
        return "image file is empty (0 bytes)"
    if mode is ImageCheck.EXISTS:
        return None
    try:
        with Image.open(path) as image:
            if mode is ImageCheck.VERIFY:
                image.verify()
            else:
                image.draft("RGB", (1, 1))  # JPEG: decode at the smallest scale, all data read
                image.load()
    except IMAGE_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    return None


def find_bad_samples(
    records: Sequence[Record],
    *,
    requires_image: bool = True,
    requires_text: bool = True,
    image_check: ImageCheck | str = ImageCheck.VERIFY,
    threads: int | None = None,
    root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> list[BadSample]:
    """Every problem of ``records``.

    Parse problems, repeated ids, absent or empty modalities the family requires, samples with
    neither modality, image paths outside the data root, and image files that fail the check.

    Args:
        records: the parsed samples.
        requires_image: a sample without an image is bad (else it is real missingness).
        requires_text: a sample without a non-empty text is bad.
        image_check: how thoroughly to check image files.
        threads: threads of the image check (None: Python's default, ``min(32, cpus + 4)``).
        root: the data root image paths must stay inside (None: not checked).
        allow_outside_root: do not check that image paths stay inside ``root``.

    Returns:
        The problems, ordered by record; a record may have several.
    """
    bad: list[BadSample] = []
    seen: dict[str, str] = {}
    for index, record in enumerate(records):
        for reason in record.problems:
            bad.append(BadSample(index, record.id, record.source, reason))
        if record.id in seen:
            reason = f"repeated sample id {record.id!r} (first in {seen[record.id]})"
            bad.append(BadSample(index, record.id, record.source, reason))
        seen.setdefault(record.id, record.source)
        if record.parsed:
            bad += _missing_modalities(index, record, requires_image, requires_text)
    with_image = [(i, r.image) for i, r in enumerate(records) if r.image is not None]
    if root is not None and not allow_outside_root and with_image:
        guard = RootGuard(root)
        inside: list[tuple[int, Path]] = []
        for index, path in with_image:
            escape = guard.reason(path)
            if escape is None:
                inside.append((index, path))
            else:  # never opened, not even by the image check
                bad.append(BadSample(index, records[index].id, records[index].source, escape))
        with_image = inside
    if ImageCheck(image_check) is not ImageCheck.NONE and with_image:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            found = pool.map(lambda item: check_image(item[1], image_check), with_image)
            for (index, path), problem in zip(with_image, found, strict=True):
                if problem is not None:
                    bad.append(BadSample(index, records[index].id, str(path), problem))
    return sorted(bad, key=lambda b: b.index)


def _missing_modalities(
    index: int, record: Record, requires_image: bool, requires_text: bool
) -> list[BadSample]:
    """The modalities ``record`` lacks that its family requires (or that it has neither)."""
    reasons = []
    empty_text = record.text is None or not record.text.strip()
    if requires_image and record.image is None:
        reasons.append("no image")
    if requires_text and empty_text:
        reasons.append("empty text")
    if not (requires_image or requires_text) and record.image is None and empty_text:
        reasons.append("neither image nor text")
    return [BadSample(index, record.id, record.source, reason) for reason in reasons]


def describe_bad_samples(bad: Sequence[BadSample], limit: int | None = MAX_LISTED) -> str:
    """One line per problem, ``file: reason (sample id)``, the first ``limit`` of them."""
    shown = bad if limit is None else bad[:limit]
    lines = [f"  {b.file}: {b.reason} (sample {b.id!r})" for b in shown]
    if len(bad) > len(shown):
        lines.append(f"  ... and {len(bad) - len(shown)} more")
    return "\n".join(lines)


def screen(
    dataset: _D,
    *,
    split: str,
    on_bad_sample: OnBadSample | str = OnBadSample.ERROR,
    image_check: ImageCheck | str = ImageCheck.VERIFY,
    threads: int | None = None,
    root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> tuple[_D, list[BadSample]]:
    """Check every sample of ``dataset`` and fail on bad ones, or leave them out.

    Args:
        dataset: the split's dataset.
        split: its name, for messages.
        on_bad_sample: ``error`` raises :class:`BadSampleError` listing the offending files;
            ``skip`` returns the dataset without them and logs how many were skipped.
        image_check: how thoroughly to check image files.
        threads: threads of the image check.
        root: the data root image paths must stay inside (None: not checked).
        allow_outside_root: do not check that image paths stay inside ``root``.

    Returns:
        The dataset to use, and the problems found.

    Raises:
        BadSampleError: on bad samples with ``on_bad_sample: error``, or when none is left.
    """
    policy = OnBadSample.parse(on_bad_sample, "on_bad_sample")
    bad = find_bad_samples(
        dataset.records,
        requires_image=dataset.requires_image,
        requires_text=dataset.requires_text,
        image_check=image_check,
        threads=threads,
        root=root,
        allow_outside_root=allow_outside_root,
    )
    if not bad:
        return dataset, []
    count = len({b.index for b in bad})
    where = f"the {split} split of {dataset.family}"
    if policy is OnBadSample.ERROR:
        msg = (
            f"{count} bad sample(s) of {len(dataset)} in {where}:\n{describe_bad_samples(bad)}\n"
            f"Fix or remove these files (`cmpt data check {dataset.family} --root ...` lists "
            "them all), or set on_bad_sample: skip to leave them out (they are counted and "
            "logged)."
        )
        raise BadSampleError(msg)
    keep = sorted(set(range(len(dataset))) - {b.index for b in bad})
    if not keep:
        msg = f"all {len(dataset)} samples of {where} are bad:\n{describe_bad_samples(bad)}"
        raise BadSampleError(msg)
    log.warning(
        "%s: skipped %d bad sample(s) of %d (on_bad_sample: skip):\n%s",
        where,
        count,
        len(dataset),
        describe_bad_samples(bad, limit=10),
    )
    return dataset.select(keep), bad
