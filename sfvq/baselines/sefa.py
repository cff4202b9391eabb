"""SeFa directions (Shen & Zhou, 2021): closed-form factorisation of the weights that read the latent.

A layer that reads the latent linearly, ``y = A d + c``, changes most along the top eigenvectors of
``A^T A``; SeFa takes those as directions, with no sampling at all.

* Generators with a W space (StyleGAN2 / StyleGAN3, rosinality): ``A`` stacks the style-affine weights
  (out_channels, w_dim) of the chosen W+ layers, as the generator lists them (``G.style_weights``); each
  style channel's weight row is scaled to unit norm first, as SeFa's release does, so layers with large
  weights do not dominate. By default the toRGB layers' affines are left out (SeFa factorises the
  convolution layers). Directions live in W.
* Generators without one (the DCGAN): ``A`` is the first layer as a linear map of z
  (``G.first_layer_map``; for the DCGAN its transposed convolution's weight (z_dim, C, 4, 4) as
  ``weight.reshape(z_dim, C*16).T``, with the eval-mode BatchNorm that follows folded in by default).
  Directions live in z.

A generator that offers neither says so (GeneratorError, a ValueError, naming it).
"""

from __future__ import annotations

from typing import Any

import torch

from sfvq.directions import Direction, DirectionSet


def style_affines(G: Any, include_torgb: bool = False) -> list[tuple[int, str, torch.Tensor]]:
    """Every style-affine weight of a StyleGAN as ``(ws_index, state-dict name, weight (out, w_dim))``,
    in W+ order. ``ws_index`` is the W+ entry that layer reads (toRGB layers share theirs with the next
    convolution); toRGB affines are included only when ``include_torgb``. The generator lists them
    (``G.style_weights``)."""
    return G.style_weights(include_torgb)


def _top_eigen(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` eigenpairs of ``A^T A`` for A (M, D): values (k,) descending, vectors (k, D) unit rows
    with each one's largest-magnitude entry positive."""
    A = A.to(torch.float64)
    vals, vecs = torch.linalg.eigh(A.T @ A)  # ascending, (D,), (D, D) columns
    order = torch.argsort(vals, descending=True)[: min(k, A.shape[1])]
    v = vecs[:, order].T  # (k, D)
    sign = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    return vals[order].clamp_min(0).float(), (v * sign).float().contiguous()


def sefa_stylegan(
    G: Any, k: int = 10, layers: tuple[int, int] | None = None, *, include_torgb: bool = False
) -> tuple[DirectionSet, torch.Tensor]:
    """SeFa on a StyleGAN: eigenvectors of ``A^T A`` for the style affines of W+ layers ``layers``
    (start, stop_exclusive; default all). Returns the directions (in W, with that layer range) and the
    eigenvalues (k,)."""
    num_ws = int(G.num_ws)
    start, stop = layers if layers is not None else (0, num_ws)
    if not 0 <= start < stop <= num_ws:
        raise ValueError(f"layer range {start}-{stop - 1} is outside this generator's layers 0-{num_ws - 1}")
    chosen = [(i, name, w) for i, name, w in style_affines(G, include_torgb) if start <= i < stop]
    if not chosen:
        raise ValueError(f"no style-affine layer reads W+ layers {start}-{stop - 1}")
    A = torch.cat([w.detach().cpu().double() for _, _, w in chosen])  # (sum_out, w_dim)
    A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)  # unit rows, as in SeFa's release
    vals, vecs = _top_eigen(A, k)
    rng = None if layers is None else (int(start), int(stop))
    dirs = [
        Direction(
            name=f"sefa{j}",
            vector=vecs[j],
            source={"method": "sefa", "eigen": j, "eigenvalue": float(vals[j]), "weights": len(chosen)},
            layer_start=None if rng is None else rng[0],
            layer_stop=None if rng is None else rng[1],
        )
        for j in range(vecs.shape[0])
    ]
    meta = {"method": "sefa", "weights": [name for _, name, _ in chosen], "num_ws": num_ws}
    return DirectionSet(dirs, dim=vecs.shape[1], meta=meta), vals


def dcgan_first_layer(G: Any, fold_batchnorm: bool = True) -> torch.Tensor:
    """The first layer of a generator without W as a matrix ``A`` (M, z_dim): z -> its pre-activation
    output (``G.first_layer_map``; for the DCGAN, (C*16, z_dim) with the eval-mode BatchNorm's
    ``gamma / sqrt(running_var + eps)`` folded in when ``fold_batchnorm``)."""
    return G.first_layer_map(fold_batchnorm)[1]


def sefa_dcgan(G: Any, k: int = 10, *, fold_batchnorm: bool = True) -> tuple[DirectionSet, torch.Tensor]:
    """SeFa on a generator without W (the DCGAN): eigenvectors of ``A^T A`` for its first layer's
    weight (:func:`dcgan_first_layer`); directions in z."""
    names, A = G.first_layer_map(fold_batchnorm)  # (M, z_dim)
    vals, vecs = _top_eigen(A, k)
    dirs = [
        Direction(
            name=f"sefa{j}",
            vector=vecs[j],
            source={"method": "sefa", "eigen": j, "eigenvalue": float(vals[j]), "batchnorm": fold_batchnorm},
        )
        for j in range(vecs.shape[0])
    ]
    meta = {"method": "sefa", "weights": [names[0]], "batchnorm_folded": fold_batchnorm}
    return DirectionSet(dirs, dim=vecs.shape[1], meta=meta), vals


def sefa(G: Any, k: int = 10, layers: tuple[int, int] | None = None) -> DirectionSet:
    """SeFa directions for a generator: in W from its style affines where it has a W space, else in z
    from its first layer. GeneratorError (a ValueError) naming G where it offers neither.

    ``layers`` (start, stop_exclusive) picks W+ layers; a generator without W has none (must be None).
    ``std`` is left unset: the caller measures it on samples of the space (see ``with_std``).
    """
    if "w" in G.spaces:
        out, _ = sefa_stylegan(G, k, layers)
        kind = "w"
    else:
        if layers is not None:
            raise ValueError(f"{G.name} has no style layers; SeFa in z takes no layer range")
        out, _ = sefa_dcgan(G, k)
        kind = "z"
    from sfvq.spaces import LatentSpace

    out.meta["space"] = LatentSpace(G, kind).describe()
    return out


__all__ = ["dcgan_first_layer", "sefa", "sefa_dcgan", "sefa_stylegan", "style_affines"]
