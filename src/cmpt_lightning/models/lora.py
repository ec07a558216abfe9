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

Two loralib behaviours are changed on purpose: weights are never merged in place
(``merge_weights=False``: Lightning's eval loop never calls ``.train()`` again, so merging would
silently freeze LoRA), and the identity "dropout" is an ``nn.Identity`` rather than loralib's
lambda, which cannot be pickled (``ddp_spawn``, ``deepcopy``).

The forward pass (:func:`lora_linear`) merges on the fly instead: it forms ``W' = W + s B A``
once per call (one small matrix product, ``s = alpha / r``) and runs one ``F.linear`` with it;
the backward pass is one matrix product for the input's gradient (with ``W'``) and skinny ones
for ``A`` and ``B`` (the [out, in] gradient of ``W'`` is never formed; the frozen ``W`` gets
none). Under autocast it casts its inputs as ``F.linear`` does, so the output is in the autocast
dtype at every rank. With ``lora_dropout > 0`` in training mode the merged form is not the same
function (dropout applies to the adapters' input only), so that case keeps the unmerged form
``W x + b + s B A dropout(x)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import loralib
import torch
import torch.nn.functional as F
from torch import nn

from ..choices import Choice

__all__ = [
    "LoRALinear",
    "LoRAMergedLinear",
    "LoRATargets",
    "copy_linear",
    "lora_linear",
    "wrap_linears",
]


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


def padded_b_index(enable_lora: list[bool], chunk: int, r: int) -> torch.Tensor:
    """Where each entry of a grouped ``lora_B`` goes in the padded ``B`` of :func:`lora_linear`.

    loralib's ``MergedLinear`` keeps ``B`` as [n * chunk, r] for its n enabled output chunks
    (of ``len(enable_lora)``); the update ``s B A`` needs it as a block matrix ``B_pad`` of
    shape [out, n * r]: rows of the k-th enabled chunk hold ``B_k`` in columns k * r .. k * r + r,
    every other entry is zero (the disabled chunks get no update).

    Args:
        enable_lora: which output chunks are adapted.
        chunk: rows per output chunk (``out_features // len(enable_lora)``).
        r: adapter rank.

    Returns:
        For each entry of ``lora_B.flatten()`` its position in ``B_pad.flatten()``, int64.
    """
    n = sum(enable_lora)
    chunks = torch.tensor([i for i, on in enumerate(enable_lora) if on])  # shape = [n]
    rows = chunks[:, None] * chunk + torch.arange(chunk)  # shape = [n, chunk]
    cols = torch.arange(n)[:, None] * r + torch.arange(r)  # shape = [n, r]
    return (rows[:, :, None] * (n * r) + cols[:, None, :]).flatten()  # shape = [n * chunk * r]


def _padded_b(lora_b: torch.Tensor, index: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """``lora_B`` as the block matrix ``B_pad`` of ``shape`` [out, n * r] (itself if no index)."""
    if index is None:
        return lora_b
    flat = lora_b.new_zeros(shape.numel()).index_copy_(0, index, lora_b.reshape(-1))
    return flat.view(shape)  # shape = [out, n * r]


class _MergedLoRAFunction(torch.autograd.Function):
    """``F.linear(x, W + s B_pad A, b)`` with the gradients of ``A`` and ``B`` at rank cost.

    With ``g`` the output's gradient, flattened to [N, out], and ``x`` as [N, in]:
    ``dx = g W'``, ``dA = s (g B_pad)^T x`` [n * r, in], ``dB_pad = s g^T (x A^T)`` [out, n * r]
    (``dB``: the entries of ``dB_pad`` that ``B`` fills); ``dW = g^T x`` is formed only if ``W``
    requires a gradient, which a frozen one does not.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        index: torch.Tensor | None,
        scaling: float,
    ) -> torch.Tensor:
        """``F.linear(x, W + scaling * B_pad A, bias)``; ``W'`` is formed once, [out, in]."""
        shape = torch.Size((weight.shape[0], lora_a.shape[0]))
        b_pad = _padded_b(lora_b, index, shape)  # shape = [out, n * r]
        merged = torch.addmm(weight, b_pad, lora_a, alpha=scaling)  # W' = W + s B_pad A
        needs = ctx.needs_input_grad
        adapters = needs[3] or needs[4]
        ctx.save_for_backward(
            x if needs[1] or adapters else None,
            merged if needs[0] else None,
            lora_a if adapters else None,
            b_pad if adapters else None,
        )
        ctx.index, ctx.scaling, ctx.b_shape = index, scaling, lora_b.shape
        return F.linear(x, merged, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """The gradients of ``x``, ``W`` and the bias (if they need one), ``A`` and ``B``."""
        x, merged, lora_a, b_pad = ctx.saved_tensors
        needs, s = ctx.needs_input_grad, ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])  # shape = [N, out]
        # saved whenever a branch below that reads it runs
        flat_x: Any = None if x is None else x.reshape(-1, x.shape[-1])  # shape = [N, in]
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        if needs[0]:
            grad_x = grad.matmul(merged)  # shape = [*, in]
        if needs[1]:  # only for an unfrozen W: the full [out, in] product
            grad_w = g.t().mm(flat_x)
        if needs[2]:
            grad_bias = g.sum(0)
        # beta=0: addmm ignores its first argument (it gives the shape) and scales by alpha=s
        if needs[3]:
            grad_a = torch.addmm(lora_a, g.mm(b_pad).t(), flat_x, beta=0, alpha=s)
        if needs[4]:
            grad_pad = torch.addmm(b_pad, g.t(), flat_x.mm(lora_a.t()), beta=0, alpha=s)
            grad_b = (
                grad_pad if ctx.index is None else grad_pad.view(-1)[ctx.index].view(ctx.b_shape)
            )
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None


def _autocast_input(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``tensor`` cast to ``dtype`` as autocast casts a matrix product's inputs (not float64)."""
    if tensor is None or not tensor.is_floating_point() or tensor.dtype in (dtype, torch.float64):
        return tensor
    return tensor.to(dtype)


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, W + scaling * B A, bias)`` for a frozen ``W`` and trainable ``A``, ``B``.

    ``W + s B A`` is formed once per call, [out, in]; the output is one matrix product with it.
    The backward pass forms no [out, in] gradient unless ``W`` requires one: ``A`` and ``B`` get
    theirs from rank-r products. Under autocast the floating inputs (float64 excepted) are cast
    to the autocast dtype, as autocast does for ``F.linear``, so the output is in that dtype.

    Args:
        x: the input, [*, in].
        weight: the frozen weight ``W``, [out, in].
        bias: its bias, [out], or None.
        lora_a: ``A``, [n * r, in] (n = 1 for a plain ``loralib.Linear``).
        lora_b: ``B``: [out, r] if ``index`` is None, else loralib's grouped [n * chunk, r].
        scaling: ``s = alpha / r``.
        index: for a grouped ``B``, :func:`padded_b_index` of its layer; None for [out, r].

    Returns:
        The output, [*, out].
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        args = [_autocast_input(t, dtype) for t in (x, weight, bias, lora_a, lora_b)]
        with torch.autocast(device, enabled=False):
            return _MergedLoRAFunction.apply(*args, index, scaling)
    return _MergedLoRAFunction.apply(x, weight, bias, lora_a, lora_b, index, scaling)


def _adapter_dropout_active(layer: loralib.LoRALayer) -> bool:
    """Whether ``layer``'s adapter input dropout changes its input now (p > 0, training)."""
    dropout = layer.lora_dropout
    return bool(layer.training) and isinstance(dropout, nn.Dropout) and dropout.p > 0


class LoRAMergedLinear(loralib.MergedLinear):
    """``loralib.MergedLinear`` (packed q/k/v) that never merges in place, at rank cost.

    loralib's own forward materialises the [out, in] update and multiplies the input by it a
    second time; this one runs :func:`lora_linear` (one product with ``W + s B A``), or, with
    adapter dropout active (``dropout > 0`` in training mode), the unmerged form
    ``W x + b + s B_pad A dropout(x)``. Both give loralib's outputs and gradients.
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
            chunk = out_features // len(enable_lora)
            index = padded_b_index(enable_lora, chunk, r).to(ind.device)
            self.register_buffer("lora_b_index", index, persistent=False)

    def _b_index(self) -> torch.Tensor:
        """:func:`padded_b_index` of this layer (built here for a layer pickled without it)."""
        index = getattr(self, "lora_b_index", None)
        if index is None:
            chunk = self.out_features // len(self.enable_lora)
            index = padded_b_index(self.enable_lora, chunk, self.r).to(self.lora_A.device)
            self.register_buffer("lora_b_index", index, persistent=False)
        return index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``W x + b`` plus the scaled low-rank update on the enabled output chunks."""
        if self.r == 0 or not hasattr(self, "lora_A"):
            return F.linear(x, self.weight, self.bias)
        index = self._b_index()
        if not _adapter_dropout_active(self):
            return lora_linear(
                x, self.weight, self.bias, self.lora_A, self.lora_B, self.scaling, index
            )
        result = F.linear(x, self.weight, self.bias)  # shape = [*, out]
        shape = torch.Size((self.out_features, self.lora_A.shape[0]))
        b_pad = _padded_b(self.lora_B, index, shape)  # shape = [out, n * r]
        low = F.linear(self.lora_dropout(x), self.lora_A)  # shape = [*, n * r]
        delta = F.linear(low, b_pad)  # shape = [*, out], zero on the disabled chunks
        return torch.add(result, delta, alpha=self.scaling)


class LoRALinear(loralib.Linear):
    """``loralib.Linear`` that never merges in place and has a picklable identity dropout.

    Its forward is :func:`lora_linear` (one product with ``W + s B A``), or loralib's unmerged
    ``W x + b + s B A dropout(x)`` while adapter dropout is active (``dropout > 0``, training).
    """

    def __init__(
        self, in_features: int, out_features: int, *, r: int, alpha: float, dropout: float
    ) -> None:
        super().__init__(in_features, out_features, **_loralib_kwargs(r, alpha, dropout))
        _fix_loralib(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``W x + b`` plus the scaled low-rank update ``s B A x``."""
        if self.r == 0 or _adapter_dropout_active(self):
            return super().forward(x)
        return lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scaling)

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
