"""Pictures of a curve: corner renders, labelled panoptic maps and strips, walks (GIF/MP4), edit grids.

Rendering goes through a :class:`~sfvq.spaces.LatentSpace` (exact for every kind of space); images come
back as NHWC uint8 numpy arrays. Every file is written atomically (see :mod:`sfvq.io`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sfvq import curve
from sfvq.generators.base import to_uint8
from sfvq.io import atomic_open, atomic_path
from sfvq.progress import track
from sfvq.spaces import LatentSpace, check_finite

FLAG_COLOUR = (220, 20, 20)
TEXT_COLOUR = (0, 0, 0)


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


def corner_grid(
    images: np.ndarray,
    labels: Sequence[str],
    *,
    cols: int | None = None,
    flagged: Collection[int] = (),
    pad: int = 3,
    min_cell: int = 0,
) -> Image.Image:
    """Tile NHWC uint8 images in order with a label under each; ``flagged`` cells get a red frame and label.

    Args:
        images: (N, H, W, C) uint8, C in {1, 3}.
        labels: N strings (e.g. the corner index).
        cols: images per row (default: ceil(sqrt(N))); ``cols=N`` gives a strip.
        flagged: indices drawn with a red border and red label (corners in empty regions).
        min_cell: upscale each image by an integer factor until it is at least this many pixels wide.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] not in (1, 3):
        raise ValueError(f"expected (N, H, W, 1|3) uint8 images, got {images.shape} {images.dtype}")
    N, H, W, C = images.shape
    if N == 0:
        raise ValueError("no images to tile")
    if len(labels) != N:
        raise ValueError(f"got {len(labels)} labels for {N} images")
    bad = [i for i in flagged if not 0 <= i < N]
    if bad:
        raise ValueError(f"flagged indices {bad} are outside 0..{N - 1}")
    cols = cols or math.ceil(math.sqrt(N))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    scale = max(1, -(-min_cell // W)) if min_cell else 1
    H, W = H * scale, W * scale
    rows = math.ceil(N / cols)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textbbox((0, 0), str(t), font=font)[2] for t in labels)
    text_h = max(probe.textbbox((0, 0), str(t) or " ", font=font)[3] for t in labels) + 3
    border = 2
    cell_w = max(W, text_w + 2) + 2 * border
    cell_h = H + 2 * border + text_h
    grid = Image.new("RGB", (cols * cell_w + (cols + 1) * pad, rows * cell_h + (rows + 1) * pad), "white")
    draw = ImageDraw.Draw(grid)
    flagged = set(flagged)
    for i in range(N):
        r, c = divmod(i, cols)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + pad)
        tile = Image.fromarray(images[i] if C == 3 else np.repeat(images[i], 3, axis=2))  # (H, W, 3)
        if scale > 1:
            tile = tile.resize((W, H), Image.NEAREST)
        ix = x0 + (cell_w - W) // 2
        colour = FLAG_COLOUR if i in flagged else TEXT_COLOUR
        if i in flagged:
            draw.rectangle([ix - border, y0, ix + W + border - 1, y0 + H + 2 * border - 1], fill=FLAG_COLOUR)
        grid.paste(tile, (ix, y0 + border))
        tw = draw.textbbox((0, 0), str(labels[i]), font=font)[2]
        draw.text((x0 + (cell_w - tw) // 2, y0 + H + 2 * border + 1), str(labels[i]), fill=colour, font=font)
    return grid


def panoptic_map(images: np.ndarray, flagged: Collection[int] = (), cols: int | None = None) -> Image.Image:
    """The panoptic map of a curve: corner images (K, H, W, C) in curve order, index under each."""
    return corner_grid(images, [str(i) for i in range(len(images))], cols=cols, flagged=flagged)


def strip(images: np.ndarray, flagged: Collection[int] = ()) -> Image.Image:
    """All corner images (K, H, W, C) in one row, index under each (flagged corners in red)."""
    return corner_grid(images, [str(i) for i in range(len(images))], cols=len(images), flagged=flagged)


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

    Row-major: seed 0 at every sigma, then seed 1, ... (rows = seeds, columns = sigmas in a grid).
    """
    S = full.shape[0]
    edited = torch.stack(
        [space.edit(full, direction, float(s), layers) for s in sigmas], dim=1
    )  # (S, M, L, F)
    flat = edited.reshape(S * len(sigmas), *full.shape[1:])
    _, images = _render(space, flat, batch_size, "edit", progress=False)
    return images


def edit_grid(images: np.ndarray, seeds: Sequence[int], sigmas: Sequence[float]) -> Image.Image:
    """Edit images (len(seeds) * len(sigmas), H, W, C) row-major -> a grid, rows = seeds, cols = sigma."""
    if len(images) != len(seeds) * len(sigmas):
        raise ValueError(f"got {len(images)} images for {len(seeds)} seeds x {len(sigmas)} sigmas")
    labels = [f"seed {s}, {sig:+g}" for s in seeds for sig in sigmas]
    return corner_grid(images, labels, cols=len(sigmas))


__all__ = [
    "corner_grid",
    "edit_grid",
    "edit_images",
    "panoptic_map",
    "render_vectors",
    "strip",
    "walk_points",
    "write_gif",
    "write_mp4",
]
