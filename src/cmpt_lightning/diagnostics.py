"""How good the proxies are: distance and retrieval of each proxy to the embedding it stands for.

Measured on the samples where both modalities were encoded, so that the real embedding a proxy
stands for is known: ``text`` names the proxy for the text (made by the image tower, compared
with the real text embedding), ``image`` the proxy for the image (made by the text tower).

- ``proxy_cos_<side>``: mean cosine similarity of proxy and real embedding;
- ``proxy_mse_<side>``: mean squared error, averaged over the embedding's dimensions (the
  alignment loss's ``mse`` distance);
- ``proxy_r1_<side>``: proxy -> real retrieval recall@1: a proxy is a hit when its own sample's
  real embedding is strictly the most cosine-similar among the gallery's (ties are misses), the
  gallery being the epoch's samples with both modalities and a dataset index below
  :data:`GALLERY_SIZE` (chance is 1 / ``proxy_gallery``).

Only ``cmpt`` (its proxies) and ``align_distill`` (its learned stand-ins) are measured; for
the other baselines these metrics are not computed (absent, not NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .models.cmpt import CMPTFeatures

__all__ = [
    "GALLERY_SIZE",
    "PROXY_SIDES",
    "proxy_batch",
    "proxy_hits",
    "proxy_metrics",
    "retrieval_hits",
]

#: The retrieval gallery: the samples of dataset index below this (with both modalities).
GALLERY_SIZE = 4096

#: ``text``: the proxy for the text; ``image``: the proxy for the image.
PROXY_SIDES = ("text", "image")

_NAMES = ("cos", "mse", "r1")


def _pairs(features: CMPTFeatures) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per side, (proxy, real embedding), each [B, D] in float32."""
    return {
        "text": (features.text_proxy.float(), features.text.float()),
        "image": (features.image_proxy.float(), features.image.float()),
    }


def proxy_batch(
    features: CMPTFeatures,
    index: torch.Tensor,
    image_available: torch.Tensor,
    text_available: torch.Tensor,
    gallery_size: int = GALLERY_SIZE,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A batch's per-sample distances, and its rows for the retrieval gallery.

    Args:
        features: the encoded batch (proxies and real embeddings, [B, D]).
        index: [B] dataset indices.
        image_available: bool [B], the image was encoded.
        text_available: bool [B], the text was encoded.
        gallery_size: only samples of index below it join the gallery.

    Returns:
        ``(per_sample, gallery)``: ``proxy_cos_<side>`` and ``proxy_mse_<side>`` [B] (NaN where
        a modality is missing), and for the gallery rows ``index`` and ``proxy_<side>`` /
        ``real_<side>`` embeddings (possibly no rows: collect them anyway, so that every
        process gathers the same tensors).
    """
    both = image_available.bool() & text_available.bool()  # shape = [B]
    nan = torch.full(both.shape, float("nan"), device=both.device)
    per_sample, gallery = {}, {}
    keep = both & (index < gallery_size)
    gallery["index"] = index[keep]
    for side, (proxy, real) in _pairs(features).items():
        cos = F.cosine_similarity(proxy, real, dim=-1)
        mse = (proxy - real).pow(2).mean(dim=-1)
        per_sample[f"proxy_cos_{side}"] = torch.where(both, cos, nan).detach()
        per_sample[f"proxy_mse_{side}"] = torch.where(both, mse, nan).detach()
        gallery[f"proxy_{side}"] = proxy[keep].detach()
        gallery[f"real_{side}"] = real[keep].detach()
    return per_sample, gallery


def retrieval_hits(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Recall@1 per query: query ``i`` is a hit when ``gallery[i]`` is strictly its nearest.

    Args:
        queries: [G, D]; query ``i`` stands for ``gallery[i]``.
        gallery: [G, D].

    Returns:
        bool [G] (cosine similarity; a tie with another gallery item is a miss).
    """
    sim = F.normalize(queries.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T  # [G, G]
    own = sim.diagonal().unsqueeze(1)
    rivals = sim >= own  # shape = [G, G], the own item on the diagonal
    rivals.fill_diagonal_(False)
    return ~rivals.any(dim=1)


def proxy_hits(index: torch.Tensor, gallery: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sample retrieval hits ``proxy_r1_<side>``, aligned with ``index`` (NaN off gallery).

    Args:
        index: [N] dataset indices of the evaluated samples (sorted, as gathered).
        gallery: the gathered gallery (``index``, ``proxy_<side>``, ``real_<side>``) from
            :func:`proxy_batch`.

    Returns:
        ``proxy_r1_<side>`` [N] float: 1 hit, 0 miss, NaN where the sample is not in the gallery.
    """
    out = {}
    where = torch.searchsorted(index, gallery["index"]) if len(gallery["index"]) else None
    for side in PROXY_SIDES:
        values = torch.full(index.shape, float("nan"))
        if where is not None:
            hits = retrieval_hits(gallery[f"proxy_{side}"], gallery[f"real_{side}"])
            values[where] = hits.float()
        out[f"proxy_r1_{side}"] = values
    return out


def _nanmean(values: torch.Tensor) -> float:
    values = values[~values.isnan()]
    return float(values.mean()) if values.numel() else float("nan")


def proxy_metrics(
    data: Mapping[str, torch.Tensor], rows: Mapping[str, torch.Tensor] | None = None
) -> dict[str, float]:
    """Means of the per-sample diagnostics, over every sample or each side's ``rows``.

    Args:
        data: per-sample ``proxy_{cos,mse,r1}_<side>`` (NaN where not measured).
        rows: per side, a bool mask [N] of the samples to average (e.g. those of a test-grid
            cell whose modality the proxy replaced); None: all.

    Returns:
        ``proxy_{cos,mse,r1}_<side>`` (NaN with no sample) and ``count_proxy_<side>``, the
        number of samples with a distance.
    """
    out: dict[str, float] = {}
    for side in PROXY_SIDES:
        mask = None if rows is None else rows[side]
        for name in _NAMES:
            values = data[f"proxy_{name}_{side}"]
            out[f"proxy_{name}_{side}"] = _nanmean(values if mask is None else values[mask])
        cos = data[f"proxy_cos_{side}"]
        out[f"count_proxy_{side}"] = int((~(cos if mask is None else cos[mask]).isnan()).sum())
    return out
