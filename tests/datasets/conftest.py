"""Fixtures of the dataset tests: the tiny model's preprocessing, and the fake copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmpt_lightning.models.clip import build_image_transform

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def preprocess(tokenizer):
    """(image_transform, tokenizer, image_size) of cmpt-tiny, as the data modules pass them."""
    return build_image_transform("cmpt-tiny"), tokenizer, (32, 32)
