"""Principal components, one implementation for the feature spaces and the GANSpace baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PCA:
    """Principal components of rows of X: ``mean`` (D,), ``components`` (k, D) orthonormal rows, ``std``
    (k,) the data's standard deviation along each, ``explained`` (k,) each one's share of the variance."""

    mean: torch.Tensor
    components: torch.Tensor
    std: torch.Tensor
    explained: torch.Tensor


def pca(X: torch.Tensor | np.ndarray, k: int, *, seed: int = 0, niter: int = 6) -> PCA:
    """The top ``k`` principal components of X (N, D).

    Small problems get an exact SVD in float64; large ones a randomised SVD in float32 (``niter`` power
    iterations, a fixed ``seed`` for its random test matrix, accurate for the top components). Each
    component's sign is fixed so that its largest-magnitude entry is positive: a refit gives the same axes.
    """
    x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if x.ndim != 2:
        raise ValueError(f"expected samples of shape (N, D), got {tuple(x.shape)}")
    N, D = x.shape
    if N < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {N}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = min(k, D, N - 1)
    exact = min(N, D) <= 512 or k + 20 >= min(N, D)
    x = x.to(torch.float64 if exact else torch.float32)
    mean = x.mean(0)  # (D,)
    xc = x - mean  # (N, D)
    total = float(xc.pow(2).sum(dtype=torch.float64)) / (N - 1)
    if exact:
        _, s, vt = torch.linalg.svd(xc, full_matrices=False)  # s (r,), vt (r, D)
        comps = vt[:k]
    else:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # svd_lowrank draws a random test matrix
        try:
            _, s, v = torch.svd_lowrank(xc, q=min(k + 20, N, D), niter=niter)  # v (D, q)
        finally:
            torch.random.set_rng_state(state)
        comps = v[:, :k].T
    var = s[:k].double() ** 2 / (N - 1)  # (k,)
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))  # (k, 1)
    comps = comps * sign
    explained = var / total if total > 0 else torch.zeros_like(var)
    return PCA(mean.float(), comps.float().contiguous(), var.sqrt().float(), explained.float())
