"""Files a run writes, written atomically: a reader never sees a half-written file under its final name.

Every writer goes to a hidden temporary name in the destination directory and ``os.replace``s it into
place only when complete; on any error (KeyboardInterrupt included) the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sfvq import __version__
from sfvq.atomic import atomic_path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; it becomes ``path`` when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by their string names (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json_text(obj: Any) -> str:
    """Strict, indented JSON (Paths, numpy scalars and arrays converted)."""
    return json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = to_json_text(obj)
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def read_json(path: str | Path) -> Any:
    """Read a JSON file (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a data file: ``latents.npy`` -> ``latents.json``."""
    return Path(path).with_suffix(".json")


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically."""
    with atomic_open(path, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def save_npy_with_sidecar(path: str | Path, array: np.ndarray, meta: Mapping[str, Any]) -> Path:
    """Save ``array`` to ``path`` (.npy) and ``meta`` to its JSON sidecar; the sidecar is written last.

    The sidecar also records ``shape`` and ``dtype`` of the array and the sfvq ``version``.
    """
    path = Path(path)
    array = np.asarray(array)
    full = {**meta, "file": path.name, "shape": list(array.shape), "dtype": str(array.dtype)}
    full.setdefault("version", __version__)
    text = to_json_text(full)  # fail on unserialisable metadata before anything is written
    save_npy(path, array)
    with atomic_open(sidecar_path(path), "w") as f:
        f.write(text)
    return path


def load_npy_with_sidecar(path: str | Path, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a ``.npy`` (memory-mapped read-only by default) and its JSON sidecar."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{path} has no JSON sidecar {side.name} (incomplete or foreign file)")
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return array, read_json(side)


def save_png(path: str | Path, image: np.ndarray | Image.Image) -> Path:
    """Save an HWC (or HW) uint8 array or a PIL image as PNG atomically."""
    if not isinstance(image, Image.Image):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {image.shape}")
        image = Image.fromarray(image)
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG")
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_options(outdir: str | Path, command: str, options: Mapping[str, Any]) -> Path:
    """Write ``outdir/options.json``: the command, its resolved options and the sfvq version."""
    return write_json(
        Path(outdir) / "options.json", {"command": command, "version": __version__, "options": dict(options)}
    )


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
