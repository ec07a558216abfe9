"""Building open_clip models, tokenizers and image transforms by name, offline-friendly.

The package ships its own open_clip model configs (``cmpt-tiny`` for tests and the demo) and
registers them with :func:`open_clip.add_model_config` when this module is imported. It also
ships pretrained weights for them, registered as open_clip pretrained tags
(:data:`PACKAGE_WEIGHTS`: ``cmpt-tiny`` / ``world`` and ``world2``, CLIPs pretrained on the
procedural world by ``scripts/pretrain_world_clip.py``; ``world2`` trained 4x as long), so
``pretrained: world2`` goes through the same path as ``pretrained: openai``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import open_clip
import open_clip.pretrained
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn

from ..errors import UserInputError
from .errors import PretrainedWeightsError, UnknownPretrainedError

__all__ = [
    "CONFIG_DIR",
    "PACKAGE_WEIGHTS",
    "WEIGHTS_DIR",
    "WeightsFileNotFoundError",
    "build_clip",
    "build_image_transform",
    "build_tokenizer",
]

log = logging.getLogger(__name__)

#: Folder of the open_clip model configs shipped with the package.
CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

#: Folder of the pretrained weights shipped with the package.
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: The package's pretrained weights: architecture -> tag -> file in :data:`WEIGHTS_DIR`.
PACKAGE_WEIGHTS: dict[str, dict[str, str]] = {
    "cmpt-tiny": {
        "world": "cmpt-tiny-world.safetensors",
        # 4x the pretraining steps of `world` (recall@1 about four fifths of the Bayes ceiling)
        "world2": "cmpt-tiny-world2.safetensors",
    },
}
for _model, _tags in PACKAGE_WEIGHTS.items():
    for _tag, _file in _tags.items():
        # open_clip's own registry: `file` entries are loaded from disk, never downloaded
        open_clip.pretrained._PRETRAINED.setdefault(_model, {})[_tag] = open_clip.pretrained._pcfg(
            file=str(WEIGHTS_DIR / _file)
        )

_LOCAL_DIR = "local-dir:"

#: What open_clip logs (a root-logger WARNING) whenever it builds a model without weights.
_RANDOM_INIT_MESSAGE = "No pretrained weights loaded"


class WeightsFileNotFoundError(UserInputError, FileNotFoundError):
    """The ``pretrained`` weights file does not exist (the message names it and the choices)."""


class _DropMessage(logging.Filter):
    """A logging filter that drops the records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless its message contains :attr:`text`."""
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init(active: bool = True) -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded" warning, only inside this block.

    open_clip logs it on the root logger whenever ``pretrained`` is None, which for this
    package is a choice (the tiny test model, a seeded random init), not a problem. With
    ``active`` False (weights were asked for) the block changes nothing.
    """
    if not active:
        yield
        return
    root = logging.getLogger()
    drop = _DropMessage(_RANDOM_INIT_MESSAGE)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


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


#: Seconds to wait for the weights' host before calling it unreachable.
REACH_TIMEOUT_S = 5.0

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _unreachable(url: str, timeout: float = REACH_TIMEOUT_S) -> OSError | None:
    """The error of a TCP connection to ``url``'s host, or None when it connects.

    One try with a short timeout: the Hugging Face client retries a failed connection five
    times with backoff (about 25 s per file, two files per tag; minutes where a firewall drops
    packets), and only then fails. Behind a proxy (``HTTPS_PROXY``, ``ALL_PROXY``) only the
    download itself can tell, so this says None.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as err:
        return err


def _hub_cached(hf_hub: str, cache_dir: str | None) -> bool:
    """Whether the weights open_clip reads for an ``hf_hub`` entry are in the local cache.

    ``hf_hub`` is ``org/repo/`` (the default file) or ``org/repo/file``; open_clip takes a
    ``.safetensors`` twin of the file first when there is one.
    """
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    names = [filename]
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return any(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir), str)
        for name in names
    )


def _check_pretrained(model_name: str, pretrained: str, cache_dir: str | None) -> None:
    """Make sure open_clip will find the weights of ``pretrained``, or say what to do instead.

    A tag's weights are downloaded here (open_clip then finds them in the cache), so that a
    failure becomes one :class:`PretrainedWeightsError` naming the fixes, and fails fast:
    at once under ``HF_HUB_OFFLINE=1``, within :data:`REACH_TIMEOUT_S` without a connection.

    Raises:
        UnknownPretrainedError: if ``pretrained`` is neither a tag of the model nor a file.
        PretrainedWeightsError: if the tag's weights are not cached and cannot be downloaded.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        if not os.path.isfile(pretrained):
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise UnknownPretrainedError(model_name, pretrained, tags)
        return
    if "file" in cfg and not os.path.isfile(cfg["file"]):
        reason = f"its weights file {cfg['file']!r} is missing; reinstall cmpt-lightning"
        raise PretrainedWeightsError(model_name, pretrained, reason)
    hf_hub = cfg.get("hf_hub")
    if "file" in cfg or not hf_hub:
        return  # a local file, or a plain URL that open_clip downloads itself
    if not hf_constants.HF_HUB_OFFLINE:
        unreachable = _unreachable(hf_constants.ENDPOINT)
        if unreachable is not None:
            if _hub_cached(hf_hub, cache_dir):
                log.warning(
                    "%s cannot be reached (%s): open_clip will use the cached %r weights of "
                    "%r after its retries; set HF_HUB_OFFLINE=1 to skip them",
                    hf_constants.ENDPOINT,
                    unreachable,
                    pretrained,
                    model_name,
                )
                return
            reason = (
                f"they are not in the Hugging Face cache and {hf_constants.ENDPOINT} cannot "
                f"be reached ({unreachable})"
            )
            raise PretrainedWeightsError(model_name, pretrained, reason) from unreachable
    try:
        open_clip.pretrained.download_pretrained(cfg, cache_dir=cache_dir)
    except (OSError, RuntimeError) as err:
        reason = str(err)
        if hf_constants.HF_HUB_OFFLINE:
            reason = "they are not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        raise PretrainedWeightsError(model_name, pretrained, reason) from err


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
        WeightsFileNotFoundError: if ``pretrained`` looks like a path and does not exist (a
            ``FileNotFoundError``).
        ValueError: if ``model_name`` is not a known open_clip architecture.
        UnknownPretrainedError: if ``pretrained`` is neither a tag of the model nor a file (a
            ``ValueError``).
        PretrainedWeightsError: if a tag's weights are not cached and cannot be downloaded
            (offline, no connection; an ``OSError``).
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
                raise WeightsFileNotFoundError(msg)
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
    if pretrained is not None and not model_name.startswith(_LOCAL_DIR):
        _check_pretrained(model_name, pretrained, cache_dir)
    force_quick_gelu = _resolve_quick_gelu(model_name, pretrained, quick_gelu)
    random_init = pretrained is None and not model_name.startswith(_LOCAL_DIR)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        with warnings.catch_warnings(), _quiet_random_init(random_init):
            # we resolved the QuickGELU question above; open_clip's own warning would mislead
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                force_quick_gelu=force_quick_gelu,
                cache_dir=cache_dir,
                device="cpu",
            )
    if random_init:
        log.debug("%s: random weights (pretrained is None), init_seed %d", model_name, init_seed)
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
