"""Where a latent lies on a run's curve, whether it lies off the map, and edits of it along the curve.

:func:`place` projects one space vector onto the curve of every bitrate of a fitted model: the fractional
curve index (segment + position in it), the distance to the curve and the nearest corners. The outlier
score compares the distance with the distances of the sampled latents (the run's ``latents.npy``) to the
same curve: its percentile among them. A photo the generator cannot draw well projects to a latent far
from where the generator's own latents lie, and its percentile says so (``off_map`` above
:data:`OFF_MAP_PERCENTILE`).

:func:`edit_images` and :func:`walk_frames` move the latent along directions (the segments around its
place, or any named direction of the run) through :meth:`~sfvq.spaces.LatentSpace.render_edits`, the one
edit-and-render of sfvq; :func:`placement_figure` shows the photo beside its projection and its nearest
corners.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from sfvq.generators.base import to_uint8

OFF_MAP_PERCENTILE = (
    99.0  # a latent farther from the curve than this share of the sampled ones is off the map
)
REFERENCE_ROWS = 20_000  # sampled latents the outlier score compares with (a seeded subset beyond this)


@dataclass
class Placement:
    """Where one vector lies on a model's curves.

    ``bits``: per bitrate, ``{"t": fractional index, "segment", "lam", "distance", "percentile",
    "nearest": [{"corner", "distance"}, ...]}``; ``outlier``: the score at the finest bitrate
    (``distance``, ``percentile``, ``median_reference``, ``ratio`` = distance / median, ``off_map``,
    ``threshold``, ``reference_rows``).
    """

    vector: np.ndarray
    bits: dict[int, dict[str, Any]]
    outlier: dict[str, Any]

    @property
    def finest(self) -> int:
        return max(self.bits)

    def to_json(self) -> dict[str, Any]:
        return {
            "bits": {str(b): v for b, v in sorted(self.bits.items())},
            "outlier": self.outlier,
        }


def reference_distances(
    model: Any, X: Any, bits: Sequence[int] | None = None, max_rows: int = REFERENCE_ROWS, seed: int = 0
) -> dict[int, np.ndarray]:
    """Distances of sampled latents X (N, D) to the curve of each bitrate -> {bits: sorted (n,) float64},
    at most ``max_rows`` rows (a seeded subset)."""
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"reference latents must be a non-empty (N, D) array, got shape {X.shape}")
    if len(X) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
        X = X[rows]
    x = torch.as_tensor(np.array(X, dtype=np.float32))  # a writable copy
    out = {}
    for b in sorted(model.codebooks_) if bits is None else bits:
        d = model.project(x, bits=b).sqdist.double().sqrt().numpy()
        out[int(b)] = np.sort(d)
    return out


def percentile_of(value: float, sorted_reference: np.ndarray) -> float:
    """The share (in %) of reference values at or below ``value``."""
    if len(sorted_reference) == 0:
        raise ValueError("no reference values")
    return float(100.0 * np.searchsorted(sorted_reference, value, side="right") / len(sorted_reference))


def place(
    model: Any,
    vector: Any,
    reference: dict[int, np.ndarray] | None = None,
    *,
    nearest: int = 3,
    threshold: float = OFF_MAP_PERCENTILE,
) -> Placement:
    """Place one space vector (D,) or (1, D) on every bitrate of ``model``; ``reference`` from
    :func:`reference_distances` gives the percentiles and the outlier score (None: no percentiles)."""
    v = torch.as_tensor(np.asarray(vector, dtype=np.float32)).reshape(-1)
    if v.numel() != model.n_features_in_:
        raise ValueError(f"the latent has {v.numel()} entries, the model is {model.n_features_in_}-D")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("the latent contains NaN or inf")
    if not 0 < threshold <= 100:
        raise ValueError(f"the off-map threshold is a percentile in (0, 100], got {threshold}")
    rows: dict[int, dict[str, Any]] = {}
    for b in sorted(model.codebooks_):
        p = model.project(v[None], bits=b)
        C = model.codebooks_[b].detach().to("cpu", torch.float64)  # (K, D)
        dist = (C - v.double()).norm(dim=1)  # (K,)
        k = min(nearest, C.shape[0])
        order = torch.argsort(dist, stable=True)[:k]  # ties in corner order
        d = float(p.sqdist[0].double().sqrt())
        rows[b] = {
            "t": round(float(p.t[0]), 4),
            "segment": int(p.segment[0]),
            "lam": round(float(p.lam[0]), 4),
            "distance": round(d, 5),
            "percentile": None if reference is None else round(percentile_of(d, reference[b]), 2),
            "nearest": [{"corner": int(i), "distance": round(float(dist[i]), 5)} for i in order],
        }
    top = max(rows)
    outlier: dict[str, Any] = {"bits": top, "distance": rows[top]["distance"], "threshold": threshold}
    if reference is not None:
        ref = reference[top]
        median = float(np.median(ref))
        outlier.update(
            percentile=rows[top]["percentile"],
            median_reference=round(median, 5),
            ratio=round(rows[top]["distance"] / median, 4) if median > 0 else None,
            off_map=bool(rows[top]["percentile"] >= threshold),
            reference_rows=int(len(ref)),
        )
    return Placement(v.numpy(), rows, outlier)


def segments_around(placement: Placement, bits: int, width: int = 1) -> list[int]:
    """The segment the latent projects onto at ``bits`` and ``width`` segments on each side (those that
    exist), in curve order."""
    if bits not in placement.bits:
        raise ValueError(f"no curve at {bits} bits; this model has bits {sorted(placement.bits)}")
    segment = placement.bits[bits]["segment"]
    corners = 2**bits
    return [s for s in range(segment - width, segment + width + 1) if 0 <= s <= corners - 2]


def edit_images(
    space: Any,
    full: torch.Tensor,
    directions: Sequence[torch.Tensor],
    sigmas: Sequence[Sequence[float]],
    layers: Sequence[tuple[int, int] | None],
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """One latent ``full`` (1, num_ws, full_dim) moved along M directions by their raw ``sigmas`` (M, T)
    in their ``layers`` -> uint8 images (M, T, H, W, C) (rows = directions, columns = sigmas)."""
    from sfvq.spaces import check_finite

    images = space.render_edits(full, list(directions), sigmas, list(layers), batch_size)  # (1, M, T, ...)
    check_finite(images, "the edited images")
    M, T = images.shape[1:3]
    tiles = to_uint8(images[0].reshape(M * T, *images.shape[3:]))  # (M * T, H, W, C)
    return tiles.reshape(M, T, *tiles.shape[1:])


def walk_frames(
    space: Any,
    full: torch.Tensor,
    directions: Sequence[torch.Tensor],
    extents: Sequence[float],
    layers: Sequence[tuple[int, int] | None],
    frames: int = 24,
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """A looping walk of one latent: along each direction from 0 to +extent, to -extent and back to 0
    (``frames`` per direction), one direction after another -> uint8 frames (M * frames, H, W, C)."""
    if frames < 4:
        raise ValueError(f"a walk needs at least 4 frames a direction, got {frames}")
    phase = np.linspace(0.0, 2 * np.pi, frames, endpoint=False)
    out = []
    for d, extent, rng in zip(directions, extents, layers, strict=True):
        sig = [float(extent * np.sin(a)) for a in phase]  # 0 -> +e -> 0 -> -e -> 0
        out.append(edit_images(space, full, [d], [sig], [rng], batch_size=batch_size)[0])
    return np.concatenate(out)


def placement_figure(
    target: np.ndarray,
    projection: np.ndarray,
    corners: dict[int, np.ndarray],
    placement: Placement,
    *,
    min_cell: int = 96,
) -> Image.Image:
    """One row per bitrate: the photo, its projection and its nearest corners (images (k, H, W, C) in
    the order of ``placement.bits[b]["nearest"]``), labelled with index and distance."""
    from sfvq.images import labelled_grid

    rows, labels = [], []
    width = 2 + max(len(v) for v in corners.values())
    blank = np.full_like(target, 255)
    for b in sorted(corners):
        info = placement.bits[b]
        pct = "" if info["percentile"] is None else f", p{info['percentile']:.0f}"
        tiles = [target, projection, *corners[b]]
        tiles += [blank] * (width - len(tiles))
        rows += tiles
        labels += [f"{b} bits: photo", f"t={info['t']:.2f} d={info['distance']:.3g}{pct}"]
        labels += [f"corner {n['corner']} d={n['distance']:.3g}" for n in info["nearest"]]
        labels += [""] * (width - 2 - len(info["nearest"]))
    return labelled_grid(np.stack(rows), labels, width, pad=3, min_cell=min_cell)


def edit_grid_image(
    images: np.ndarray, row_labels: Sequence[str], sigmas: Sequence[float], unit: str, min_cell: int = 96
) -> Image.Image:
    """Edit images (M, T, H, W, C) -> a labelled grid, rows = directions, columns = sigmas."""
    from sfvq.images import labelled_grid

    M, T = images.shape[:2]
    labels = [f"{row_labels[m]} {s:+g}{' std' if unit == 'std' else ''}" for m in range(M) for s in sigmas]
    return labelled_grid(images.reshape(M * T, *images.shape[2:]), labels, T, pad=3, min_cell=min_cell)


__all__ = [
    "OFF_MAP_PERCENTILE",
    "REFERENCE_ROWS",
    "Placement",
    "edit_grid_image",
    "edit_images",
    "percentile_of",
    "place",
    "placement_figure",
    "reference_distances",
    "segments_around",
    "walk_frames",
]
