"""GANSpace directions (Härkönen et al., 2020): principal components of sampled latents or activations.

Two forms, both returned as a :class:`~sfvq.directions.DirectionSet` ordered by explained variance:

* :func:`ganspace_latent`: PCA of latents sampled in a :class:`~sfvq.spaces.LatentSpace` (W for
  StyleGAN, as in the paper; z; or sfvq's first-layer feature space). Each component is a unit vector
  in the space and its ``std`` is the square root of its eigenvalue (the data's spread along it).
* :func:`ganspace_activations`: the paper's variant for generators without a mapping network (it used it
  for BigGAN): PCA of one layer's activations for sampled z, then a least-squares regression of z on the
  PCA coordinates, ``z ~ U x + b``; column ``U[:, j]`` is component j carried back to z. Directions
  live in z, so any edit tool that works in z can apply them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sfvq.directions import Direction, DirectionSet, data_covariance, std_along
from sfvq.pca import PCA, pca


def ganspace_latent(
    space: Any, X: np.ndarray | torch.Tensor, k: int = 10, *, prefix: str = "pc"
) -> DirectionSet:
    """GANSpace in a latent space: the top ``k`` principal components of the space's samples X (N, dim).

    ``space`` is the :class:`~sfvq.spaces.LatentSpace` X was sampled in (its description goes into the
    set's metadata). Names are ``pc0``, ``pc1``, ... (or ``prefix`` + index).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != space.dim:
        raise ValueError(
            f"expected samples of space {space.name!r} with shape (N, {space.dim}), got {X.shape}"
        )
    p = pca(X, k)
    dirs = [
        Direction(
            name=f"{prefix}{j}",
            vector=p.components[j],
            source={
                "method": "ganspace",
                "variant": "latent",
                "space": space.name,
                "component": j,
                "explained": float(p.explained[j]),
            },
            std=float(p.std[j]),
        )
        for j in range(p.components.shape[0])
    ]
    return DirectionSet(
        dirs, dim=space.dim, meta={"method": "ganspace", "variant": "latent", "space": space.describe()}
    )


@dataclass
class ActivationFit:
    """What :func:`ganspace_activations` fitted: the activations' PCA and the regression ``z ~ U x + b``
    (U (z_dim, k), b (z_dim,)), with the share of z's variance the regression explains (R^2)."""

    pca: PCA
    U: torch.Tensor
    b: torch.Tensor
    r2: float


def fit_activation_regression(z: torch.Tensor, feats: torch.Tensor, k: int) -> ActivationFit:
    """PCA of activations (N, F) to ``k`` components, then least squares z (N, z_dim) ~ U x + b on the
    PCA coordinates x (N, k): GANSpace's way back from activation components to z."""
    if z.ndim != 2 or feats.ndim != 2 or z.shape[0] != feats.shape[0]:
        raise ValueError(
            f"expected z (N, z_dim) and activations (N, F), got {tuple(z.shape)}, {tuple(feats.shape)}"
        )
    p = pca(feats, k)
    x = (feats.double() - p.mean.double()) @ p.components.double().T  # (N, k)
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)  # (N, k+1)
    sol = torch.linalg.lstsq(design, z.double()).solution  # (k+1, z_dim)
    U, b = sol[:-1].T, sol[-1]  # (z_dim, k), (z_dim,)
    resid = z.double() - design @ sol  # (N, z_dim)
    zc = z.double() - z.double().mean(0)
    r2 = 1.0 - float(resid.pow(2).sum() / zc.pow(2).sum().clamp_min(1e-300))
    return ActivationFit(p, U.float(), b.float(), r2)


def ganspace_activations(
    G: Any, k: int = 10, *, n: int = 5000, seed: int = 0, layer: str | None = None, batch_size: int = 256
) -> DirectionSet:
    """GANSpace's variant for generators without a mapping network: PCA of ``layer``'s activations
    (default: the first) for ``n`` sampled z, each component regressed back to z; unit directions in z.

    Each direction's ``std`` is the spread of the sampled z along it (about 1 for a Gaussian z);
    ``source`` also records the activation component's std, its share of variance, the z length of one
    unit of the component (``z_per_unit``) and the regression's R^2.
    """
    from sfvq.latents import class_vectors, sample_latents

    layer = layer or G.layers[0]
    if layer not in G.layers:
        raise ValueError(f"unknown layer {layer!r} for {G.name}; layers: {', '.join(G.layers)}")
    if n < 2 * k:
        raise ValueError(f"n ({n}) must be at least 2 k ({2 * k}) to fit {k} components")
    z = torch.from_numpy(np.asarray(sample_latents(G, n, "z", seed, progress=False)))  # (n, z_dim)
    chunks = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            zb = z[i : i + batch_size].to(G.device)
            f = G.features(zb, class_vectors(G, None, zb.shape[0]), layer)  # (b, ...)
            chunks.append(f.reshape(f.shape[0], -1).float().cpu())
    feats = torch.cat(chunks)  # (n, F)
    fit = fit_activation_regression(z, feats, k)
    lengths = fit.U.norm(dim=0)  # (k,)
    units = fit.U / lengths.clamp_min(1e-12)  # (z_dim, k)
    stds = std_along(units.T.contiguous(), data_covariance(z.numpy()))
    dirs = [
        Direction(
            name=f"act{j}",
            vector=units[:, j],
            source={
                "method": "ganspace",
                "variant": "activations",
                "layer": layer,
                "component": j,
                "activation_std": float(fit.pca.std[j]),
                "explained": float(fit.pca.explained[j]),
                "z_per_unit": float(lengths[j]),
                "r2": fit.r2,
            },
            length=float(lengths[j]),
            std=stds[j],
        )
        for j in range(units.shape[1])
    ]
    from sfvq.spaces import LatentSpace

    meta = {
        "method": "ganspace",
        "variant": "activations",
        "layer": layer,
        "n": n,
        "seed": seed,
        "r2": fit.r2,
        "space": LatentSpace(G, "z").describe(),
    }
    return DirectionSet(dirs, dim=G.z_dim, meta=meta)


__all__ = [
    "PCA",
    "ActivationFit",
    "fit_activation_regression",
    "ganspace_activations",
    "ganspace_latent",
    "pca",
]
