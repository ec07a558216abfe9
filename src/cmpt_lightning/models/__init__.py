"""Pure-PyTorch model code: towers with proxies, LoRA, the attention seam, head and CMPT model."""

from .attention import (
    AttentionAdapter,
    AttentionWeights,
    CallConvention,
    LoRAAttention,
    add_lora,
    attention_adapter,
    register_attention_adapter,
)
from .clip import build_clip, build_image_transform, build_tokenizer
from .cmpt import CMPTFeatures, CMPTModel, CMPTOutput
from .head import AvailabilityCase, Fusion, Method, ProxyTokenHead
from .lora import LoRATargets, lora_linear
from .precision import cast_frozen
from .proxy import ProxyLayout, proxy_attention, proxy_attention_mask

__all__ = [
    "AttentionAdapter",
    "AttentionWeights",
    "AvailabilityCase",
    "CMPTFeatures",
    "CMPTModel",
    "CMPTOutput",
    "CallConvention",
    "Fusion",
    "LoRAAttention",
    "LoRATargets",
    "Method",
    "ProxyLayout",
    "ProxyTokenHead",
    "add_lora",
    "attention_adapter",
    "build_clip",
    "build_image_transform",
    "build_tokenizer",
    "cast_frozen",
    "lora_linear",
    "proxy_attention",
    "proxy_attention_mask",
    "register_attention_adapter",
]
