"""Building open_clip models, tokenizers and image transforms by name, offline-friendly.

The package ships its own open_clip model configs (``cmpt-tiny`` for tests and the demo) and
registers them with :func:`open_clip.add_model_config` when this module is imported.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn

__all__ = ["CONFIG_DIR", "build_clip", "build_image_transform", "build_tokenizer"]

log = logging.getLogger(__name__)

#: Folder of the open_clip model configs shipped with the package.
CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

_LOCAL_DIR = "local-dir:"


def _is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip, the format of OpenAI's own CLIP release."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _tag_quick_gelu(model_name: str, pretrained: str) -> bool | None:
    """The QuickGELU flag the pretrained tag was trained with, or None if it is not a tag."""
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    return bool(cfg.get("quick_gelu", False)) if cfg else None


def _resolve_quick_gelu(model_name: str, pretrained: str | None, quick_gelu: bool | None) -> bool:
    """Decide whether to force QuickGELU, fixing the OpenAI-weights trap instead of degrading.

    OpenAI's CLIP weights were trained with QuickGELU. open_clip's plain configs (``ViT-B-16``)
    use nn.GELU, so loading OpenAI weights into them only warns and silently costs accuracy.
    """
    if quick_gelu is not None or pretrained is None:
        return bool(quick_gelu)
    if model_name.endswith("-quickgelu"):
        return False  # the config already uses QuickGELU
    tag_flag = _tag_quick_gelu(model_name, pretrained)
    if tag_flag is not None:
        if tag_flag:
            log.warning(
                "pretrained tag %r of %r was trained with QuickGELU: using QuickGELU "
                "(set quick_gelu: false to override)",
                pretrained,
                model_name,
            )
        return tag_flag
    if "openai" in Path(pretrained).name.lower():
        log.warning(
            "pretrained file %r looks like OpenAI CLIP weights: using QuickGELU "
            "(set quick_gelu: false if these weights were trained with GELU)",
            pretrained,
        )
        return True
    return False


def build_clip(
    model_name: str,
    pretrained: str | None = None,
    *,
    quick_gelu: bool | None = None,
    init_seed: int = 0,
    cache_dir: str | None = None,
) -> nn.Module:
    """Build an open_clip model with its pretrained weights loaded (strictly), on the CPU.

    Args:
        model_name: an open_clip architecture (``ViT-B-16``, ``cmpt-tiny``) or a
            ``local-dir:/path`` folder holding ``open_clip_config.json`` and weights.
        pretrained: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``), the path of
            a weights file, or None for random weights.
        quick_gelu: force QuickGELU on (True) or off (False); None decides from the tag or file
            name (OpenAI weights need QuickGELU).
        init_seed: seed of the random initialisation, so that a model without pretrained
            weights is rebuilt identically from a checkpoint.
        cache_dir: where open_clip caches downloaded weights.

    Returns:
        The open_clip ``CLIP`` or ``CustomTextCLIP`` instance, in eval mode.

    Raises:
        FileNotFoundError: if ``pretrained`` looks like a path and does not exist.
        ValueError: if ``model_name`` is not a known open_clip architecture.
    """
    if pretrained is not None and not model_name.startswith(_LOCAL_DIR):
        path = Path(pretrained).expanduser()
        looks_like_path = path.suffix != "" or "/" in pretrained or pretrained.startswith(".")
        is_tag = bool(open_clip.get_pretrained_cfg(model_name, pretrained))
        if looks_like_path and not is_tag:
            if not path.is_file():
                msg = (
                    f"pretrained weights file {str(path)!r} does not exist; pass an existing "
                    "file, an open_clip tag (one of "
                    f"{open_clip.list_pretrained_tags_by_model(model_name)}), "
                    "or null for random weights"
                )
                raise FileNotFoundError(msg)
            if _is_torchscript_archive(path):
                log.warning(
                    "%s is a TorchScript archive (OpenAI's release format): loading it with "
                    "open_clip.load_openai_model, which uses QuickGELU",
                    path,
                )
                return open_clip.load_openai_model(str(path), precision="fp32", device="cpu").eval()
            pretrained = str(path)
    if not model_name.startswith(_LOCAL_DIR) and model_name not in open_clip.list_models():
        msg = (
            f"unknown open_clip model {model_name!r}; choose one of open_clip.list_models() "
            f"(e.g. ViT-B-16, ViT-B-32, cmpt-tiny) or pass 'local-dir:/path/to/folder'"
        )
        raise ValueError(msg)
    force_quick_gelu = _resolve_quick_gelu(model_name, pretrained, quick_gelu)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        with warnings.catch_warnings():
            # we resolved the QuickGELU question above; open_clip's own warning would mislead
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_quick_gelu=force_quick_gelu,
                cache_dir=cache_dir,
                device="cpu",
            )
    return model.eval()


def _preprocess_cfg(model_name: str, pretrained: str | None) -> PreprocessCfg:
    """The preprocessing open_clip would attach to this model, computed without weights."""
    if model_name.startswith(_LOCAL_DIR):
        cfg = open_clip.get_model_config(model_name) or {}
        size = cfg.get("vision_cfg", {}).get("image_size", 224)
        extra: dict[str, Any] = cfg.get("preprocess_cfg", {})
        return PreprocessCfg(size=size, **extra)
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        msg = f"unknown open_clip model {model_name!r}; choose one of open_clip.list_models()"
        raise ValueError(msg)
    size = cfg["vision_cfg"].get("image_size", 224)
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    fields = ("mean", "std", "interpolation", "resize_mode", "fill_color")
    kwargs = {key: tag_cfg[key] for key in fields if key in tag_cfg}
    return PreprocessCfg(size=size, **kwargs)


def build_image_transform(
    model_name: str, pretrained: str | None = None, *, train: bool = False
) -> Any:
    """The torchvision transform that turns a PIL image into the model's input tensor.

    Args:
        model_name: the open_clip architecture, as given to :func:`build_clip`.
        pretrained: the pretrained tag (its normalisation constants are used), or None.
        train: use open_clip's training augmentation (random resized crop) instead of the
            deterministic resize and center crop.

    Returns:
        A callable mapping a PIL image to a float tensor of shape [3, H, W].
    """
    return image_transform_v2(_preprocess_cfg(model_name, pretrained), is_train=train)


def build_tokenizer(model_name: str) -> Any:
    """The open_clip tokenizer of ``model_name`` (callable on a list of strings -> [B, L] ids)."""
    return open_clip.get_tokenizer(model_name)
