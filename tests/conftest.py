"""Shared fixtures: offline hub, the tiny open_clip model, quiet logs."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# help pages rendered by the tests are remembered here, not in the user's ~/.cache
os.environ.setdefault("CMPT_CACHE_DIR", tempfile.mkdtemp(prefix="cmpt-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from cmpt_lightning.models import build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer("cmpt-tiny")


@pytest.fixture
def batch(tokenizer):
    """Four samples of the tiny model's input size, with texts of different lengths."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=gen)
    texts = tokenizer(["a red square", "a much longer caption about a blue circle", "hi", "x y z"])
    return images, texts


@pytest.fixture(scope="session")
def pretrain_script():
    """``scripts/pretrain_world_clip.py``, imported as a module (scripts are not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_world_clip.py"
    spec = importlib.util.spec_from_file_location("pretrain_world_clip", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]
