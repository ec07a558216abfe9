"""cmpt-lightning: Cross-Modal Proxy Tokens for image-text classification, modalities missing."""

from .datamodules.base import CMPTDataModule
from .datamodules.synthetic import SyntheticDataModule
from .losses import AlignLoss, CMPTLoss, LossParts
from .missing import MissingConfig, MissingType, missing_mask
from .models.cmpt import CMPTFeatures, CMPTModel, CMPTOutput
from .models.head import AvailabilityCase, Fusion, ProxyTokenHead
from .models.lora import LoRATargets
from .module import CMPTModule
from .tasks import Task

__all__ = [
    "AlignLoss",
    "AvailabilityCase",
    "CMPTDataModule",
    "CMPTFeatures",
    "CMPTLoss",
    "CMPTModel",
    "CMPTModule",
    "CMPTOutput",
    "Fusion",
    "LoRATargets",
    "LossParts",
    "MissingConfig",
    "MissingType",
    "ProxyTokenHead",
    "SyntheticDataModule",
    "Task",
    "missing_mask",
]

__version__ = "0.1.0"
