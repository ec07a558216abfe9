"""The storage dtype of the frozen tower weights: bf16 where every use casts them to bf16 anyway.

Under ``bf16-mixed`` autocast casts the weight of every linear map, convolution and matrix
product to bf16 on each call, and it keeps no copy of a frozen one (its cache holds only tensors
that require a gradient, and Lightning turns the cache off): a frozen fp32 tower is cast
fp32 -> bf16 in every step, one extra memory-bound kernel per weight. :func:`cast_frozen` stores
exactly those weights in bf16 instead. The values are the ones autocast would have made (the
same rounding), so the outputs under autocast are unchanged; everything else stays as it is:
the trainable parameters (LoRA, proxies, head) in fp32, and the frozen tensors that autocast
runs in fp32 or does not cast (LayerNorm, embeddings, the class and positional embeddings, which
keep the residual stream in fp32).

LayerNorm is left as open_clip has it: open_clip's ``LayerNorm`` casts its output back to its
input's dtype, and the residual stream it reads is fp32 (see above), so that cast is no copy; the
only remaining cast, of its fp32 output to bf16 by the next linear map, is autocast's own and
cannot be fused into ``layer_norm`` in eager mode (``torch.compile`` fuses it).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["autocast_cast_weights", "cast_frozen"]

#: Modules whose ``weight`` and ``bias`` autocast casts to the low-precision dtype on every call.
_CAST_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Parameters that open_clip multiplies with ``@`` (autocast casts both sides of a matmul).
_MATMUL_PARAMETERS = ("proj", "text_projection")

#: The dtypes :func:`cast_frozen` switches between (float64 and float16 weights are left alone).
_SWITCHED = (torch.float32, torch.bfloat16)


def autocast_cast_weights(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The frozen parameters of ``module`` that autocast casts to a low dtype on every use.

    They are the weights and biases of linear maps (LoRA ones included: their frozen ``W``)
    and convolutions, and open_clip's projection matrices ``proj`` and ``text_projection``;
    a parameter that requires a gradient is never one of them.

    Args:
        module: e.g. a CMPT model's open_clip ``clip``.

    Yields:
        ``(qualified name, parameter)`` pairs, each parameter once.
    """
    seen: set[int] = set()
    for prefix, child in module.named_modules():
        for name, param in child.named_parameters(recurse=False):
            cast = isinstance(child, _CAST_MODULES) and name in ("weight", "bias")
            if not (cast or name in _MATMUL_PARAMETERS) or param.requires_grad:
                continue
            if id(param) not in seen and param.is_floating_point():
                seen.add(id(param))
                yield (f"{prefix}.{name}" if prefix else name), param


def cast_frozen(module: nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen weights that autocast casts on every use (see above) in ``dtype``.

    In place: the parameters stay the same objects (their ``.data`` changes dtype). Only fp32
    and bf16 weights are switched, so ``cast_frozen(model, torch.float32)`` undoes
    ``cast_frozen(model, torch.bfloat16)`` (with the bf16-rounded values: reload the weights
    for the exact fp32 ones) and leaves a float64 model alone.

    Args:
        module: the module whose frozen weights to cast, e.g. ``CMPTModel.clip``.
        dtype: ``torch.bfloat16`` (store them in bf16) or ``torch.float32`` (store them in fp32).

    Returns:
        The number of parameters cast.

    Raises:
        ValueError: if ``dtype`` is neither ``torch.float32`` nor ``torch.bfloat16``.
    """
    if dtype not in _SWITCHED:
        msg = f"cast_frozen stores frozen weights in torch.float32 or torch.bfloat16, got {dtype}"
        raise ValueError(msg)
    count = 0
    for _, param in autocast_cast_weights(module):
        if param.dtype in _SWITCHED and param.dtype != dtype:
            param.data = param.data.to(dtype)
            count += 1
    return count
