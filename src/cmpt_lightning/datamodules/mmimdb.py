"""MM-IMDb (23 genres, multi-label, F1): the official train / dev / test splits."""

from __future__ import annotations

from typing import Any

from ..datasets.checks import CheckReport
from ..datasets.mmimdb import (
    GENRES,
    OFFICIAL_SIZES,
    SPLITS,
    MMIMDbDataset,
    TextMode,
    movie_id,
    read_mmimdb,
)
from ..tasks import Task
from .files import FileDataModule
from .predict import PredictInput, PredictTable, check_predict, read_predict

__all__ = ["MMIMDbDataModule"]

#: The data module's splits -> the names in split.json (``predict`` without a file: test).
SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test", "predict": "test"}


class MMIMDbDataModule(FileDataModule):
    """MM-IMDb: train, dev (validation) and test from ``split.json``; predict: new movies or test.

    ``predict`` reads ``predict_file``, else the test split.

    With ``text_mode: all_plots`` a movie gives one training sample per plot, and the simulated
    missingness is decided once per movie (every plot of a movie keeps or loses the same
    modality: the protocol ranks the movies, see :meth:`plan_groups`), so the missing rate
    counts movies as in the one-sample-per-movie setting.

    Args:
        root: the folder holding ``mmimdb/`` (or the ``mmimdb`` folder itself).
        text_mode: ``outline`` (one sample per movie: the plot outline if present, else the
            first plot) or ``all_plots`` (one training sample per plot of each movie).
        expand_eval: with ``all_plots``, expand validation and test too (their sample counts then
            differ from the benchmark's 2,608 / 7,799 movies, and so do the metrics).
        predict_file: new movies to predict: a table (CSV, TSV, JSONL or JSON) with ``image``
            (the poster's path relative to ``root``), ``text`` (the plot) and optionally ``id``
            columns, labels not needed (see :mod:`~cmpt_lightning.datamodules.predict`).
        **kwargs: the settings of :class:`FileDataModule` (``image_check``, ``on_bad_sample``,
            ...) and :class:`CMPTDataModule` (``batch_size``, ``train_missing``, ...).
    """

    task = Task.MULTILABEL
    family = "mmimdb"
    dataset_class = MMIMDbDataset
    raw_splits = SPLITS
    official_sizes = OFFICIAL_SIZES

    def __init__(
        self,
        root: str,
        text_mode: TextMode | str = "outline",
        expand_eval: bool = False,
        predict_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.text_mode = TextMode.parse(text_mode, "text_mode")
        self.expand_eval = expand_eval
        self.predict_file = predict_file

    @property
    def classes(self) -> list[str]:
        """The 23 genres, in the benchmark's order."""
        return list(GENRES)

    def read_split(self, split: str) -> MMIMDbDataset | PredictTable:
        """The dataset of ``split`` (one sample per plot in training with ``all_plots``)."""
        if split == "predict" and self.predict_file is not None:
            return read_predict(self, PredictInput(self.predict_file))
        expand = split == "train" or self.expand_eval
        return MMIMDbDataset(
            self.root,
            SPLIT_NAMES[split],
            self.image_transform(train=split == "train"),
            self.tokenizer(),
            self.image_size(),
            text_mode=self.text_mode if expand else TextMode.OUTLINE,
        )

    def plan_groups(self, split: str) -> list[str]:
        """The movie of each sample of ``split``: the plots of a movie share their masks."""
        return [movie_id(sample) for sample in self.datasets[split].ids]

    def inspect(self) -> CheckReport:
        """Train, dev, test of ``split.json`` (official sizes with ``outline``); predict_file."""
        report = CheckReport()
        outline = self.text_mode is TextMode.OUTLINE
        for split in self.raw_splits:
            records = read_mmimdb(self.root, split, self.text_mode)
            official = self.official_sizes[split] if outline else None
            report.add(split, "split.json", records, self.find_bad(records), official)
        if self.predict_file is not None:
            check_predict(self, report, PredictInput(self.predict_file))
        return report
