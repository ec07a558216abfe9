"""cmpt-lightning: Cross-Modal Proxy Tokens for image-text classification, modalities missing.

The public names are imported on first use (PEP 562), so that ``import cmpt_lightning.models``
(pure PyTorch) does not import Lightning; ``from cmpt_lightning import CMPTModule`` works as
usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from .datamodules.base import CMPTDataModule
    from .datamodules.csv import MultimodalCSVDataModule
    from .datamodules.food101 import Food101DataModule
    from .datamodules.hateful_memes import HatefulMemesDataModule
    from .datamodules.mmimdb import MMIMDbDataModule
    from .datamodules.synthetic import SyntheticDataModule
    from .datamodules.world import WorldDataModule
    from .evaluation import TestGrid
    from .evaluation import TestGrid as SweepConfig  # deprecated: removed in 0.3
    from .losses import AlignLoss, CMPTLoss, LossParts
    from .missing import MissingConfig, MissingPlan, MissingType, missing_mask
    from .models.cmpt import CMPTFeatures, CMPTModel, CMPTOutput
    from .models.head import AvailabilityCase, Fusion, Method, ProxyTokenHead
    from .models.lora import LoRATargets
    from .module import CMPTModule
    from .tasks import Task

#: Each public name: (the module that defines it, its name there).
_EXPORTS: dict[str, tuple[str, str]] = {
    "AlignLoss": (".losses", "AlignLoss"),
    "AvailabilityCase": (".models.head", "AvailabilityCase"),
    "CMPTDataModule": (".datamodules.base", "CMPTDataModule"),
    "CMPTFeatures": (".models.cmpt", "CMPTFeatures"),
    "CMPTLoss": (".losses", "CMPTLoss"),
    "CMPTModel": (".models.cmpt", "CMPTModel"),
    "CMPTModule": (".module", "CMPTModule"),
    "CMPTOutput": (".models.cmpt", "CMPTOutput"),
    "Food101DataModule": (".datamodules.food101", "Food101DataModule"),
    "Fusion": (".models.head", "Fusion"),
    "HatefulMemesDataModule": (".datamodules.hateful_memes", "HatefulMemesDataModule"),
    "LoRATargets": (".models.lora", "LoRATargets"),
    "LossParts": (".losses", "LossParts"),
    "MMIMDbDataModule": (".datamodules.mmimdb", "MMIMDbDataModule"),
    "Method": (".models.head", "Method"),
    "MissingConfig": (".missing", "MissingConfig"),
    "MissingPlan": (".missing", "MissingPlan"),
    "MissingType": (".missing", "MissingType"),
    "MultimodalCSVDataModule": (".datamodules.csv", "MultimodalCSVDataModule"),
    "ProxyTokenHead": (".models.head", "ProxyTokenHead"),
    "SweepConfig": (".evaluation", "TestGrid"),  # deprecated alias of TestGrid: removed in 0.3
    "SyntheticDataModule": (".datamodules.synthetic", "SyntheticDataModule"),
    "WorldDataModule": (".datamodules.world", "WorldDataModule"),
    "Task": (".tasks", "Task"),
    "TestGrid": (".evaluation", "TestGrid"),
    "missing_mask": (".missing", "missing_mask"),
}

__all__ = [
    "AlignLoss",
    "AvailabilityCase",
    "CMPTDataModule",
    "CMPTFeatures",
    "CMPTLoss",
    "CMPTModel",
    "CMPTModule",
    "CMPTOutput",
    "Food101DataModule",
    "Fusion",
    "HatefulMemesDataModule",
    "LoRATargets",
    "LossParts",
    "MMIMDbDataModule",
    "Method",
    "MissingConfig",
    "MissingPlan",
    "MissingType",
    "MultimodalCSVDataModule",
    "ProxyTokenHead",
    "SweepConfig",
    "SyntheticDataModule",
    "Task",
    "TestGrid",
    "WorldDataModule",
    "missing_mask",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, and keep the name here (PEP 562)."""
    if name not in _EXPORTS:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value  # later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    """The module's own names and the public names, imported or not."""
    return sorted({*globals(), *__all__})
