"""What goes wrong when a CLIP's pretrained weights are asked for, said so that a user can fix it.

Both errors are :class:`~cmpt_lightning.errors.UserInputError` subclasses, so ``cmpt`` prints
them as one message; they keep a built-in base (``OSError``, ``ValueError``) for code that
catches those.
"""

from __future__ import annotations

from ..errors import UserInputError

__all__ = ["PretrainedWeightsError", "UnknownPretrainedError"]

_CPU_SMOKE = "configs/cpu_smoke.yaml"


class PretrainedWeightsError(UserInputError, OSError):
    """The weights of a pretrained tag are not cached here and could not be downloaded.

    Args:
        model_name: the open_clip architecture (``ViT-B-16``).
        pretrained: the pretrained tag (``openai``).
        reason: why they could not be had (offline mode, no connection, the download's error).
    """

    def __init__(self, model_name: str, pretrained: str, reason: str) -> None:
        self.model_name = model_name
        self.pretrained = pretrained
        self.reason = reason
        super().__init__(
            f"could not download the {pretrained!r} weights of {model_name!r}: {reason}. "
            f"Is this machine offline? Download them where there is a connection and pass the "
            f"file (--model.init_args.pretrained /path/to/{model_name}.bin), or an open_clip "
            f"folder (--model.init_args.clip local-dir:/path/to/folder, holding "
            f"open_clip_config.json and the weights); for a quick try on a CPU with tiny random "
            f"towers, add --config {_CPU_SMOKE} after your config"
        )

    def __reduce__(self) -> tuple[type[PretrainedWeightsError], tuple[str, str, str]]:
        """Pickle by the constructor's arguments (errors cross process boundaries in sweeps)."""
        return type(self), (self.model_name, self.pretrained, self.reason)


class UnknownPretrainedError(UserInputError, ValueError):
    """``pretrained`` is neither a pretrained tag of the model nor an existing file.

    Args:
        model_name: the open_clip architecture (``ViT-B-16``).
        pretrained: the value given.
        known: the model's pretrained tags (open_clip's ``list_pretrained_tags_by_model``).
    """

    def __init__(self, model_name: str, pretrained: str, known: list[str]) -> None:
        self.model_name = model_name
        self.pretrained = pretrained
        self.known = list(known)
        tags = (
            f"its tags are {', '.join(self.known)}"
            if self.known
            else f"{model_name!r} has no pretrained tags (it is for random weights)"
        )
        super().__init__(
            f"pretrained {pretrained!r} is neither a pretrained tag of {model_name!r} nor an "
            f"existing file; {tags}; or give a weights file, or null for random weights"
        )

    def __reduce__(self) -> tuple[type[UnknownPretrainedError], tuple[str, str, list[str]]]:
        """Pickle by the constructor's arguments (errors cross process boundaries in sweeps)."""
        return type(self), (self.model_name, self.pretrained, self.known)
