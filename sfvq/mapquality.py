"""How well an ordered codebook maps the data it was fitted to (issue 14): quantization, topology and
usage measures per bitrate, beside the classical ordered quantizers at equal K.

An ordered codebook (K, D) is read as a 1-D map: corner k's neighbours on the map are corners k-1 and
k+1 (the curve through the corners in order). :func:`map_quality` computes every measure of one codebook
on samples X (N, D); :func:`recommend_bits` picks the bitrate a user should read first.

Only torch and numpy here; scikit-learn's trustworthiness is imported where it is used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from sfvq import curve

# Trustworthiness / continuity: neighbours compared and rows kept (a seeded random subset) so that the
# (n, n) distance matrices scikit-learn builds stay small.
NEIGHBORS = 10
SUBSAMPLE = 2_000
# Rows of X read at a time (float32), so an (n, K) block of distances stays a few MiB.
CHUNK_BYTES = 8 * 2**20

# The bitrate recommendation (recommend_bits): the knee is where an extra bit cuts the nearest-corner MSE
# by less than this share of the best cut seen below; a readable map uses at least half its corners
# effectively (usage KL <= 1 bit) and most samples' two nearest corners are map neighbours.
KNEE_RATIO = 0.5
MAX_USAGE_KL = 1.0
MAX_TOPOGRAPHIC = 0.5


def u_profile(codebook: torch.Tensor) -> torch.Tensor:
    """The U-profile of an ordered codebook: the distance between each pair of consecutive corners.

    (K, D) -> (K-1,). Large values mark where the curve jumps between regions of the latent space; drawn
    under the panoptic map they show the region boundaries between its tiles.
    """
    if codebook.ndim != 2 or codebook.shape[0] < 2:
        raise ValueError(f"u_profile needs a (K >= 2, D) codebook, got shape {tuple(codebook.shape)}")
    return (codebook[1:] - codebook[:-1]).norm(dim=1)  # (K-1,)


def _codebook(codebook: Any) -> torch.Tensor:
    C = torch.as_tensor(np.asarray(codebook) if not isinstance(codebook, torch.Tensor) else codebook)
    C = C.detach().cpu().to(torch.float64)
    if C.ndim != 2 or C.shape[0] < 3:
        raise ValueError(f"expected an ordered (K >= 3, D) codebook, got shape {tuple(C.shape)}")
    if not bool(torch.isfinite(C).all()):
        raise ValueError("the codebook holds NaN or inf")
    return C


def _rows(X: Any, D: int) -> Any:
    """X as something sliceable by rows (a tensor or numpy array / memory map), checked to be (N >= 2, D)."""
    shape = tuple(getattr(X, "shape", ()))
    if len(shape) != 2 or shape[1] != D:
        raise ValueError(f"expected samples (N, {D}) for a {D}-D codebook, got shape {shape or None}")
    if shape[0] < 2:
        raise ValueError(f"need at least 2 samples, got {shape[0]}")
    return X


def _chunk(X: Any, start: int, stop: int) -> torch.Tensor:
    block = X[start:stop]
    if isinstance(block, torch.Tensor):
        t = block.detach().cpu().to(torch.float64)  # (n, D)
    else:  # a copy: a memory map's pages are read-only
        t = torch.from_numpy(np.array(block, dtype=np.float64))  # (n, D)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"the samples hold NaN or inf (rows {start}..{stop - 1})")
    return t


@torch.no_grad()
def two_nearest(X: Any, codebook: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest and second-nearest corner of every sample, read in chunks.

    X (N, D), codebook (K >= 2, D) -> indices (N, 2) long and Euclidean distances (N, 2) float64,
    column 0 the best matching unit (BMU), column 1 the second BMU.
    """
    C = torch.as_tensor(codebook).detach().cpu().to(torch.float64)  # (K, D)
    X = _rows(X, C.shape[1])
    N, K = X.shape[0], C.shape[0]
    centre = C.mean(0)  # centring keeps precision when the data share a large offset (StyleGAN's W)
    c = C - centre  # (K, D)
    cc = (c * c).sum(1)  # (K,)
    rows = max(64, CHUNK_BYTES // (8 * max(K, C.shape[1])))
    idx = torch.empty(N, 2, dtype=torch.long)
    dist = torch.empty(N, 2, dtype=torch.float64)
    for start in range(0, N, rows):
        x = _chunk(X, start, min(N, start + rows)) - centre  # (n, D)
        sq = (x * x).sum(1, keepdim=True) + cc - 2 * x @ c.T  # (n, K) squared distances
        d, i = sq.topk(2, dim=1, largest=False)  # (n, 2), ascending
        idx[start : start + len(x)] = i
        dist[start : start + len(x)] = d.clamp_min(0).sqrt()
    return idx, dist


def quantization_error(dist1: torch.Tensor) -> tuple[float, float]:
    """(mean squared error, mean distance) to the nearest corner, from the BMU distances (N,)."""
    return float(dist1.pow(2).mean()), float(dist1.mean())


def topographic_error(idx: torch.Tensor) -> float:
    """Share of samples whose two nearest corners (idx (N, 2)) are not neighbours on the map (|i - j| != 1).

    0: every sample's BMU and second BMU are adjacent corners; 1: none are.
    """
    return float(((idx[:, 0] - idx[:, 1]).abs() != 1).double().mean())


def kaski_lagus(idx: torch.Tensor, dist: torch.Tensor, codebook: Any) -> float:
    """Kaski-Lagus error (Kaski & Lagus 1996), averaged over the samples.

    For a sample x with BMU i and second BMU j: ``||x - c_i||`` plus the length of the shortest path
    from c_i to c_j through neighbouring units of the map; on a 1-D map (the curve) that path is the
    polyline along the curve, ``sum_{k=min(i,j)}^{max(i,j)-1} ||c_{k+1} - c_k||``. It joins quantization
    (first term) and topology (second term: long when the two nearest corners lie far apart on the map).
    """
    C = torch.as_tensor(codebook).detach().cpu().to(torch.float64)
    arc = torch.cat([torch.zeros(1, dtype=torch.float64), u_profile(C).cumsum(0)])  # (K,) length to corner k
    path = (arc[idx[:, 0]] - arc[idx[:, 1]]).abs()  # (N,)
    return float((dist[:, 0] + path).mean())


def usage(counts: torch.Tensor | np.ndarray) -> dict[str, float]:
    """How evenly the corners are used, from the count of samples per BMU (K,).

    * ``usage_kl``: KL divergence of the use distribution p from uniform, in bits: ``sum p log2(p K)``
      (0: every corner equally used; log2 K: one corner takes all);
    * ``sparseness``: Hoyer's sparseness of p, ``(sqrt(K) - |p|_1 / |p|_2) / (sqrt(K) - 1)``
      (0: uniform; 1: one corner);
    * ``entropy``: ``-sum p log2 p`` in bits (log2 K = bitrate: uniform; 0: one corner);
      ``entropy + usage_kl = log2 K``.
    """
    n = torch.as_tensor(np.asarray(counts)).to(torch.float64).flatten()
    K = n.numel()
    if K < 2 or bool((n < 0).any()) or float(n.sum()) <= 0:
        raise ValueError(f"usage needs non-negative counts of K >= 2 corners with a positive sum, got {K}")
    p = n / n.sum()  # (K,)
    nz = p[p > 0]
    entropy = float(-(nz * nz.log2()).sum())
    hoyer = (math.sqrt(K) - float(p.sum() / p.norm())) / (math.sqrt(K) - 1)
    return {"usage_kl": math.log2(K) - entropy, "sparseness": hoyer, "entropy": entropy}


def map_position(X: Any, codebook: Any) -> torch.Tensor:
    """Position of each sample (N, D) on the 1-D map: its projection onto the curve as a fractional
    corner index ``segment + lambda`` in [0, K-1] (corners equally spaced, as the panoptic map shows them)
    -> (N,) float64."""
    C = torch.as_tensor(codebook).detach().cpu().to(torch.float64)
    X = _rows(X, C.shape[1])
    x = _chunk(X, 0, X.shape[0])  # (N, D): only called on a subsample
    proj = curve.project(x, C)
    return proj.segment.to(torch.float64) + proj.lam


def trustworthiness_continuity(
    X: Any, codebook: Any, *, neighbors: int = NEIGHBORS, subsample: int = SUBSAMPLE, seed: int = 0
) -> tuple[float, float]:
    """Trustworthiness and continuity (Venna & Kaski) between the samples and their 1-D map positions.

    Trustworthiness: are the samples next to each other on the map also neighbours in the latent space
    (scikit-learn's ``trustworthiness(X, t)``); continuity: are latent neighbours also map neighbours
    (the same with the spaces swapped, ``trustworthiness(t, X)``). Both in [0, 1], 1 is best. Computed on
    a seeded random subset of at most ``subsample`` rows (the measure builds (n, n) distance matrices).
    """
    try:
        from sklearn.manifold import trustworthiness
    except ImportError as e:  # a dependency of sfvq: only a broken install lacks it
        raise ImportError("trustworthiness/continuity need scikit-learn: pip install scikit-learn") from e
    C = torch.as_tensor(codebook).detach().cpu().to(torch.float64)
    X = _rows(X, C.shape[1])
    N = X.shape[0]
    if N > subsample:
        gen = torch.Generator().manual_seed(seed)
        keep = torch.randperm(N, generator=gen)[:subsample].sort().values.numpy()
        x = _chunk(np.asarray(X)[keep] if not isinstance(X, torch.Tensor) else X[keep], 0, len(keep))
    else:
        x = _chunk(X, 0, N)
    n = x.shape[0]
    k = min(neighbors, (n - 1) // 2)  # scikit-learn requires n_neighbors < n / 2
    if k < 1:
        raise ValueError(f"trustworthiness needs at least 4 samples, got {n}")
    t = map_position(x, C)[:, None].numpy()  # (n, 1)
    xs = x.numpy()  # (n, D)
    return float(trustworthiness(xs, t, n_neighbors=k)), float(trustworthiness(t, xs, n_neighbors=k))


@dataclass
class MapQuality:
    """Every measure of one ordered codebook on one set of samples (see :func:`map_quality`)."""

    mse: float  # mean squared distance to the nearest corner (lower is better)
    mean_distance: float  # mean Euclidean distance to the nearest corner (lower is better)
    topographic_error: float  # share of samples whose 2 nearest corners are not map neighbours (lower)
    kaski_lagus: float  # BMU distance + path along the curve from BMU to 2nd BMU, mean (lower)
    trustworthiness: float  # map neighbours are latent neighbours, in [0, 1] (higher)
    continuity: float  # latent neighbours are map neighbours, in [0, 1] (higher)
    usage_kl: float  # KL(corner use || uniform) in bits (lower)
    sparseness: float  # Hoyer sparseness of corner use, in [0, 1] (lower)
    entropy: float  # entropy of corner use in bits, at most log2 K (higher)
    smoothness: float  # sfvq.metrics.smoothness of the corners in order (lower)
    u_profile: list[float]  # (K-1,) distance between consecutive corners

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def map_quality(
    codebook: Any,
    X: Any,
    *,
    neighbors: int = NEIGHBORS,
    subsample: int = SUBSAMPLE,
    seed: int = 0,
) -> MapQuality:
    """Every map-quality measure of an ordered codebook (K, D) on samples X (N, D).

    X may be a tensor, an array or a memory map: the nearest-corner measures read it in chunks; the
    trustworthiness and continuity use a seeded subset of at most ``subsample`` rows.
    """
    from sfvq.metrics import smoothness

    C = _codebook(codebook)  # (K, D) float64
    X = _rows(X, C.shape[1])
    idx, dist = two_nearest(X, C)  # (N, 2), (N, 2)
    mse, mean_distance = quantization_error(dist[:, 0])
    trust, cont = trustworthiness_continuity(X, C, neighbors=neighbors, subsample=subsample, seed=seed)
    use = usage(torch.bincount(idx[:, 0], minlength=C.shape[0]))
    return MapQuality(
        mse=mse,
        mean_distance=mean_distance,
        topographic_error=topographic_error(idx),
        kaski_lagus=kaski_lagus(idx, dist, C),
        trustworthiness=trust,
        continuity=cont,
        usage_kl=use["usage_kl"],
        sparseness=use["sparseness"],
        entropy=use["entropy"],
        smoothness=smoothness(C),
        u_profile=u_profile(C).tolist(),
    )


def recommend_bits(
    per_bits: dict[int, dict[str, Any]],
    baseline_topographic: dict[int, float] | None = None,
    *,
    knee_ratio: float = KNEE_RATIO,
    max_usage_kl: float = MAX_USAGE_KL,
    max_topographic: float = MAX_TOPOGRAPHIC,
) -> tuple[int, str]:
    """The bitrate to read first and one sentence saying why.

    Rule, on the bitrates in ``per_bits`` (bits -> the measures of :func:`map_quality`):
      1. the knee of the error curve: going up one bit at a time, stop before the first bitrate whose
         extra bit cut the nearest-corner MSE (relative to the MSE one bit below) by less than
         ``knee_ratio`` (half) of the largest cut seen below it: past the knee more corners buy little
         and only make the map longer to read. The rule is scale-free: in a high-dimensional latent space
         every bit cuts the MSE by a few percent, on 2-D data by half;
      2. of the bitrates up to the knee, the largest readable one: its corners are used (usage KL from
         uniform at most ``max_usage_kl`` = 1 bit: at least half the corners effectively in use,
         2**entropy >= K/2), most samples' two nearest corners are map neighbours (topographic error at
         most ``max_topographic`` = 0.5), and its order is no worse than a shortest tour through
         k-means centroids at the same K (topographic error at most ``baseline_topographic[bits]``;
         skipped without it).
    When none is readable the smallest bitrate is suggested and the sentence names what failed.
    """
    if not per_bits:
        raise ValueError("no bitrates to recommend from")
    bits = sorted(per_bits)
    base = baseline_topographic or {}
    knee, stop_reason, best_cut = bits[-1], "", 0.0
    for lo, hi in zip(bits, bits[1:], strict=False):
        prev = per_bits[lo]["mse"]
        cut = (prev - per_bits[hi]["mse"]) / prev if prev > 0 else 0.0
        if best_cut > 0 and cut < knee_ratio * best_cut:
            knee = lo
            stop_reason = (
                f"; {hi} bits cut it by only {cut:.1%}, under {knee_ratio:g} x the best {best_cut:.1%}"
            )
            break
        best_cut = max(best_cut, cut)
    why_not: dict[int, str] = {}
    chosen = None
    for b in bits:
        if b > knee:
            break
        m = per_bits[b]
        reasons = []
        if m["usage_kl"] > max_usage_kl:
            reasons.append(f"usage KL {m['usage_kl']:.2f} bits > {max_usage_kl:g}")
        if m["topographic_error"] > max_topographic:
            reasons.append(f"topographic error {m['topographic_error']:.2f} > {max_topographic:g}")
        elif b in base and m["topographic_error"] > base[b]:
            reasons.append(
                f"topographic error {m['topographic_error']:.2f} > the k-means tour's {base[b]:.2f}"
            )
        if reasons:
            why_not[b] = " and ".join(reasons)
        else:
            chosen = b
    if chosen is None:
        b = bits[0]
        why = f"{b} bits: {why_not[b]}"
        return (
            b,
            f"No bitrate up to the knee of the error curve is readable ({why}); the smallest is suggested.",
        )
    m = per_bits[chosen]
    tour = f", the k-means tour's {base[chosen]:.2f}" if chosen in base else ""
    above = next((f"; {b} bits: {why_not[b]}" for b in bits if b > chosen and b in why_not), "")
    return chosen, (
        f"{chosen} bits is the largest bitrate up to the knee of the error curve (each extra bit still cut "
        f"the nearest-corner MSE by at least {knee_ratio:g} x the best cut{stop_reason}) whose corners are "
        f"used (usage KL {m['usage_kl']:.2f} <= {max_usage_kl:g} bit) and whose order holds (topographic "
        f"error {m['topographic_error']:.2f} <= {max_topographic:g}{tour}){above}."
    )


__all__ = [
    "MapQuality",
    "kaski_lagus",
    "map_position",
    "map_quality",
    "quantization_error",
    "recommend_bits",
    "topographic_error",
    "trustworthiness_continuity",
    "two_nearest",
    "u_profile",
    "usage",
]
