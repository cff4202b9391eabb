"""LatentCLR directions (Yüksel et al., 2021): K global directions trained with a contrastive loss.

For a batch of N latents v_i and K unit directions d_k, each latent is edited along each direction,
``v_i + alpha d_k``, and the edit's effect is read at an intermediate layer of the generator:
``f_ik = G_f(v_i + alpha d_k) - G_f(v_i)``. The NT-Xent loss of the paper treats the effects of the
*same* direction on *different* latents as positives and the effects of different directions as
negatives (cosine similarity, temperature tau):

    loss(i, k) = -log( sum_{j != i} exp(sim(f_ik, f_jk) / tau)
                       / sum_j sum_{l != k} exp(sim(f_ik, f_jl) / tau) )

so the directions learn to cause distinct, consistent changes. Latents are W for StyleGAN and z for
generators without a mapping network (as in the paper). ``alpha`` is given in units of the space's RMS
standard deviation per dimension (about 1 for a Gaussian z). The layer's activations must be
differentiable with respect to the latent: the generator offers such layers (``G.differentiable_layers``)
and the map to them (``G.feature_fn``); sfvq's DCGAN, StyleGAN2 and StyleGAN3 adapters do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sfvq.directions import Direction, DirectionSet, data_covariance, std_along


# ---------------------------------------------------------------------------------------------- features
def feature_layers(G: Any) -> tuple[str, ...]:
    """Names of the layers :func:`feature_function` can read for ``G`` (``G.differentiable_layers``)."""
    names = tuple(G.differentiable_layers)
    if not names:
        raise ValueError(
            f"LatentCLR needs a differentiable intermediate layer, and {G.name} offers none "
            "(sfvq's DCGAN, StyleGAN2 and StyleGAN3 adapters do)"
        )
    return names


def default_layer(G: Any) -> str:
    """The middle of the generator: the layer half-way through :func:`feature_layers`."""
    names = feature_layers(G)
    return names[(len(names) - 1) // 2]


def latent_kind(G: Any) -> str:
    """The space LatentCLR's directions live in: W where G has a mapping network, else z."""
    return "w" if "w" in G.spaces else "z"


def feature_function(G: Any, layer: str | None = None) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """A differentiable map from latents (N, dim) of G's LatentCLR space (:func:`latent_kind`) to the
    flattened activations at ``layer`` (N, F) (``G.feature_fn``), and the layer's name."""
    names = feature_layers(G)
    layer = layer or default_layer(G)
    if layer not in names:
        raise ValueError(f"unknown layer {layer!r} for {G.name}; layers: {', '.join(names)}")
    return G.feature_fn(layer), layer


# ---------------------------------------------------------------------------------------------- loss
def nt_xent(effects: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """LatentCLR's NT-Xent loss for edit effects (N, K, F): positives are the same direction on other
    latents, negatives are other directions on any latent; the mean over all N*K anchors."""
    if effects.ndim != 3:
        raise ValueError(f"expected effects of shape (N, K, F), got {tuple(effects.shape)}")
    N, K, _ = effects.shape
    if N < 2 or K < 2:
        raise ValueError(f"NT-Xent needs at least 2 latents and 2 directions, got N={N}, K={K}")
    h = F.normalize(effects.reshape(N * K, -1), dim=1)  # (NK, F), row i*K + k
    sim = h @ h.T / tau  # (NK, NK)
    direction = torch.arange(K, device=h.device).repeat(N)  # (NK,)
    same = direction[:, None] == direction[None, :]  # (NK, NK)
    eye = torch.eye(N * K, dtype=torch.bool, device=h.device)
    neg_inf = torch.finfo(sim.dtype).min
    pos = torch.logsumexp(sim.masked_fill(~same | eye, neg_inf), dim=1)  # (NK,)
    neg = torch.logsumexp(sim.masked_fill(same, neg_inf), dim=1)  # (NK,)
    return (neg - pos).mean()


# ---------------------------------------------------------------------------------------------- training
@dataclass
class LatentCLRResult:
    """Trained directions (a DirectionSet), the loss at every step and the settings used."""

    directions: DirectionSet
    history: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def train_latentclr(
    G: Any,
    k: int = 8,
    *,
    steps: int = 300,
    batch_size: int = 8,
    alpha: float = 3.0,
    tau: float = 0.5,
    lr: float = 0.01,
    layer: str | None = None,
    seed: int = 0,
    pool: int = 2048,
    progress: bool = False,
) -> LatentCLRResult:
    """Train ``k`` LatentCLR directions on G (seeded: the same arguments give the same directions).

    Each step draws ``batch_size`` latents from a pool of ``pool`` samples of the space, edits them by
    ``alpha`` (in RMS-std units of the space) along every direction and minimises :func:`nt_xent` of the
    activation differences at ``layer`` (Adam, learning rate ``lr``). Returns unit directions named
    ``clr0`` ... with the data's std along each (measured on the pool).
    """
    from sfvq.progress import track
    from sfvq.spaces import LatentSpace

    for name, v in (("k", k), ("steps", steps), ("batch_size", batch_size), ("pool", pool)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if k < 2 or batch_size < 2:
        raise ValueError(f"LatentCLR needs k >= 2 and batch_size >= 2 (got k={k}, batch_size={batch_size})")
    for name, v in (("alpha", alpha), ("tau", tau), ("lr", lr)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    f, layer = feature_function(G, layer)
    space = LatentSpace(G, latent_kind(G))
    X = np.asarray(space.sample(pool, seed, progress=False), dtype=np.float32)  # (pool, D)
    Xt = torch.from_numpy(X).to(G.device)
    scale = float(Xt.std(0).pow(2).mean().sqrt())  # RMS std per dimension
    step_size = alpha * scale
    D = X.shape[1]
    gen = torch.Generator().manual_seed(seed)
    raw = torch.nn.Parameter(torch.randn(k, D, generator=gen).to(G.device))  # (K, D)
    opt = torch.optim.Adam([raw], lr=lr)
    history: list[float] = []
    for _ in track(range(steps), "training LatentCLR", total=steps, enabled=progress):
        idx = torch.randint(0, pool, (batch_size,), generator=gen)
        v = Xt[idx.to(Xt.device)]  # (N, D)
        d = F.normalize(raw, dim=1)  # (K, D)
        edited = v[:, None, :] + step_size * d[None]  # (N, K, D)
        with torch.no_grad():
            base = f(v)  # (N, F)
        out = f(edited.reshape(batch_size * k, D)).reshape(batch_size, k, -1)  # (N, K, F)
        loss = nt_xent(out - base[:, None], tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    units = F.normalize(raw.detach(), dim=1).cpu()  # (K, D)
    stds = std_along(units, data_covariance(X))
    settings = {
        "k": k,
        "steps": steps,
        "batch_size": batch_size,
        "alpha": alpha,
        "alpha_raw": step_size,
        "tau": tau,
        "lr": lr,
        "layer": layer,
        "seed": seed,
        "pool": pool,
    }
    dirs = [
        Direction(
            name=f"clr{j}",
            vector=units[j],
            source={"method": "latentclr", "index": j, "layer": layer},
            std=stds[j],
        )
        for j in range(k)
    ]
    meta = {
        "method": "latentclr",
        "space": space.describe(),
        "settings": settings,
        "loss_first": history[0],
        "loss_last": history[-1],
    }
    return LatentCLRResult(DirectionSet(dirs, dim=D, meta=meta), history, settings)


__all__ = [
    "LatentCLRResult",
    "default_layer",
    "feature_function",
    "feature_layers",
    "latent_kind",
    "nt_xent",
    "train_latentclr",
]
