"""SeFa directions (Shen & Zhou, 2021): closed-form factorisation of the weights that read the latent.

A layer that reads the latent linearly, ``y = A d + c``, changes most along the top eigenvectors of
``A^T A``; SeFa takes those as directions, with no sampling at all.

* StyleGAN2 / StyleGAN3 (sfvq's modules, official key names) and rosinality checkpoints: ``A`` stacks the
  style-affine weights (out_channels, w_dim) of the chosen W+ layers, found by name in the network's
  state dict; each style channel's weight row is scaled to unit norm first, as SeFa's release does, so
  layers with large weights do not dominate. By default the toRGB layers' affines are left out (SeFa
  factorises the convolution layers). Directions live in W.
* DCGAN: the first transposed convolution maps z (z_dim,) to (C, 4, 4); its weight (z_dim, C, 4, 4)
  gives ``A = weight.reshape(z_dim, C*16).T``. The eval-mode BatchNorm that follows is a per-channel
  scale, folded in by default (it is part of the same linear map). Directions live in z.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from sfvq.directions import Direction, DirectionSet

_SG2_RE = re.compile(r"^synthesis\.b(\d+)\.(conv0|conv1|torgb)\.affine\.weight$")
_SG3_RE = re.compile(r"^synthesis\.(input|L(\d+)_\w+)\.affine\.weight$")
_ROS_RE = re.compile(r"^(conv1|to_rgb1|convs\.(\d+)|to_rgbs\.(\d+))\.conv\.modulation\.weight$")


def _state_dict(G: Any) -> dict[str, torch.Tensor]:
    if hasattr(G, "network") and hasattr(G.network, "state_dict"):
        return dict(G.network.state_dict())
    if isinstance(getattr(G, "_p", None), dict):  # rosinality adapter: a flat dict of tensors
        return dict(G._p)
    raise ValueError(f"{getattr(G, 'name', G)}: no state dict to read style weights from")


def style_affines(G: Any, include_torgb: bool = False) -> list[tuple[int, str, torch.Tensor]]:
    """Every style-affine weight of a StyleGAN as ``(ws_index, state-dict name, weight (out, w_dim))``,
    in W+ order. ``ws_index`` is the W+ entry that layer reads (toRGB layers share theirs with the next
    convolution); toRGB affines are included only when ``include_torgb``."""
    sd = _state_dict(G)
    found: list[tuple[int, str, torch.Tensor]] = []
    sg2 = sorted(
        ((int(m.group(1)), m.group(2), k) for k in sd if (m := _SG2_RE.match(k))),
        key=lambda t: (t[0], ("conv0", "conv1", "torgb").index(t[1])),
    )
    if sg2:
        w_idx = 0
        for res in sorted({r for r, _, _ in sg2}):
            layers = {kind: key for r, kind, key in sg2 if r == res}
            convs = [kind for kind in ("conv0", "conv1") if kind in layers]
            for i, kind in enumerate(convs):
                found.append((w_idx + i, layers[kind], sd[layers[kind]]))
            if include_torgb and "torgb" in layers:
                found.append((w_idx + len(convs), layers["torgb"], sd[layers["torgb"]]))
            w_idx += len(convs)
    elif any(_SG3_RE.match(k) for k in sd):
        for k in sd:
            m = _SG3_RE.match(k)
            if m:
                idx = 0 if m.group(1) == "input" else int(m.group(2)) + 1  # input reads ws[0], L{i} ws[i+1]
                found.append((idx, k, sd[k]))
    elif any(_ROS_RE.match(k) for k in sd):
        for k in sd:
            m = _ROS_RE.match(k)
            if not m:
                continue
            if m.group(1) == "conv1":
                found.append((0, k, sd[k]))
            elif m.group(2) is not None:  # convs.{j} reads ws[j + 1]
                found.append((int(m.group(2)) + 1, k, sd[k]))
            elif include_torgb:
                idx = 1 if m.group(1) == "to_rgb1" else 2 * int(m.group(3)) + 3
                found.append((idx, k, sd[k]))
    else:
        raise ValueError(f"{getattr(G, 'name', G)}: found no style-affine weights in its state dict")
    return sorted(found, key=lambda t: (t[0], t[1]))


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
    """The DCGAN's first layer as a matrix ``A`` (C*16, z_dim): z -> its pre-activation output.

    The weight is read by name (``blocks.0.0.weight``, (z_dim, C, 4, 4)) from the network's state dict;
    with ``fold_batchnorm`` each output channel is scaled by the eval-mode BatchNorm's
    ``gamma / sqrt(running_var + eps)``.
    """
    net = getattr(G, "net", None)
    if net is None or not hasattr(net, "state_dict"):
        raise ValueError(f"{getattr(G, 'name', G)} is not a DCGAN (no .net)")
    sd = net.state_dict()
    if "blocks.0.0.weight" not in sd:
        raise ValueError(f"{G.name}: no first-layer weight 'blocks.0.0.weight' in the DCGAN's state dict")
    W = sd["blocks.0.0.weight"].double()  # (z_dim, C, 4, 4)
    if fold_batchnorm and "blocks.0.1.weight" in sd:
        eps = float(getattr(net.blocks[0][1], "eps", 1e-5))
        scale = (
            sd["blocks.0.1.weight"].double() / (sd["blocks.0.1.running_var"].double() + eps).sqrt()
        )  # (C,)
        W = W * scale[None, :, None, None]
    z_dim = W.shape[0]
    return W.reshape(z_dim, -1).T.contiguous()  # (C*16, z_dim)


def sefa_dcgan(G: Any, k: int = 10, *, fold_batchnorm: bool = True) -> tuple[DirectionSet, torch.Tensor]:
    """SeFa on a DCGAN: eigenvectors of ``A^T A`` for its first layer's weight; directions in z."""
    A = dcgan_first_layer(G, fold_batchnorm)  # (C*16, z_dim)
    vals, vecs = _top_eigen(A, k)
    dirs = [
        Direction(
            name=f"sefa{j}",
            vector=vecs[j],
            source={"method": "sefa", "eigen": j, "eigenvalue": float(vals[j]), "batchnorm": fold_batchnorm},
        )
        for j in range(vecs.shape[0])
    ]
    meta = {"method": "sefa", "weights": ["blocks.0.0.weight"], "batchnorm_folded": fold_batchnorm}
    return DirectionSet(dirs, dim=vecs.shape[1], meta=meta), vals


def sefa(G: Any, k: int = 10, layers: tuple[int, int] | None = None) -> DirectionSet:
    """SeFa directions for any supported generator (StyleGAN2/3, rosinality, DCGAN), in W or z.

    ``layers`` (start, stop_exclusive) picks StyleGAN's W+ layers; a DCGAN has none (must be None).
    ``std`` is left unset: the caller measures it on samples of the space (see ``with_std``).
    """
    if getattr(G, "net", None) is not None and type(G).__name__ == "DCGANGenerator":
        if layers is not None:
            raise ValueError(f"{G.name} has no style layers; SeFa on a DCGAN takes no layer range")
        out, _ = sefa_dcgan(G, k)
        kind = "z"
    elif "w" in getattr(G, "spaces", ()):
        out, _ = sefa_stylegan(G, k, layers)
        kind = "w"
    else:
        raise ValueError(
            f"SeFa here supports StyleGAN2/3 (official or rosinality) and DCGAN generators, not {G.name}"
        )
    from sfvq.spaces import LatentSpace

    out.meta["space"] = LatentSpace(G, kind).describe()
    return out


__all__ = ["dcgan_first_layer", "sefa", "sefa_dcgan", "sefa_stylegan", "style_affines"]
