"""Pretrained weights that cannot be had fail fast, as one message that says what to do.

No test here may reach the network: every socket connection fails the test (``no_network``),
and the hub's own offline switch is set where a test does not say otherwise.
"""

import pickle
import socket
import time

import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants

import cmpt_lightning.models.clip as clip_module
from cmpt_lightning.errors import UserInputError
from cmpt_lightning.models.clip import build_clip
from cmpt_lightning.models.errors import PretrainedWeightsError, UnknownPretrainedError

HINTS = (
    "'openai' weights of 'ViT-B-16'",
    "could not download",
    "offline",
    "--model.init_args.pretrained /path/to/ViT-B-16.bin",
    "local-dir:",
    "configs/cpu_smoke.yaml",
)


class NetworkUsed(AssertionError):
    """A test tried to open a connection."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        msg = f"a test tried to connect: {args!r}"
        raise NetworkUsed(msg)

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def online(monkeypatch):
    """The hub's offline switch off (the suite runs with HF_HUB_OFFLINE=1)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def _no_download(*args, **kwargs):
    msg = "download_pretrained must not be called"
    raise NetworkUsed(msg)


def test_offline_tag_not_cached_fails_at_once_with_the_fixes(monkeypatch, tmp_path):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as info:
        build_clip("ViT-B-16", "openai", cache_dir=str(tmp_path))  # an empty cache
    assert time.perf_counter() - start < 10
    message = str(info.value)
    for hint in HINTS:
        assert hint in message, hint
    assert "HF_HUB_OFFLINE is set" in message
    assert "\n" not in message
    assert isinstance(info.value, UserInputError) and isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, FileNotFoundError)  # open_clip's, chained


def test_unreachable_hub_fails_without_the_hub_retries(online, monkeypatch, tmp_path):
    def dns_fails(address, timeout=None):
        assert timeout == clip_module.REACH_TIMEOUT_S  # one short try
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", dns_fails)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", _no_download)
    with pytest.raises(PretrainedWeightsError) as info:
        build_clip("ViT-B-16", "openai", cache_dir=str(tmp_path))
    message = str(info.value)
    for hint in HINTS:
        assert hint in message, hint
    assert f"{hf_constants.ENDPOINT} cannot be reached" in message
    assert isinstance(info.value.__cause__, socket.gaierror)


class _Connection:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_failed_download_is_one_error_naming_the_fixes(online, monkeypatch, tmp_path):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Connection())
    failure = FileNotFoundError("Failed to download file (x.bin) for org/repo: 404")

    def download(cfg, cache_dir=None):
        assert cache_dir == str(tmp_path)
        raise failure

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", download)
    with pytest.raises(PretrainedWeightsError) as info:
        build_clip("ViT-B-16", "openai", cache_dir=str(tmp_path))
    assert "404" in str(info.value)
    assert info.value.__cause__ is failure


def test_behind_a_proxy_the_download_decides(online, monkeypatch, tmp_path):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert clip_module._unreachable("https://huggingface.co") is None  # no socket opened
    calls = []

    def download(cfg, cache_dir=None):
        calls.append(cfg["hf_hub"])
        msg = "proxy refused"
        raise FileNotFoundError(msg)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", download)
    with pytest.raises(PretrainedWeightsError, match="proxy refused"):
        build_clip("ViT-B-16", "openai", cache_dir=str(tmp_path))
    assert calls == ["timm/vit_base_patch16_clip_224.openai/"]


def _cache(root, repo_id, filename):
    """A file in the Hugging Face cache layout (refs/main -> snapshots/<commit>/file)."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(b"weights")


def test_cached_weights_are_found_and_used_when_the_hub_is_unreachable(
    online, monkeypatch, tmp_path, caplog
):
    hub = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"]
    assert not clip_module._hub_cached(hub, str(tmp_path))
    _cache(tmp_path, hub.rstrip("/"), "open_clip_model.safetensors")
    assert clip_module._hub_cached(hub, str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _raise(OSError("down")))
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", _no_download)
    clip_module._check_pretrained("ViT-B-16", "openai", str(tmp_path))  # no error: cached
    assert "set HF_HUB_OFFLINE=1" in caplog.text


def _raise(error):
    raise error


@pytest.mark.parametrize(
    ("model", "value", "expected"),
    [
        ("ViT-B-16", "x", "its tags are openai, laion400m_e31"),
        ("ViT-B-16", "laion2b", "laion2b_s34b_b88k"),
        ("cmpt-tiny", "openai", "its tags are world"),
    ],
)
def test_unknown_tag_is_one_line_listing_the_known_tags(model, value, expected):
    with pytest.raises(UnknownPretrainedError) as info:
        build_clip(model, value)
    message = str(info.value)
    assert f"pretrained {value!r} is neither a pretrained tag of {model!r}" in message
    assert expected in message
    assert "null for random weights" in message and "\n" not in message
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)


def test_an_existing_file_without_a_suffix_is_not_taken_for_a_tag(tmp_path):
    path = tmp_path / "weights"
    torch.save(build_clip("cmpt-tiny", init_seed=3).state_dict(), path)
    loaded = build_clip("cmpt-tiny", str(path), init_seed=0)
    torch.testing.assert_close(
        loaded.state_dict(), build_clip("cmpt-tiny", init_seed=3).state_dict()
    )


@pytest.mark.parametrize(
    "error",
    [
        PretrainedWeightsError("ViT-B-16", "openai", "no connection"),
        UnknownPretrainedError("ViT-B-16", "x", ["openai"]),
    ],
)
def test_errors_survive_pickling(error):  # sweeps bring errors back from other processes
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)


def test_a_model_without_tags_says_so():
    message = str(UnknownPretrainedError("my-arch", "openai", []))
    assert "'my-arch' has no pretrained tags" in message and "\n" not in message
