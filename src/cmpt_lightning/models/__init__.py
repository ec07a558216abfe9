"""Pure-PyTorch model code: towers with proxies, LoRA, the head and the CMPT model."""

from .clip import build_clip, build_image_transform, build_tokenizer
from .cmpt import CMPTFeatures, CMPTModel, CMPTOutput
from .head import AvailabilityCase, Fusion, Method, ProxyTokenHead
from .lora import LoRAAttention, LoRATargets, add_lora

__all__ = [
    "AvailabilityCase",
    "CMPTFeatures",
    "CMPTModel",
    "CMPTOutput",
    "Fusion",
    "LoRAAttention",
    "LoRATargets",
    "Method",
    "ProxyTokenHead",
    "add_lora",
    "build_clip",
    "build_image_transform",
    "build_tokenizer",
]
