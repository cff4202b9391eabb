"""Pictures of a curve: corner renders, labelled panoptic maps and strips, walks (GIF/MP4), edit grids.

Rendering goes through a :class:`~sfvq.spaces.LatentSpace` (exact for every kind of space), at the
generator's full size or a preview resolution; images come back as NHWC uint8 numpy arrays. How many
images one generator call renders comes from a memory estimate (:func:`render_batch_size`), so that a
full-size generator is never asked for more than the machine holds. Walks are streamed to their files
(:class:`Mp4Writer`, :class:`GifWriter`) as the frames are rendered. Every file is written atomically (see
:mod:`sfvq.io`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sfvq import curve
from sfvq.generators.base import Generator, preview_size, to_uint8
from sfvq.images import FLAG_COLOUR, labelled_grid
from sfvq.io import atomic_open, atomic_path
from sfvq.progress import track
from sfvq.spaces import LatentSpace, check_finite


# ---------------------------------------------------------------------------------------------- memory
class RenderMemoryError(MemoryError):
    """One image would not fit in the memory available: said before rendering, not by the kernel's OOM
    killer half-way through a run."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can be allocated now on ``device``: CUDA's free memory, else the smaller of Linux's
    ``MemAvailable`` and the room left under a cgroup (container) limit; None where neither can be read."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)  # kB
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used))
    return min(found) if found else None


def render_batch_size(
    G: Generator, resolution: int | None, budget: int | None = None, *, cap: int = 64
) -> int:
    """How many images one generator call may render (at ``resolution`` px), after checking that one fits.

    The estimate of one image is :func:`sfvq.membudget.image_bytes` (the generator's widest activations at
    full size, which a preview never exceeds) and the batch :func:`sfvq.membudget.auto_batch_size` within
    ``budget`` bytes (None: its default budget on the generator's device), at most ``cap``. Raises
    :class:`RenderMemoryError` when even one image is predicted not to fit: over 90 % of the memory
    available now, or over an explicit ``budget``.
    """
    from sfvq import membudget

    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    per_image = membudget.image_bytes(G)
    side = getattr(G, "img_resolution", "?")
    what = f"rendering one image of {G.name} ({side} px, a preview included) needs about {_gib(per_image)}"
    if budget is not None and per_image > budget:
        raise RenderMemoryError(f"{what}, over the {_gib(budget)} allowed")
    available = available_memory(G.device)
    if budget is None and available is not None and per_image > 0.9 * available:
        raise RenderMemoryError(
            f"{what}, but only {_gib(available)} of memory is available: free memory or use a machine "
            "with more"
        )
    return membudget.auto_batch_size(G, budget, limit=cap)


# ---------------------------------------------------------------------------------------------- renders
def _render(
    space: LatentSpace,
    full: torch.Tensor,
    batch_size: int,
    description: str,
    progress: bool,
    resolution: int | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Full tensors (n, num_ws, full_dim) -> (float images (n, C, H, W), uint8 images (n, H, W, C))."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = torch.split(full, batch_size)
    out = [
        space.render_full(p, batch_size, resolution) for p in track(parts, description, len(parts), progress)
    ]
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
    resolution: int | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Space vectors (n, dim) -> (float images (n, C, H, W) in [-1, 1], uint8 images (n, H, W, C)), at
    ``resolution`` px (None: the generator's full size; see :meth:`~sfvq.spaces.LatentSpace.render_full`)."""
    full = space.to_full(torch.as_tensor(vectors).float().cpu())
    return _render(space, full, batch_size, description, progress, resolution)


def iter_renders(
    space: LatentSpace,
    vectors: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 64,
    description: str = "rendering",
    progress: bool = True,
    resolution: int | None = None,
) -> Iterator[np.ndarray]:
    """Space vectors (n, dim) rendered batch by batch: uint8 images (b, H, W, C) per batch, so that a long
    sequence (a walk) never lies in memory whole."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    full = space.to_full(torch.as_tensor(vectors).float().cpu())
    parts = torch.split(full, batch_size)
    for part in track(parts, description, len(parts), progress):
        images = space.render_full(part, batch_size, resolution)  # (b, C, H, W)
        check_finite(images, f"images rendered for {description}")
        yield to_uint8(images)


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


GIF_MAX_SIZE = 192  # px, longer side of a GIF frame: a GIF is the fallback picture; the MP4 is the walk
GIF_MAX_PIXELS = 8_000_000  # all GIF frames together; over this, every k-th frame is kept


class GifWriter:
    """A looping GIF written from frames as they come: ``with GifWriter(path, fps, total) as w: w.add(b)``.

    Frames are shrunk to at most ``max_size`` px (antialiased) and turned into palette images as they
    arrive, so only those small frames are held until the file is written (atomically) on exit; when
    ``total`` frames at that size would exceed ``max_pixels``, every k-th frame is kept (each shown k times
    as long). Full-size frames are never held.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 24.0,
        total: int | None = None,
        *,
        max_size: int = GIF_MAX_SIZE,
        max_pixels: int = GIF_MAX_PIXELS,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path, self.fps, self.total = Path(path), float(fps), total
        self.max_size, self.max_pixels = max_size, max_pixels
        self.frames: list[Image.Image] = []
        self.seen = 0
        self.step = 1

    def __enter__(self) -> GifWriter:
        return self

    def add(self, frames: np.ndarray) -> None:
        """Append frames (b, H, W, C) uint8."""
        frames = _check_frames(frames)
        h, w = preview_size(frames.shape[1], frames.shape[2], self.max_size)
        if self.seen == 0 and self.total:
            self.step = max(1, math.ceil(self.total * h * w / self.max_pixels))
        for f in frames:
            if self.seen % self.step == 0:
                im = Image.fromarray(f if f.shape[2] == 3 else f[:, :, 0])
                if (h, w) != f.shape[:2]:
                    im = im.resize((w, h), Image.Resampling.LANCZOS)
                self.frames.append(im if im.mode == "L" else im.quantize(256))  # palette image, ~1 byte/px
            self.seen += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()

    def close(self) -> Path:
        """Write the GIF (atomically); at least one frame must have been added."""
        if not self.frames:
            raise ValueError(f"no frames were added for {self.path}")
        with atomic_open(self.path, "wb") as f:
            self.frames[0].save(
                f,
                format="GIF",
                save_all=True,
                append_images=self.frames[1:],
                duration=max(20, round(1000 * self.step / self.fps)),  # ms per frame
                loop=0,
                optimize=False,
            )
        self.frames = []
        return self.path


class Mp4Writer:
    """An H.264 MP4 streamed to the ffmpeg binary bundled with ``imageio-ffmpeg`` as frames come:
    ``with Mp4Writer(path, fps) as w: w.add(batch)``; no frame is kept after it is sent.

    Small frames are enlarged by an integer factor (nearest neighbour) to at least ``min_size`` px, and
    padded to even sides, as yuv420p requires; no system ffmpeg is needed. The file appears (atomically)
    when the block ends without an error; an error leaves nothing.
    """

    def __init__(self, path: str | Path, fps: float = 24.0, min_size: int = 256) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path, self.fps, self.min_size = Path(path), float(fps), min_size
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None
        self._writer: Any = None
        self._shape: tuple[int, int] | None = None  # (H, W) of the frames given
        self.count = 0

    def __enter__(self) -> Mp4Writer:
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        return self

    def _start(self, height: int, width: int) -> None:
        from sfvq import ffmpeg

        k = max(1, -(-self.min_size // max(height, width)))
        self._k = k
        self._pad = ((k * height) % 2, (k * width) % 2)
        size = (k * width + self._pad[1], k * height + self._pad[0])  # (width, height)
        # our own ffmpeg child: it dies with this process (imageio_ffmpeg's would outlive a kill -9)
        self._writer = ffmpeg.write_frames(
            str(self._tmp),
            size,
            fps=self.fps,
            output_params=["-f", "mp4"],  # the temporary name has no .mp4 suffix to guess from
        )
        self._writer.send(None)  # start ffmpeg
        self._shape = (height, width)

    def add(self, frames: np.ndarray) -> None:
        """Send frames (b, H, W, C) uint8, all of one size, to ffmpeg."""
        if self._tmp is None:
            raise RuntimeError("use Mp4Writer in a with block")
        frames = _check_frames(frames)
        if self._shape is None:
            self._start(frames.shape[1], frames.shape[2])
        elif frames.shape[1:3] != self._shape:
            raise ValueError(f"frames of {frames.shape[1:3]} after frames of {self._shape}")
        if frames.shape[3] == 1:
            frames = np.repeat(frames, 3, axis=3)
        for f in frames:
            if self._k > 1:
                f = f.repeat(self._k, axis=0).repeat(self._k, axis=1)  # (kH, kW, 3)
            if any(self._pad):
                f = np.pad(f, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
            self._writer.send(np.ascontiguousarray(f))
            self.count += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                if self.count == 0:
                    raise ValueError(f"no frames were added for {self.path}")
                if os.path.getsize(self._tmp) == 0:  # type: ignore[arg-type]
                    raise RuntimeError(f"ffmpeg wrote nothing for {self.path}")
        except BaseException as e:
            self._stack.__exit__(type(e), e, e.__traceback__)  # removes the temporary file
            raise
        self._stack.__exit__(exc_type, exc, tb)  # on success: the file takes its name


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 24.0) -> Path:
    """Frames (T, H, W, C) uint8 -> a looping GIF (Pillow), written atomically, at the frames' own size."""
    frames = _check_frames(frames)
    with GifWriter(path, fps, len(frames), max_size=max(frames.shape[1:3]), max_pixels=frames.size) as w:
        w.add(frames)
    return Path(path)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 24.0, min_size: int = 256) -> Path:
    """Frames (T, H, W, C) uint8 -> an H.264 MP4 (:class:`Mp4Writer`), written atomically."""
    frames = _check_frames(frames)
    with Mp4Writer(path, fps, min_size) as w:
        w.add(frames)
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
    resolution: int | None = None,
) -> np.ndarray:
    """``full`` (S, num_ws, full_dim) edited by ``sigma * direction`` per sigma -> (S * M, H, W, C) uint8.

    Row-major: seed 0 at every sigma, then seed 1, ... (rows = seeds, columns = sigmas in a grid);
    rendered by :meth:`~sfvq.spaces.LatentSpace.render_edits` (its noise handling) at ``resolution`` px.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = space.render_edits(full, [direction], sigmas, layers, batch_size, resolution)  # (S, 1, M, ...)
    images = images[:, 0]  # (S, M, C, H, W)
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
    "GifWriter",
    "Mp4Writer",
    "RenderMemoryError",
    "available_memory",
    "edit_grid",
    "edit_images",
    "iter_renders",
    "panoptic_map",
    "render_batch_size",
    "render_vectors",
    "strip",
    "walk_points",
    "write_gif",
    "write_mp4",
]
