"""Pictures of a curve: corner renders, labelled panoptic maps and strips, walks (GIF/MP4), edit grids.

Rendering goes through a :class:`~sfvq.spaces.LatentSpace` (exact for every kind of space), at the
generator's full size or a preview resolution; images come back as NHWC uint8 numpy arrays. How many
images one generator call renders comes from a memory estimate (:func:`sfvq.membudget.render_batch_size`),
so that a full-size generator is never asked for more than the machine holds. Walks are streamed to their
files (:class:`Mp4Writer`, :class:`GifWriter`) as the frames are rendered. Every file is written
atomically (see :mod:`sfvq.io`).
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

from sfvq import curve, dist
from sfvq.generators.base import preview_size, to_uint8
from sfvq.images import FLAG_COLOUR, labelled_grid
from sfvq.io import atomic_open, atomic_path
from sfvq.progress import track
from sfvq.spaces import LatentSpace, check_finite


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


# ---------------------------------------------------------------------------------------- several processes
def batch_ranges(n: int, batch_size: int, *, spread: bool = False) -> list[tuple[int, int]]:
    """The batches ``(start, stop)`` in which ``n`` images are rendered, the same in every process (batch k
    is rendered by process k mod world, see :func:`render_shared`), so that a batch holds the same images
    whatever the number of processes. ``spread``: under several processes, batches shrink to
    ``ceil(n / world)`` where that is smaller, so that every process gets work (used where the batch size
    was chosen automatically; a batch size the user gave is kept, which keeps the images bit for bit)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    world = dist.world_size()
    if spread and world > 1 and n > 0:
        batch_size = max(1, min(batch_size, -(-n // world)))
    return [(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]


def _part(workdir: str | Path, name: str, k: int) -> Path:
    """The file of batch ``k`` of a shared render (hidden, removed once rank 0 has read it)."""
    return Path(workdir) / f".{name}-part{k:05d}.npy"


def _render_my_batches(
    space: LatentSpace,
    full: torch.Tensor,
    batches: Sequence[tuple[int, int]],
    batch_size: int,
    workdir: str | Path,
    name: str,
    description: str,
    progress: bool,
    resolution: int | None,
    uint8: bool,
) -> None:
    """Render this process's batches (k = rank, rank + world, ...) of ``full`` (n, num_ws, full_dim), each
    written atomically as one file (float images (b, C, H, W), or uint8 (b, H, W, C) with ``uint8``);
    returns when every process is done, raising on every process if one failed."""
    error: BaseException | None = None
    try:
        mine = dist.my_items(list(enumerate(batches)))
        for k, (start, stop) in track(mine, description, len(mine), progress):
            images = space.render_full(full[start:stop], batch_size, resolution)  # (b, C, H, W)
            check_finite(images, f"images rendered for {description}")
            with atomic_open(_part(workdir, name, k), "wb") as f:
                np.save(f, to_uint8(images) if uint8 else images.numpy())
    except Exception as e:  # noqa: BLE001 (raised below, on every process)
        error = e
    dist.raise_together(error)


def _read_part(workdir: str | Path, name: str, k: int) -> np.ndarray:
    path = _part(workdir, name, k)
    array = np.load(path)
    path.unlink()
    return array


def render_shared(
    space: LatentSpace,
    vectors: torch.Tensor | np.ndarray,
    workdir: str | Path,
    name: str,
    *,
    batch_size: int = 64,
    spread: bool = False,
    description: str = "rendering",
    progress: bool = True,
    resolution: int | None = None,
) -> tuple[torch.Tensor, np.ndarray] | None:
    """:func:`render_vectors` with the batches (:func:`batch_ranges`) shared among the processes of a
    ``torch.distributed`` run: each renders its batches into ``workdir`` (files named after ``name``),
    and rank 0 reads them back in order. Returns (float images (n, C, H, W), uint8 images (n, H, W, C))
    on rank 0 (and in a single process, which renders everything with no file), None on the others.
    The images equal one process's bit for bit when the batches are the same (``spread`` False)."""
    if not dist.is_distributed():
        return render_vectors(
            space,
            vectors,
            batch_size=batch_size,
            description=description,
            progress=progress,
            resolution=resolution,
        )
    full = space.to_full(torch.as_tensor(vectors).float().cpu())  # (n, num_ws, full_dim)
    batches = batch_ranges(len(full), batch_size, spread=spread)
    _render_my_batches(
        space, full, batches, batch_size, workdir, name, description, progress, resolution, uint8=False
    )
    if not dist.is_main():
        return None
    images = torch.cat([torch.from_numpy(_read_part(workdir, name, k)) for k in range(len(batches))])
    return images, to_uint8(images)


def iter_shared_renders(
    space: LatentSpace,
    vectors: torch.Tensor | np.ndarray,
    workdir: str | Path,
    name: str,
    *,
    batch_size: int = 64,
    spread: bool = False,
    description: str = "rendering",
    progress: bool = True,
    resolution: int | None = None,
) -> Iterator[np.ndarray]:
    """:func:`iter_renders` with the batches shared among processes as in :func:`render_shared`: every
    process renders its batches (uint8 files in ``workdir``) when the iteration starts; rank 0 then
    yields every batch (b, H, W, C) in order, one file read at a time; the others yield nothing."""
    if not dist.is_distributed():
        yield from iter_renders(
            space,
            vectors,
            batch_size=batch_size,
            description=description,
            progress=progress,
            resolution=resolution,
        )
        return
    full = space.to_full(torch.as_tensor(vectors).float().cpu())  # (n, num_ws, full_dim)
    batches = batch_ranges(len(full), batch_size, spread=spread)
    _render_my_batches(
        space, full, batches, batch_size, workdir, name, description, progress, resolution, uint8=True
    )
    if dist.is_main():
        for k in range(len(batches)):
            yield _read_part(workdir, name, k)


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
    "batch_ranges",
    "edit_grid",
    "edit_images",
    "iter_renders",
    "iter_shared_renders",
    "panoptic_map",
    "render_shared",
    "render_vectors",
    "strip",
    "walk_points",
    "write_gif",
    "write_mp4",
]
