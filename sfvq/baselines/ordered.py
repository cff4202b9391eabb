"""Classical ordered quantizers at a given K, the baselines of the map-quality table (issue 14).

Each returns an ordered codebook (K, D) float32: a 1-D map whose corner k neighbours corners k-1 and
k+1, read by :func:`sfvq.mapquality.map_quality` exactly as an SFVQ curve is.

* :func:`kmeans_tour`: k-means centroids ordered by a short open tour (nearest-neighbour tour, then
  2-opt moves until none shortens it): the best order of a fixed set of centroids for a short path.
* :func:`som_1d`: a one-dimensional self-organizing map (MiniSom): corners trained together with their
  map neighbours, the classical ordered quantizer.
* :func:`pca_order`: k-means centroids sorted by their first principal component: the cheapest order.

:func:`ordered_baselines` builds all three for one K from one k-means run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfvq.metrics import kmeans

BASELINES = ("kmeans_tour", "som", "pca_order")
TOL = 1e-12  # a 2-opt move is taken only when it shortens the tour by more than this (relative)


def _points(C: Any, name: str = "centroids") -> np.ndarray:
    a = np.asarray(C.detach().cpu().numpy() if isinstance(C, torch.Tensor) else C, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"expected {name} (K >= 1, D), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"the {name} hold NaN or inf")
    return a


def _distances(P: np.ndarray) -> np.ndarray:
    """(K, D) -> (K, K) Euclidean distances, float64."""
    sq = (P * P).sum(1)
    return np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * P @ P.T, 0.0, None))


def tour_length(points: Any, order: Any) -> float:
    """Length of the open path through ``points`` (K, D) in ``order`` (K,)."""
    P = _points(points, "points")[np.asarray(order)]
    return float(np.linalg.norm(P[1:] - P[:-1], axis=1).sum())


def nearest_neighbour_tour(points: Any, start: int | None = None) -> np.ndarray:
    """An open tour (K,) that goes from ``start`` to the nearest unvisited point each time.

    Default start: the point farthest from the centroid of all points (a natural end of an open path).
    """
    P = _points(points, "points")
    K = P.shape[0]
    if start is None:
        start = int(np.argmax(((P - P.mean(0)) ** 2).sum(1)))
    if not 0 <= start < K:
        raise ValueError(f"start must be in [0, {K}), got {start}")
    D = _distances(P)  # (K, K)
    order = [start]
    seen = np.zeros(K, dtype=bool)
    seen[start] = True
    for _ in range(K - 1):
        d = np.where(seen, np.inf, D[order[-1]])  # (K,)
        nxt = int(np.argmin(d))
        order.append(nxt)
        seen[nxt] = True
    return np.asarray(order, dtype=np.int64)


def two_opt(points: Any, order: Any, max_passes: int = 50) -> np.ndarray:
    """Shorten an open tour by 2-opt moves: reverse a stretch ``order[i..j]`` whenever that shortens it.

    For an open path the move replaces edges (i-1, i) and (j, j+1) by (i-1, j) and (i, j+1); a missing
    edge (i = 0 or j = K-1: reversing a prefix or a suffix) counts zero. Each pass tries every i with
    the best j (vectorised over j); passes repeat until none improves or ``max_passes``. A move is taken
    only when it shortens the tour, so the result is never longer than the input.
    """
    P = _points(points, "points")
    p = np.asarray(order, dtype=np.int64).copy()
    K = P.shape[0]
    if sorted(p.tolist()) != list(range(K)):
        raise ValueError(f"order must be a permutation of 0..{K - 1}")
    if K < 3:
        return p
    D = _distances(P)  # (K, K)
    scale = max(float(D.max()), 1e-300)
    for _ in range(max_passes):
        improved = False
        for i in range(K - 1):
            j = np.arange(i + 1, K)  # (m,) candidate ends of the reversed stretch
            a = p[i]
            b = p[j]  # (m,)
            nxt = p[np.minimum(j + 1, K - 1)]  # (m,) the point after b (unused where j = K-1)
            has_next = j < K - 1
            old_next = np.where(has_next, D[b, nxt], 0.0)
            new_next = np.where(has_next, D[a, nxt], 0.0)
            if i > 0:
                prev = p[i - 1]
                delta = D[prev, b] - D[prev, a] + new_next - old_next  # (m,)
            else:
                delta = new_next - old_next
            best = int(np.argmin(delta))
            if delta[best] < -TOL * scale:
                jj = int(j[best])
                p[i : jj + 1] = p[i : jj + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return p


def shortest_tour(points: Any, max_passes: int = 50) -> np.ndarray:
    """A short open tour through ``points`` (K, D): nearest-neighbour start, then :func:`two_opt`."""
    return two_opt(points, nearest_neighbour_tour(points), max_passes=max_passes)


def kmeans_tour(centroids: Any) -> torch.Tensor:
    """Centroids (K, D) reordered along :func:`shortest_tour` -> (K, D) float32."""
    C = _points(centroids)
    return torch.from_numpy(C[shortest_tour(C)]).float()


def pca_order(centroids: Any) -> torch.Tensor:
    """Centroids (K, D) sorted by their coordinate on the centroids' first principal component -> (K, D)."""
    C = _points(centroids)
    centred = C - C.mean(0)
    if C.shape[0] < 2 or not np.any(centred):
        return torch.from_numpy(C).float()
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt[0]: (D,) first principal axis
    score = centred @ vt[0]  # (K,)
    return torch.from_numpy(C[np.argsort(score, kind="stable")]).float()


def som_1d(
    X: Any,
    k: int,
    *,
    seed: int = 0,
    iterations: int | None = None,
    sigma: float | None = None,
    learning_rate: float = 0.5,
) -> torch.Tensor:
    """A one-dimensional self-organizing map of ``k`` units trained on X (N, D) with MiniSom -> (k, D).

    Units start at random samples (seeded); the Gaussian neighbourhood shrinks linearly from ``sigma``
    (default k/2, wide enough to unfold the chain) to 1 and the rate from ``learning_rate`` to 0 over
    ``iterations`` single-sample updates in random order (default ``clip(50 k, 10_000, 100_000)``).
    """
    try:
        from minisom import MiniSom
    except ImportError as e:  # a dependency of sfvq: only a broken install lacks it
        raise ImportError("the self-organizing map baseline needs MiniSom: pip install minisom") from e
    data = _points(X, "samples")
    N, D = data.shape
    if not 2 <= k <= N:
        raise ValueError(f"a 1-D SOM needs 2 <= k <= {N} (the samples), got k={k}")
    steps = iterations if iterations is not None else int(np.clip(50 * k, 10_000, 100_000))
    som = MiniSom(
        1,
        k,
        D,
        sigma=float(sigma if sigma is not None else max(1.0, k / 2)),
        learning_rate=learning_rate,
        decay_function="linear_decay_to_zero",
        sigma_decay_function="linear_decay_to_one",
        neighborhood_function="gaussian",
        random_seed=seed,
    )
    som.random_weights_init(data)
    som.train(data, steps, random_order=True)
    return torch.from_numpy(np.asarray(som.get_weights(), dtype=np.float64).reshape(k, D)).float()


def ordered_baselines(
    X: Any, k: int, *, seed: int = 0, som_iterations: int | None = None
) -> dict[str, torch.Tensor]:
    """The three ordered baselines at ``k`` corners for samples X (N, D): ``{"kmeans_tour", "som",
    "pca_order"}`` -> (k, D) float32 each; the tour and the PCA order share one seeded k-means."""
    data = torch.from_numpy(_points(X, "samples")).float()  # (N, D)
    C = kmeans(data, k, seed=seed)  # (k, D)
    return {
        "kmeans_tour": kmeans_tour(C),
        "som": som_1d(data.numpy(), k, seed=seed, iterations=som_iterations),
        "pca_order": pca_order(C),
    }


__all__ = [
    "BASELINES",
    "kmeans_tour",
    "nearest_neighbour_tour",
    "ordered_baselines",
    "pca_order",
    "shortest_tour",
    "som_1d",
    "tour_length",
    "two_opt",
]
