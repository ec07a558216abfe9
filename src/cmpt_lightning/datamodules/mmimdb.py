"""MM-IMDb (23 genres, multi-label, F1): the official train / dev / test splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..datasets.checks import BadSample, ImageCheck, OnBadSample, parse_choice, screen
from ..datasets.mmimdb import GENRES, MMIMDbDataset, TextMode, movie_id
from ..missing import MissingPlan, MissingType
from ..tasks import Task
from .base import CMPTDataModule

__all__ = ["MMIMDbDataModule", "MoviePlan"]

#: The data module's splits -> the names in split.json (``predict`` uses the test split).
SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test", "predict": "test"}


class MMIMDbDataModule(CMPTDataModule):
    """MM-IMDb: train, dev (validation) and test from ``split.json``; ``predict`` is test.

    With ``text_mode: all_plots`` a movie gives one training sample per plot, and the simulated
    missingness is decided once per movie (every plot of a movie keeps or loses the same
    modality, see :class:`MoviePlan`), so the missing rate counts movies as in the
    one-sample-per-movie setting.

    Args:
        root: the folder holding ``mmimdb/`` (or the ``mmimdb`` folder itself).
        text_mode: ``outline`` (one sample per movie: the plot outline if present, else the
            first plot) or ``all_plots`` (one training sample per plot of each movie).
        expand_eval: with ``all_plots``, expand validation and test too (their sample counts then
            differ from the benchmark's 2,608 / 7,799 movies, and so do the metrics).
        image_check: how images are checked at setup: ``none``, ``exists``, ``verify`` (header
            and structure, the default: seconds for 100k images) or ``decode`` (pixels, about a
            minute per 100k images on 2 cores).
        check_threads: threads of the image check (null: Python's default, cpus + 4, at most 32).
        on_bad_sample: ``error`` (fail at setup, listing the offending files) or ``skip``
            (leave them out, count them and log the count).
        **kwargs: the shared settings of :class:`CMPTDataModule` (``batch_size``,
            ``num_workers``, ``train_missing``, ``eval_missing``, ...).
    """

    task = Task.MULTILABEL

    def __init__(
        self,
        root: str,
        text_mode: TextMode | str = "outline",
        expand_eval: bool = False,
        image_check: ImageCheck | str = "verify",
        check_threads: int | None = None,
        on_bad_sample: OnBadSample | str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.text_mode = parse_choice(TextMode, text_mode, "text_mode")
        self.expand_eval = expand_eval
        self.image_check = parse_choice(ImageCheck, image_check, "image_check")
        self.check_threads = check_threads
        self.on_bad_sample = parse_choice(OnBadSample, on_bad_sample, "on_bad_sample")
        self.bad_samples: dict[str, list[BadSample]] = {}
        self._movie_plans: dict[tuple[str, int, int | None], MoviePlan] = {}

    @property
    def num_classes(self) -> int:
        """The 23 genres."""
        return len(GENRES)

    @property
    def class_names(self) -> list[str]:
        """The genres in the benchmark's order."""
        return list(GENRES)

    def build_split(self, split: str) -> MMIMDbDataset:
        """The dataset of ``split``, checked (see ``on_bad_sample``)."""
        expand = split == "train" or self.expand_eval
        dataset = MMIMDbDataset(
            self.root,
            SPLIT_NAMES[split],
            self.image_transform(train=split == "train"),
            self.tokenizer(),
            self.image_size(),
            text_mode=self.text_mode if expand else TextMode.OUTLINE,
        )
        dataset, self.bad_samples[split] = screen(
            dataset,
            split=split,
            on_bad_sample=self.on_bad_sample,
            image_check=self.image_check,
            threads=self.check_threads,
        )
        return dataset

    def plan(self, split: str, seed: int, epoch: int | None = None) -> MissingPlan:
        """The protocol's ranking of the movies of ``split``, expanded to their samples."""
        key = (split, seed, epoch)
        if key not in self._movie_plans:
            ids = list(self.datasets[split].ids)
            self._movie_plans[key] = MoviePlan(ids, seed=seed, epoch=epoch)
        return self._movie_plans[key]


class MoviePlan(MissingPlan):
    """A :class:`MissingPlan` over movies: every sample (plot) of a movie shares its masks.

    The rate counts movies: at rate r, ``floor(n_movies * r)`` movies lose a modality, in all
    of their samples.

    Args:
        ids: sample ids, ``<imdb id>`` or ``<imdb id>#<k>``.
        seed: the protocol seed.
        epoch: a training epoch for per-epoch redraws; None for the fixed draw.
    """

    def __init__(self, ids: list[str], *, seed: int = 0, epoch: int | None = None) -> None:
        movies = [movie_id(sample) for sample in ids]
        unique = list(dict.fromkeys(movies))
        super().__init__(unique, seed=seed, epoch=epoch)
        position = {movie: i for i, movie in enumerate(unique)}
        self.rows = torch.tensor([position[movie] for movie in movies], dtype=torch.long)

    def __len__(self) -> int:
        return int(self.rows.numel())

    def masks(
        self, rate: float, missing_type: MissingType | str, *, both_ratio: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_present, text_present)`` per sample, decided per movie."""
        image, text = super().masks(rate, missing_type, both_ratio=both_ratio)
        return image[self.rows], text[self.rows]
