"""Low-rank adapters (LoRA, Hu et al. 2021) on frozen linear maps, built on ``loralib``.

The update: a frozen linear map ``y = W x + b`` becomes ``y = (W + (alpha / r) B A) x + b``, with
``A`` of shape [r, in] (Kaiming uniform init) and ``B`` of shape [out, r]. The init: ``B = 0``, so
an adapted model starts exactly where the pretrained one was; only ``A`` and ``B`` train.

Where it is applied, per open_clip block and ``targets`` (:class:`LoRATargets`): the packed
query/key/value projection ``in_proj`` [3 * width, width] is a :class:`LoRAMergedLinear` whose
``enable_lora`` selects q and v (``qv``, the default) or q, k and v (``qkv``); ``all`` also
adapts the attention output projection and both MLP linears (``c_fc``, ``c_proj``) with
:class:`LoRALinear`. The attention module that holds these projections is
:class:`~cmpt_lightning.models.attention.LoRAAttention`; :func:`wrap_linears` adapts the MLP.

Two loralib behaviours are changed on purpose: weights are never merged (``merge_weights=False``:
Lightning's eval loop never calls ``.train()`` again, so merging would silently freeze LoRA), and
the identity "dropout" is an ``nn.Identity`` rather than loralib's lambda, which cannot be pickled
(``ddp_spawn``, ``deepcopy``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import loralib
import torch
import torch.nn.functional as F
from torch import nn

from ..choices import Choice

__all__ = ["LoRALinear", "LoRAMergedLinear", "LoRATargets", "copy_linear", "wrap_linears"]


class LoRATargets(Choice):
    """Which projections of each block get adapters."""

    @classmethod
    def label(cls) -> str:
        """``lora targets``."""
        return "lora targets"

    QV = "qv"
    QKV = "qkv"
    ALL = "all"


def _fix_loralib(layer: loralib.LoRALayer) -> None:
    """Replace loralib's lambda identity dropout by a picklable ``nn.Identity``."""
    if not isinstance(layer.lora_dropout, nn.Module):
        layer.lora_dropout = nn.Identity()


def _loralib_kwargs(r: int, alpha: float, dropout: float) -> dict[str, Any]:
    """Loralib's constructor arguments for rank ``r``: never merged (see the module docstring)."""
    return {"r": r, "lora_alpha": alpha, "lora_dropout": dropout, "merge_weights": False}


def copy_linear(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Load a frozen ``weight`` [out, in] and ``bias`` [out] into ``layer`` (a missing bias: 0).

    Args:
        layer: the linear map (plain or LoRA) to overwrite; its adapters are left as they are.
        weight: the weight to copy, [out, in].
        bias: the bias to copy, [out], or None for a map without bias (``layer.bias`` is zeroed,
            so the output is the same).
    """
    with torch.no_grad():
        layer.weight.copy_(weight)
        if layer.bias is not None:
            if bias is None:
                layer.bias.zero_()
            else:
                layer.bias.copy_(bias)


class LoRAMergedLinear(loralib.MergedLinear):
    """``loralib.MergedLinear`` that never merges and computes ``x A^T B^T`` at rank cost.

    loralib's own forward materialises the full [out, in] update on every call; this one applies
    ``A`` then the grouped ``B`` directly, which is the same arithmetic for a rank-r update.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        r: int,
        alpha: float,
        dropout: float,
        enable_lora: list[bool],
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_features,
            out_features,
            enable_lora=enable_lora,
            bias=bias,
            **_loralib_kwargs(r, alpha, dropout),
        )
        _fix_loralib(self)
        if hasattr(self, "lora_ind"):  # a plain attribute in loralib: make it follow .to(device)
            ind = self.lora_ind
            del self.lora_ind
            self.register_buffer("lora_ind", ind, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``W x + b`` plus the scaled low-rank update on the enabled output chunks."""
        result = F.linear(x, self.weight, self.bias)
        if self.r == 0 or not hasattr(self, "lora_A"):
            return result
        n = sum(self.enable_lora)
        chunk = self.out_features // len(self.enable_lora)
        low = F.linear(self.lora_dropout(x), self.lora_A)  # shape = [*, n * r]
        low = low.unflatten(-1, (n, self.r))  # shape = [*, n, r]
        b = self.lora_B.view(n, chunk, self.r)  # shape = [n, chunk, r]
        delta = torch.einsum("...nr,ncr->...nc", low, b) * self.scaling  # shape = [*, n, chunk]
        parts = list(result.split(chunk, dim=-1))  # len(enable_lora) x [*, chunk]
        k = 0
        for i, enabled in enumerate(self.enable_lora):
            if enabled:
                parts[i] = parts[i] + delta[..., k, :]
                k += 1
        return torch.cat(parts, dim=-1)


class LoRALinear(loralib.Linear):
    """``loralib.Linear`` that never merges and has a picklable identity dropout."""

    def __init__(
        self, in_features: int, out_features: int, *, r: int, alpha: float, dropout: float
    ) -> None:
        super().__init__(in_features, out_features, **_loralib_kwargs(r, alpha, dropout))
        _fix_loralib(self)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, r: int, alpha: float, dropout: float) -> LoRALinear:
        """Wrap an existing ``nn.Linear``, copying its weight and bias (none: a zero bias)."""
        new = cls(linear.in_features, linear.out_features, r=r, alpha=alpha, dropout=dropout)
        new.to(device=linear.weight.device, dtype=linear.weight.dtype)
        copy_linear(new, linear.weight, linear.bias)
        return new


def wrap_linears(
    module: nn.Module, names: Iterable[str], *, r: int, alpha: float, dropout: float
) -> int:
    """Replace the named ``nn.Linear`` children of ``module`` by :class:`LoRALinear`, in place.

    Children that are already :class:`LoRALinear` are left as they are.

    Args:
        module: the parent, e.g. an open_clip block's ``mlp``.
        names: attribute names of the linears to adapt, e.g. ``("c_fc", "c_proj")``.
        r: adapter rank.
        alpha: scaling numerator, the update is ``(alpha / r) B A``.
        dropout: dropout on the adapter input.

    Returns:
        The number of linears replaced.

    Raises:
        TypeError: if a named child is not an ``nn.Linear``.
    """
    count = 0
    for name in names:
        linear = getattr(module, name, None)
        if isinstance(linear, LoRALinear):
            continue
        if not isinstance(linear, nn.Linear):
            msg = (
                f"{type(module).__name__}.{name} must be an nn.Linear to get a LoRA adapter, got "
                f"{type(linear).__name__}; use lora targets 'qv' or 'qkv' to leave it as is"
            )
            raise TypeError(msg)
        setattr(module, name, LoRALinear.from_linear(linear, r=r, alpha=alpha, dropout=dropout))
        count += 1
    return count
