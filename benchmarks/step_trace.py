"""Trace one training step: dispatched aten ops and the bytes elementwise ops write (issue 21).

For each configuration (``--models`` x ``--methods`` x ``--precisions``, at ``--batch-size``)
one training step's forward and backward (``CMPTModule``'s forward on a batch, its own loss,
``backward``; no optimizer) runs under a ``TorchDispatchMode`` that sees every aten op below
autograd and autocast, so autocast's casts and the backward's ops are counted too. Per step:

- ``ops``: every dispatched aten op (views included);
- ``elementwise``: the ops that read and write whole tensors without arithmetic intensity:
  those tagged ``torch.Tag.pointwise``, copies and casts (``copy_``, ``_to_copy``, ``clone``),
  ``cat`` / ``stack``, fills, and the backward of slicing (``slice_backward``,
  ``select_backward``); ``split`` and other views write nothing and are only counted as ops;
- the bytes those ops write (their outputs, in-place results included), per step and per
  sample: on a GPU each of them is a memory-bound kernel, so fewer bytes are time saved.

The model is built through the public API only (``CMPTModule(clip, num_classes, method=...)``,
random weights), so the script runs against any checkout of the package::

    PYTHONPATH=/path/to/other/checkout/src python benchmarks/step_trace.py --quick

and prints a markdown table (``--out FILE`` also writes it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _report import git_commit
from _steps import autocast, food_titles, store_frozen
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
#: Copies and casts.
COPIES = {aten.copy_, aten._to_copy, aten.clone, aten.copy, aten._copy_from}
#: Concatenations.
CATS = {aten.cat, aten.stack}
#: Fills (not always tagged pointwise).
FILLS = {aten.fill_, aten.zero_, aten.zeros, aten.zeros_like, aten.full, aten.new_zeros}
#: Backward of slicing and selecting: writes a zero tensor and the slice into it.
SLICE_BACKWARD = {aten.slice_backward, aten.select_backward}
#: Ops whose outputs are views of their inputs: counted as ops, no bytes.
SPLITS = {aten.split, aten.split_with_sizes, aten.unbind, aten.chunk}
MB = 1e6


@dataclass
class Trace:
    """What one step dispatched."""

    ops: int = 0
    elementwise_ops: int = 0
    bytes_by_kind: Counter[str] = field(default_factory=Counter)
    ops_by_kind: Counter[str] = field(default_factory=Counter)
    bytes_by_op: Counter[str] = field(default_factory=Counter)

    @property
    def elementwise_bytes(self) -> int:
        """Bytes the elementwise ops wrote."""
        return sum(self.bytes_by_kind.values())


def _kind(func: Any) -> str | None:
    packet = func.overloadpacket
    if packet in COPIES:
        return "copy"
    if packet in CATS:
        return "cat"
    if packet in SLICE_BACKWARD:
        return "slice_backward"
    if packet in SPLITS:
        return "split"
    if torch.Tag.pointwise in func.tags:
        return "pointwise"
    if packet in FILLS:
        return "fill"
    return None


def _written(func: Any, out: Any) -> int:
    if getattr(func, "is_view", False):
        return 0
    tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


class StepTracer(TorchDispatchMode):
    """Counts the aten ops dispatched inside it and the bytes the elementwise ones write."""

    def __init__(self) -> None:
        super().__init__()
        self.trace = Trace()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        trace = self.trace
        trace.ops += 1
        kind = _kind(func)
        if kind is not None:
            trace.ops_by_kind[kind] += 1
            if kind != "split":
                written = _written(func, out)
                trace.elementwise_ops += 1
                trace.bytes_by_kind[kind] += written
                trace.bytes_by_op[str(func.overloadpacket).replace("aten.", "")] += written
        return out


def build(name: str, method: str, num_classes: int) -> Any:
    """A ``CMPTModule`` on ``name`` with random weights, quietly (no download)."""
    from cmpt_lightning import CMPTModule

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return CMPTModule(clip=name, num_classes=num_classes, method=method, pretrained=None)
    finally:
        root.setLevel(level)


def batch_for(module: Any, name: str, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images of the model's size, Food-101-like titles, every modality present."""
    from cmpt_lightning.models.clip import build_tokenizer

    gen = torch.Generator().manual_seed(seed)
    height, width = module.model.clip.visual.image_size
    present = torch.ones(size, dtype=torch.bool)
    return {
        "image": torch.randn(size, 3, height, width, generator=gen),
        "text": build_tokenizer(name)(food_titles(size, seed)),
        "label": torch.randint(0, module.model.num_classes, (size,), generator=gen),
        "image_present": present,
        "text_present": present.clone(),
    }


def trace_step(name: str, method: str, precision: str, size: int) -> tuple[Trace, str]:
    """The trace of one forward + backward of a training step; and the frozen weights' dtype."""
    torch.manual_seed(0)
    module = build(name, method, num_classes=101)
    frozen = store_frozen(module.model, precision)
    batch = batch_for(module, name, size)
    cast = autocast(torch.device("cpu"), precision)
    module.train()

    def step() -> None:
        module.zero_grad(set_to_none=True)
        with cast():
            output = module(batch)
            loss = module.loss(output, batch["label"]).total
        loss.backward()

    step()  # warm-up: lazy initialisations are not part of a step
    tracer = StepTracer()
    with tracer:
        step()
    return tracer.trace, frozen


def main(argv: list[str] | None = None) -> str:
    """Trace every configuration; returns the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-16"])
    parser.add_argument("--methods", nargs="+", default=["cmpt", "zero_fill"])
    parser.add_argument("--precisions", nargs="+", default=["32", "bf16"], choices=["32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="cmpt-tiny only (seconds)")
    parser.add_argument("--top", type=int, default=5, help="largest writers listed per row")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.quick:
        args.models = ["cmpt-tiny"]
    torch.set_num_threads(args.threads)
    import cmpt_lightning

    source = Path(cmpt_lightning.__file__).resolve().parent
    columns = [
        "model",
        "method",
        "precision",
        "frozen weights",
        "ops/step",
        "elementwise ops/step",
        "elementwise MB/step",
        "elementwise MB/sample",
        "pointwise MB/sample",
        "copy+cat+slice MB/sample",
        "largest writers (MB/sample)",
    ]
    lines = [
        f"Step trace (benchmarks/step_trace.py): batch {args.batch_size}, forward + backward, "
        f"package at {source} (commit {git_commit()}), torch {torch.__version__}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for name in args.models:
        for method in args.methods:
            for precision in args.precisions:
                trace, frozen = trace_step(name, method, precision, args.batch_size)
                per = args.batch_size * MB
                kinds = trace.bytes_by_kind
                moves = kinds["copy"] + kinds["cat"] + kinds["slice_backward"]
                top = ", ".join(
                    f"{op} {value / per:.3g}"
                    for op, value in trace.bytes_by_op.most_common(args.top)
                )
                row = [
                    name,
                    method,
                    "bf16 autocast" if precision == "bf16" else "fp32",
                    frozen,
                    str(trace.ops),
                    str(trace.elementwise_ops),
                    f"{trace.elementwise_bytes / MB:.4g}",
                    f"{trace.elementwise_bytes / per:.4g}",
                    f"{kinds['pointwise'] / per:.4g}",
                    f"{moves / per:.4g}",
                    top,
                ]
                lines.append("| " + " | ".join(row) + " |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
