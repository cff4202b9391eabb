"""Numbers that say whether a curve's map is worth reading.

* :func:`smoothness`: mean distance between consecutive items divided by the mean distance over all pairs.
  An ordering that means something (neighbours alike) scores well below 1; an arbitrary order scores
  about 1. Applied to the rendered corner images, to the corners themselves, and to k-means centroids in
  the order k-means returns them (the baseline: same number of points, no order).
* :func:`empty_corners`: corners that no data sits near (see the rule in its docstring).
* :func:`segment_stats`: per segment length, usage and the std of the data along its direction.
* :func:`kmeans`: a small seeded k-means (k-means++ start, Lloyd steps) in plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sfvq import curve

# Empty-corner rule defaults (documented in empty_corners).
MIN_SHARE = 0.1  # a corner's half-segment cell holds less than this fraction of its uniform share 1/K
DIST_FACTOR = 2.0  # or its nearest sample is this many times farther than samples are from the curve


def _as_float(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    return t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def image_features(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Images (K, C, H, W) -> flattened, area-downsampled to at most ``size`` px a side: (K, C*h*w).

    Downsampling makes the image distance follow content (pose, colour, layout) rather than texture noise.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (K, C, H, W), got {tuple(images.shape)}")
    x = images.detach().float()
    H, W = x.shape[-2:]
    if max(H, W) > size:
        x = F.adaptive_avg_pool2d(x, (max(1, H * size // max(H, W)), max(1, W * size // max(H, W))))
    return x.reshape(x.shape[0], -1)


def pairwise_distances(X: torch.Tensor | np.ndarray, metric: str = "l2") -> torch.Tensor:
    """All distances between rows of X (K, D) -> (K, K). ``l2``: Euclidean; ``l1``: mean |difference|."""
    x = _as_float(X)
    if x.ndim != 2:
        raise ValueError(f"expected a (K, D) matrix, got shape {tuple(x.shape)}")
    if metric == "l2":
        return torch.cdist(x.double(), x.double()).to(x.dtype)  # (K, K)
    if metric == "l1":
        return torch.cdist(x.double(), x.double(), p=1).to(x.dtype) / x.shape[1]  # (K, K) mean |diff|
    raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")


def smoothness(X: torch.Tensor | np.ndarray, metric: str = "l2") -> float:
    """Mean distance between consecutive rows of X (K, D) / mean distance over all pairs i < j.

    1.0: the order says nothing (a random order scores about 1 on average); near 0: each item is much
    closer to its neighbours in the order than to the others. Points 0, 1, ..., K-1 on a line score
    3 / (K + 1). NaN when all rows are equal (no distances to compare).
    """
    x = _as_float(X)
    K = x.shape[0] if x.ndim == 2 else 0
    if K < 3:
        raise ValueError(f"smoothness needs at least 3 ordered items, got {K}")
    d = pairwise_distances(x, metric).double()  # (K, K)
    consecutive = torch.diagonal(d, offset=1).mean()  # (K-1,) -> ()
    iu = torch.triu_indices(K, K, offset=1)
    overall = d[iu[0], iu[1]].mean()
    return float(consecutive / overall) if overall > 0 else float("nan")


def image_smoothness(images: torch.Tensor, size: int = 32) -> float:
    """:func:`smoothness` of images (K, C, H, W) in order, as mean absolute pixel difference at <= size px."""
    return smoothness(image_features(images, size), metric="l1")


@torch.no_grad()
def kmeans(
    X: torch.Tensor | np.ndarray,
    k: int,
    *,
    seed: int = 0,
    iters: int = 30,
    tol: float = 1e-4,
    init_samples: int = 5_000,
) -> torch.Tensor:
    """Seeded k-means of X (N, D) -> centroids (k, D), in the order k-means produced them.

    k-means++ seeding on a random subset of at most ``init_samples`` rows, then Lloyd steps until the
    centroids move less than ``tol`` (relative to the data's total variance) or ``iters`` steps; an empty
    cluster is re-seeded with the point farthest from its centroid.
    """
    x = _as_float(X)
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) data, got shape {tuple(x.shape)}")
    N, D = x.shape
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, {N}] for {N} samples, got {k}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    sub = x if N <= init_samples else x[torch.randperm(N, generator=gen, device=x.device)[:init_samples]]
    # k-means++: each new centroid drawn with probability proportional to squared distance to the nearest.
    C = torch.empty(k, D, dtype=x.dtype, device=x.device)
    C[0] = sub[torch.randint(sub.shape[0], (1,), generator=gen, device=x.device)]
    best = (sub - C[0]).pow(2).sum(1)  # (n,)
    for j in range(1, k):
        w = best.double()
        i = (
            torch.multinomial(w / w.sum(), 1, generator=gen)
            if w.sum() > 0
            else torch.randint(sub.shape[0], (1,), generator=gen, device=x.device)
        )
        C[j] = sub[i]
        best = torch.minimum(best, (sub - C[j]).pow(2).sum(1))
    scale = float(x.var(0, unbiased=False).sum()) or 1.0
    xx = (x * x).sum(1)  # (N,)
    for _ in range(iters):
        score = torch.addmm((C * C).sum(1), x, C.T, alpha=-2)  # (N, k): ||x - c||^2 - ||x||^2
        dist, assign = score.min(1)  # (N,)
        dist += xx  # squared distance to the nearest centroid
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(C).index_add_(0, assign, x)  # (k, D)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C)
        for j in (counts == 0).nonzero().flatten().tolist():  # re-seed empty clusters
            far = int(dist.argmax())
            new[j] = x[far]
            dist[far] = 0
        shift = float((new - C).pow(2).sum(1).max())
        C = new
        if shift <= tol * scale:
            break
    return C


@dataclass
class EmptyCorners:
    """Result of :func:`empty_corners`: flagged indices and the numbers behind them."""

    flagged: list[int]
    share: np.ndarray  # (K,) fraction of samples in each corner's half-segment cell
    nearest: np.ndarray  # (K,) distance from each corner to its nearest sample
    typical: float  # median distance from a sample to the curve
    reasons: dict[int, str] = field(default_factory=dict)


@torch.no_grad()
def corner_cells(proj: curve.Projection, K: int) -> torch.Tensor:
    """Count of samples whose projection lies within half a segment of each corner -> (K,).

    Corner k's cell is the second half of segment k-1 (lam >= 0.5) and the first half of segment k.
    """
    owner = proj.segment + (proj.lam >= 0.5).long()  # (N,) corner whose half-segment holds the point
    return torch.bincount(owner, minlength=K)


@torch.no_grad()
def empty_corners(
    X: torch.Tensor | np.ndarray,
    codebook: torch.Tensor | np.ndarray,
    *,
    min_share: float = MIN_SHARE,
    dist_factor: float = DIST_FACTOR,
) -> EmptyCorners:
    """Corners of a curve (K, D) in regions where no data (N, D) projects near them.

    Rule: corner k is flagged when either
      * its half-segment cell (samples projecting onto the half of segment k-1 or of segment k next to it)
        holds less than ``min_share / K`` of the samples (default: a tenth of the uniform share), or
      * its nearest sample is more than ``dist_factor`` times as far as samples typically are from the
        curve (the median distance from a sample to its projection).
    The first catches corners the data does not reach along the curve; the second catches corners that sit
    away from all data, measured against how closely this curve fits the data elsewhere.
    """
    x = _as_float(X)
    C = _as_float(codebook).to(x)
    if x.ndim != 2 or C.ndim != 2 or x.shape[1] != C.shape[1]:
        raise ValueError(
            f"expected data (N, D) and codebook (K, D), got {tuple(x.shape)} and {tuple(C.shape)}"
        )
    N, K = x.shape[0], C.shape[0]
    proj = curve.project(x, C)
    share = (corner_cells(proj, K).double() / N).cpu().numpy()  # (K,)
    nearest = torch.cat([torch.cdist(c, x).min(1).values for c in torch.split(C, 256)])  # (K,)
    typical = float(proj.sqdist.clamp_min(0).sqrt().median())  # sample-to-curve distance
    flagged, reasons = [], {}
    for k in range(K):
        why = []
        if share[k] < min_share / K:
            why.append(f"{share[k] * 100:.2f}% of samples nearby (< {min_share / K * 100:.2f}%)")
        if typical > 0 and float(nearest[k]) > dist_factor * typical:
            why.append(
                f"nearest sample {float(nearest[k]):.3g} > {dist_factor:g} x median sample-to-curve distance "
                f"{typical:.3g}"
            )
        if why:
            flagged.append(k)
            reasons[k] = "; ".join(why)
    return EmptyCorners(flagged, share, nearest.cpu().numpy(), typical, reasons)


@torch.no_grad()
def segment_stats(
    X: torch.Tensor | np.ndarray, codebook: torch.Tensor | np.ndarray
) -> list[dict[str, float]]:
    """One row per segment i (c_i -> c_{i+1}) of a curve (K, D) over data (N, D).

    ``length`` ||c_{i+1} - c_i||; ``usage`` share of samples projecting onto the segment; ``std`` of the
    data projected on the unit direction (the unit an edit's sigma is counted in; 0 for a zero segment).
    """
    x = _as_float(X)
    C = _as_float(codebook).to(x)
    d = C[1:] - C[:-1]  # (S, D)
    length = d.norm(dim=1)  # (S,)
    unit = torch.where(length[:, None] > 0, d / length.clamp_min(1e-30)[:, None], torch.zeros_like(d))
    std = (x @ unit.T).double().std(0, unbiased=False) if x.shape[0] > 1 else torch.zeros(len(d))  # (S,)
    usage = curve.segment_usage(curve.project(x, C).segment, len(d)).double() / x.shape[0]  # (S,)
    return [
        {"segment": i, "length": float(length[i]), "usage": float(usage[i]), "std": float(std[i])}
        for i in range(len(d))
    ]


__all__ = [
    "DIST_FACTOR",
    "MIN_SHARE",
    "EmptyCorners",
    "corner_cells",
    "empty_corners",
    "image_features",
    "image_smoothness",
    "kmeans",
    "pairwise_distances",
    "segment_stats",
    "smoothness",
]
