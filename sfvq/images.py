"""Laying out images: plain tiles (:func:`image_grid`) and labelled grids with flagged cells
(:func:`labelled_grid`, the panoptic maps, edit grids and previews)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FLAG_COLOUR = (220, 20, 20)
TEXT_COLOUR = (0, 0, 0)


def image_grid(images: np.ndarray, cols: int = 8, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images into one (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) uint8 image."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = (
            images[i]
        )
    return out


def labelled_grid(
    images: np.ndarray,
    labels: Sequence[str],
    cols: int | None = None,
    pad: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
    *,
    flagged: Collection[int] | None = None,
    min_cell: int = 0,
) -> Image.Image:
    """Tile NHWC uint8 images in order into a grid with a text label under each one.

    Args:
        images: (N, H, W, C) uint8, C in {1, 3}.
        labels: N strings, drawn centred under their image.
        cols: images per row (default: ceil(sqrt(N))); ``cols=N`` gives a strip.
        pad: pixels between cells.
        flagged: indices drawn with a red frame and a red label (e.g. corners in empty regions); any
            collection, even an empty one, reserves room for the frames, so maps with and without flags
            have the same layout; None reserves none.
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
    framed = flagged is not None
    flagged = set(flagged or ())
    bad = sorted(i for i in flagged if not 0 <= i < N)
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
    text_h = max(probe.textbbox((0, 0), str(t) or " ", font=font)[3] for t in labels) + 2
    border = 2 if framed else 0  # room for the red frame, the same for every cell
    cell_w = max(W, text_w + 2) + 2 * border
    cell_h = H + 2 * border + text_h
    grid = Image.new("RGB", (cols * cell_w + (cols + 1) * pad, rows * cell_h + (rows + 1) * pad), background)
    draw = ImageDraw.Draw(grid)
    for i in range(N):
        r, c = divmod(i, cols)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + pad)
        tile = Image.fromarray(images[i] if C == 3 else np.repeat(images[i], 3, axis=2))  # (H, W, 3)
        if scale > 1:
            tile = tile.resize((W, H), Image.NEAREST)
        ix = x0 + (cell_w - W) // 2
        if i in flagged:
            draw.rectangle([ix - border, y0, ix + W + border - 1, y0 + H + 2 * border - 1], fill=FLAG_COLOUR)
        grid.paste(tile, (ix, y0 + border))
        colour = FLAG_COLOUR if i in flagged else TEXT_COLOUR
        tw = draw.textbbox((0, 0), str(labels[i]), font=font)[2]
        draw.text((x0 + (cell_w - tw) // 2, y0 + H + 2 * border + 1), str(labels[i]), fill=colour, font=font)
    return grid


__all__ = ["FLAG_COLOUR", "TEXT_COLOUR", "image_grid", "labelled_grid"]
