"""Pictures of a curve: corner renders, labelled panoptic maps and strips, walks (GIF/MP4), edit grids.

Rendering goes through a :class:`~sfvq.spaces.LatentSpace` (exact for every kind of space); images come
back as NHWC uint8 numpy arrays. Every file is written atomically (see :mod:`sfvq.io`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfvq import curve
from sfvq.generators.base import to_uint8
from sfvq.images import FLAG_COLOUR, labelled_grid
from sfvq.io import atomic_open, atomic_path
from sfvq.progress import track
from sfvq.spaces import LatentSpace, check_finite


def _render(
    space: LatentSpace,
    full: torch.Tensor,
    batch_size: int,
    description: str,
    progress: bool,
) -> tuple[torch.Tensor, np.ndarray]:
    """Full tensors (n, num_ws, full_dim) -> (float images (n, C, H, W), uint8 images (n, H, W, C))."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = torch.split(full, batch_size)
    out = [space.render_full(p, batch_size) for p in track(parts, description, len(parts), progress)]
    images = torch.cat(out)  # (n, C, H, W)
    check_finite(images, f"images rendered for {description}")
    return images, to_uint8(images)


def render_vectors(
    space: LatentSpace,
    vectors: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 64,
    description: str = "rendering",
    progress: bool = True,
) -> tuple[torch.Tensor, np.ndarray]:
    """Space vectors (n, dim) -> (float images (n, C, H, W) in [-1, 1], uint8 images (n, H, W, C))."""
    return _render(
        space, space.to_full(torch.as_tensor(vectors).float().cpu()), batch_size, description, progress
    )


def panoptic_map(images: np.ndarray, flagged: Collection[int] = (), cols: int | None = None) -> Image.Image:
    """The panoptic map of a curve: corner images (K, H, W, C) in curve order, index under each."""
    return labelled_grid(images, [str(i) for i in range(len(images))], cols, pad=3, flagged=flagged)


def strip(images: np.ndarray, flagged: Collection[int] = ()) -> Image.Image:
    """All corner images (K, H, W, C) in one row, index under each (flagged corners in red)."""
    return labelled_grid(images, [str(i) for i in range(len(images))], len(images), pad=3, flagged=flagged)


def walk_points(codebook: torch.Tensor, frames: int) -> torch.Tensor:
    """Points of a curve (K, D) at ``frames`` evenly spaced fractional indices in [0, K-1] -> (frames, D)."""
    if frames < 2:
        raise ValueError(f"a walk needs at least 2 frames, got {frames}")
    C = torch.as_tensor(codebook).float().cpu()
    t = torch.linspace(0, C.shape[0] - 1, frames)  # (frames,)
    return curve.decode(C, t)


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 24.0) -> Path:
    """Frames (T, H, W, C) uint8 -> a looping GIF (Pillow), written atomically."""
    frames = _check_frames(frames)
    pil = [Image.fromarray(f if f.shape[2] == 3 else f[:, :, 0]) for f in frames]
    with atomic_open(path, "wb") as f:
        pil[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=pil[1:],
            duration=max(20, round(1000 / fps)),  # ms per frame
            loop=0,
            optimize=False,
        )
    return Path(path)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 24.0, min_size: int = 256) -> Path:
    """Frames (T, H, W, C) uint8 -> an H.264 MP4 through the ffmpeg binary bundled with ``imageio-ffmpeg``.

    Small frames are enlarged by an integer factor (nearest neighbour) to at least ``min_size`` px, and
    padded to even sides, as yuv420p requires; no system ffmpeg is needed.
    """
    import imageio_ffmpeg

    frames = _check_frames(frames)
    if frames.shape[3] == 1:
        frames = np.repeat(frames, 3, axis=3)
    T, H, W, _ = frames.shape
    k = max(1, -(-min_size // max(H, W)))
    if k > 1:
        frames = frames.repeat(k, axis=1).repeat(k, axis=2)  # (T, kH, kW, 3)
    ph, pw = frames.shape[1] % 2, frames.shape[2] % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (frames.shape[2], frames.shape[1]),  # (width, height)
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            output_params=["-f", "mp4"],  # the temporary name has no .mp4 suffix to guess from
            ffmpeg_log_level="error",
        )
        writer.send(None)  # start ffmpeg
        try:
            for f in frames:
                writer.send(np.ascontiguousarray(f))
        finally:
            writer.close()
        if os.path.getsize(tmp) == 0:
            raise RuntimeError(f"ffmpeg wrote nothing for {path}")
    return Path(path)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[3] not in (1, 3) or len(frames) == 0:
        raise ValueError(
            f"expected frames (T, H, W, 1|3) uint8 with T >= 1, got {frames.shape} {frames.dtype}"
        )
    return frames


def edit_images(
    space: LatentSpace,
    full: torch.Tensor,
    direction: torch.Tensor,
    sigmas: Sequence[float],
    *,
    layers: tuple[int, int] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """``full`` (S, num_ws, full_dim) edited by ``sigma * direction`` per sigma -> (S * M, H, W, C) uint8.

    Row-major: seed 0 at every sigma, then seed 1, ... (rows = seeds, columns = sigmas in a grid);
    rendered by :meth:`~sfvq.spaces.LatentSpace.render_edits` (its noise handling).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = space.render_edits(full, [direction], sigmas, layers, batch_size)[:, 0]  # (S, M, C, H, W)
    check_finite(images, "images rendered for edit")
    return to_uint8(images.reshape(-1, *images.shape[2:]))


def edit_grid(
    images: np.ndarray,
    seeds: Sequence[int],
    sigmas: Sequence[float],
    *,
    label: str = "seed {seed}, {sigma:+g}",
    pad: int = 3,
) -> Image.Image:
    """Edit images (len(seeds) * len(sigmas), H, W, C) row-major -> a grid, rows = seeds, cols = sigma.

    ``label`` formats each tile's caption from ``seed`` and ``sigma``; ``pad`` is the gap in pixels.
    """
    if len(images) != len(seeds) * len(sigmas):
        raise ValueError(f"got {len(images)} images for {len(seeds)} seeds x {len(sigmas)} sigmas")
    labels = [label.format(seed=s, sigma=sig) for s in seeds for sig in sigmas]
    return labelled_grid(images, labels, len(sigmas), pad=pad)


__all__ = [
    "FLAG_COLOUR",
    "edit_grid",
    "edit_images",
    "panoptic_map",
    "render_vectors",
    "strip",
    "walk_points",
    "write_gif",
    "write_mp4",
]
