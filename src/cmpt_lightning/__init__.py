"""cmpt-lightning: Cross-Modal Proxy Tokens for image-text classification, modalities missing."""

from .datamodules.base import CMPTDataModule
from .datamodules.csv import MultimodalCSVDataModule
from .datamodules.food101 import Food101DataModule
from .datamodules.hateful_memes import HatefulMemesDataModule
from .datamodules.mmimdb import MMIMDbDataModule
from .datamodules.synthetic import SyntheticDataModule
from .evaluation import TestGrid
from .losses import AlignLoss, CMPTLoss, LossParts
from .missing import MissingConfig, MissingPlan, MissingType, missing_mask
from .models.cmpt import CMPTFeatures, CMPTModel, CMPTOutput
from .models.head import AvailabilityCase, Fusion, Method, ProxyTokenHead
from .models.lora import LoRATargets
from .module import CMPTModule
from .tasks import Task

SweepConfig = TestGrid  # deprecated: removed in 0.3

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
    "missing_mask",
]

__version__ = "0.1.0"
