"""What a :class:`~cmpt_lightning.module.CMPTModule` checkpoint holds, and how it loads back.

A CMPT checkpoint keeps every model setting in its hyper-parameters (defaults included, see
:func:`model_settings`) and only the trainable weights in its state dict (LoRA, proxy tokens,
their output maps, fusion, classifier: a few megabytes); the frozen open_clip towers, hundreds
of megabytes, are rebuilt from the settings (``clip``, ``pretrained``, ``tower_seed``, which
is ``init_seed`` in checkpoints saved before it existed). These helpers resolve the seeds the
module saves (:func:`init_seeds`), complete such a state dict with a module's own frozen
weights, word the errors of one that does not fit, and tell how to point a checkpoint at a
weights file that has moved.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any

from .models.clip import WeightsFileNotFoundError
from .models.cmpt import CMPTModel

__all__ = [
    "complete_state_dict",
    "init_seeds",
    "missing_message",
    "missing_trainable",
    "model_settings",
    "moved_weights_error",
    "run_seed",
]

#: CMPTModel's settings that CMPTModule takes as its own arguments (the others pass through).
_OWN_MODEL_ARGS = ("clip", "num_classes", "lora_targets", "fusion", "method")

#: How a checkpoint from other settings is loaded: the module is rebuilt from its own settings.
_REBUILD = (
    "CMPTModule.load_from_checkpoint(path) rebuilds the module from the checkpoint's own settings"
)


def run_seed() -> int:
    """The run's seed, as Lightning's ``seed_everything`` last set it; 0 if it was not called.

    That is the CLI's ``--seed_everything`` (a study's seed), which Lightning keeps in the
    ``PL_GLOBAL_SEED`` environment variable.
    """
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def init_seeds(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with ``init_seed`` and ``tower_seed`` resolved to the integers a model uses.

    - ``tower_seed`` (random tower weights, when ``pretrained`` is None): as given, else
      ``init_seed`` if that is given, else 0. The towers therefore stay the same across run
      seeds, and a checkpoint saved before ``tower_seed`` existed (its hyper-parameters hold
      ``init_seed`` only) rebuilds the towers it was trained on.
    - ``init_seed`` (the trainable parts' initialisation): as given, else the run seed
      (:func:`run_seed`), so that replicate seeds start from different weights.

    Saving the resolved values in the hyper-parameters makes ``load_from_checkpoint`` and
    ``--ckpt_path`` rebuild the same model whatever the seed of the loading process.

    Args:
        given: CMPTModel's keyword settings as the user gave them.

    Returns:
        A copy with both seeds set to integers.
    """
    init, tower = given.get("init_seed"), given.get("tower_seed")
    if tower is None:
        tower = 0 if init is None else init
    if init is None:
        init = run_seed()
    return {**given, "init_seed": int(init), "tower_seed": int(tower)}


def model_settings(given: dict[str, Any]) -> dict[str, Any]:
    """CMPTModel's keyword settings: its defaults, updated with ``given``, enums as strings.

    Every setting is filled in (not only the given ones) so that the hyper-parameters saved in
    a checkpoint rebuild the same model even if a default changes later.

    Raises:
        TypeError: if ``given`` names a setting CMPTModel does not have.
    """
    params = inspect.signature(CMPTModel).parameters
    defaults = {
        name: p.default
        for name, p in params.items()
        if p.kind is p.KEYWORD_ONLY and name not in _OWN_MODEL_ARGS
    }
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        msg = (
            f"CMPTModule got unknown arguments {unknown}; besides its own, it accepts the "
            f"settings of CMPTModel: {', '.join(defaults)}"
        )
        raise TypeError(msg)
    settings = {**defaults, **given}
    return {k: v.value if isinstance(v, Enum) else v for k, v in settings.items()}


def missing_trainable(state: Mapping[str, Any], trainable: Collection[str]) -> list[str]:
    """The trainable keys that ``state`` lacks, sorted."""
    return sorted(set(trainable) - set(state))


def missing_message(missing: list[str], what: str = "the state dict") -> str:
    """The error message for a state dict (or checkpoint) that lacks trainable weights."""
    return (
        f"{what} lacks {len(missing)} trainable weights of this CMPTModule (first: "
        f"{missing[:3]}); was it saved with the same clip, lora_rank, lora_targets, fusion "
        f"and method? {_REBUILD}"
    )


def _unexpected_message(unexpected: list[str], own: Mapping[str, Any]) -> str:
    """The error message for keys the module does not have, with the likely cause."""
    first = unexpected[:3]
    if "state_dict" in unexpected:
        return (
            f"got a whole checkpoint (keys such as {first}), not a state dict; pass its "
            "weights: module.load_state_dict(checkpoint['state_dict'])"
        )
    if all(f"model.{key}" in own for key in unexpected):
        return (
            f"the state dict's keys lack the 'model.' prefix (first: {first}): it is a "
            "CMPTModel's; load it into the module's model with the prefix added: "
            "module.load_state_dict({'model.' + k: v for k, v in state.items()})"
        )
    return (
        f"the state dict has {len(unexpected)} keys this CMPTModule does not have (first: "
        f"{first}); was it saved from another model or other settings? {_REBUILD}; "
        "strict=False ignores such keys"
    )


def complete_state_dict(
    state: Mapping[str, Any],
    own: Mapping[str, Any],
    trainable: Collection[str],
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """``state`` with the frozen entries it lacks taken from ``own``, the module's own state.

    A checkpoint's trainable-only state dict thus loads strictly, and a full state dict loads
    as it is.

    Args:
        state: the state dict to load, trainable weights only or full.
        own: the module's own state dict (``module.state_dict()``), which supplies the frozen
            weights (and buffers) that ``state`` leaves out.
        trainable: the names of the module's trainable parameters; ``state`` must hold them all.
        strict: raise on a missing trainable key or an unexpected key; when False, such keys
            are left for ``torch.nn.Module.load_state_dict`` to report.

    Returns:
        The completed state dict (the tensors are not copied).

    Raises:
        RuntimeError: with ``strict``, if ``state`` holds a key ``own`` lacks, or lacks a
            trainable key; the message names the keys and what to call instead.
    """
    if strict:
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise RuntimeError(_unexpected_message(unexpected, own))
        missing = missing_trainable(state, trainable)
        if missing:
            raise RuntimeError(missing_message(missing))
    frozen = {key: value for key, value in own.items() if key not in state and key not in trainable}
    return {**frozen, **state}


def moved_weights_error(error: WeightsFileNotFoundError) -> WeightsFileNotFoundError:
    """``error`` (a ``pretrained`` file that does not exist), telling how to pass its new place.

    A checkpoint stores ``pretrained`` as it was given; when the file has moved since, the
    checkpoint still loads if the new place is passed.
    """
    msg = (
        f"{error}. If the file has moved since the checkpoint was saved, pass its new place: "
        "CMPTModule.load_from_checkpoint(ckpt_path, pretrained='/new/place.bin') in Python, "
        "--model.init_args.pretrained /new/place.bin on the command line"
    )
    return WeightsFileNotFoundError(msg)
