"""Controllable augmentation: images from points sampled along one curve segment, with their labels.

Points on a segment ``c_i -> c_{i+1}`` share the factor the segment encodes (the paper's augmentation),
and the position ``t`` in [0, 1] along it is a continuous label. Sampling is seeded and deterministic:

* ``t ~ U(0, 1)`` (float64), the point is ``(1 - t) c_i + t c_{i+1}``;
* optional jitter: Gaussian noise with per-dimension std ``jitter * s``, where ``s`` is the data's
  per-dimension standard deviation, with its component along the segment removed, so the noise moves a
  point off the segment but never along it (``t`` stays the exact position of the point's projection on
  the segment's line). ``jitter`` is therefore in units of the data's spread.

Outputs of :func:`write_augmentation`: ``images/000000.png ...``, ``latents.npy`` (n, D) float32 space
vectors with a JSON sidecar, ``labels.csv`` (index, file, segment, bits, t, curve_t, jitter, seed),
and ``preview.png`` (up to 64 images in order of t). ``labels.csv`` is written last.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq.directions import DirectionSpecError, _codebook, parse_spec


@dataclass
class SegmentSamples:
    """Points sampled on segment ``segment`` of the ``bits``-bit curve."""

    bits: int
    segment: int
    t: np.ndarray  # (n,) float64 in [0, 1], position along the segment
    points: np.ndarray  # (n, D) float32 space vectors (jitter included)
    jitter: float
    seed: int
    along: np.ndarray | None = None  # (D,) float64 c_{i+1} - c_i, for renders on a layer range

    @property
    def spec(self) -> str:
        return f"{self.bits}:{self.segment}"


def parse_segment(spec: str, model: Any) -> tuple[int, int]:
    """``"b:i"`` -> (b, i), checked against the model (one segment only; ``b:i-j`` is refused)."""
    parsed = parse_spec(spec)
    if parsed is None or "-" in str(spec):
        raise DirectionSpecError(
            f"{spec!r} is not a segment b:i (e.g. 5:1): augmentation runs along one segment"
        )
    b, i, _ = parsed
    K = _codebook(model, b).shape[0]
    if not 0 <= i <= K - 2:
        raise DirectionSpecError(f"segment {i} is out of range: the {b}-bit curve has segments 0-{K - 2}")
    return b, i


def data_std(X: Any, chunk: int = 8192) -> np.ndarray:
    """Per-dimension standard deviation (D,) float64 of X (N, D), streamed (X may be a memory map)."""
    N = X.shape[0]
    s = np.zeros(X.shape[1])
    ss = np.zeros(X.shape[1])
    for i in range(0, N, chunk):
        x = np.asarray(X[i : i + chunk], dtype=np.float64)
        s += x.sum(0)
        ss += (x * x).sum(0)
    mean = s / N
    return np.sqrt(np.maximum(ss / N - mean * mean, 0))


def sample_segment(
    model: Any, bits: int, segment: int, n: int, *, seed: int = 0, jitter: float = 0.0, X: Any = None
) -> SegmentSamples:
    """``n`` seeded points on one segment (see the module docstring); jitter needs the data ``X``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
    C = _codebook(model, bits)  # (K, D) float64
    K, D = C.shape
    if not 0 <= segment <= K - 2:
        raise DirectionSpecError(
            f"segment {segment} is out of range: the {bits}-bit curve has segments 0-{K - 2}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    t = torch.rand(n, generator=gen, dtype=torch.float64)  # (n,)
    a, b = C[segment], C[segment + 1]  # (D,)
    points = (1 - t)[:, None] * a + t[:, None] * b  # (n, D)
    if jitter > 0:
        if X is None:
            raise ValueError("jitter > 0 needs the data (the curve's latents) for its per-dimension std")
        if X.shape[1] != D:
            raise ValueError(f"the data is {X.shape[1]}-D but the curve is {D}-D")
        s = torch.from_numpy(data_std(X))  # (D,)
        noise = torch.randn(n, D, generator=gen, dtype=torch.float64) * (jitter * s)  # (n, D)
        d = b - a
        dd = float(d @ d)
        if dd > 0:
            noise = noise - (noise @ d)[:, None] * d / dd  # remove the part along the segment
        points = points + noise
    return SegmentSamples(
        bits=int(bits),
        segment=int(segment),
        t=t.numpy(),
        points=points.to(torch.float32).numpy(),
        jitter=float(jitter),
        seed=int(seed),
        along=(b - a).numpy(),
    )


def layered_full(
    space: Any, samples: SegmentSamples, start: int, stop: int, layers: tuple[int, int]
) -> torch.Tensor:
    """Full tensors (B, num_ws, full_dim) of samples ``start:stop`` moved along the segment on ``layers``
    only: every layer holds the sample's point with its position moved to the segment's middle
    (``t = 0.5``, jitter kept), and the layers in ``layers`` (start, stop_exclusive) add the rest of the
    way, ``(t - 0.5) (c_{i+1} - c_i)``; so only those layers move along the segment."""
    if samples.along is None:
        raise ValueError("these samples do not record their segment (sample_segment sets it)")
    d = torch.from_numpy(np.asarray(samples.along, np.float64))  # (D,)
    t = torch.from_numpy(np.asarray(samples.t[start:stop], np.float64))  # (B,)
    p = torch.from_numpy(np.asarray(samples.points[start:stop], np.float64))  # (B, D)
    mid = (p - (t - 0.5)[:, None] * d).float()  # (B, D)
    full = space.to_full(mid)  # (B, L, F)
    a, b = layers
    full[:, a:b] += (t - 0.5)[:, None, None].float() * space.direction_to_full(d.float()).to(full)
    return full


def labels_csv(samples: SegmentSamples, files: list[str]) -> str:
    """The text of labels.csv: one row a sample (floats written exactly, as repr)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "file", "segment", "bits", "t", "curve_t", "jitter", "seed"])
    for k, (f, t) in enumerate(zip(files, samples.t, strict=True)):
        w.writerow(
            [k, f, samples.spec, samples.bits, repr(float(t)), repr(samples.segment + float(t)),
             repr(samples.jitter), samples.seed]
        )  # fmt: skip
    return buf.getvalue()


PLAN_FILE = ".render-plan.json"


def batch_seed(seed: int, batch: int) -> int:
    """The torch seed batch ``batch`` of a render is drawn under: one stream per batch, so a batch's
    images do not depend on which process renders it or on the batches skipped before it."""
    return int(np.random.SeedSequence([int(seed), int(batch)]).generate_state(1, np.uint64)[0])


def _plan(
    space: Any, samples: SegmentSamples, batch_size: int, meta: dict[str, Any] | None
) -> dict[str, Any]:
    """What the images of a folder were rendered from: images already there are reused only when the
    next render's plan is the same (the same points, space, batches and request)."""
    return {
        "points_sha256": hashlib.sha256(np.ascontiguousarray(samples.points).tobytes()).hexdigest(),
        "n": int(samples.points.shape[0]),
        "seed": samples.seed,
        "batch_size": int(batch_size),
        "space": space.describe() if hasattr(space, "describe") else repr(space),
        "meta": meta or {},
    }


def write_augmentation(
    space: Any,
    samples: SegmentSamples,
    outdir: str | Path,
    *,
    batch_size: int = 32,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    layers: tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Render ``samples`` through ``space`` and write images, latents.npy, labels.csv and preview.png.

    ``layers`` (start, stop_exclusive): move along the segment on those W+ layers only
    (:func:`layered_full`); None: the points themselves on every layer.

    Batch ``k`` (images ``k * batch_size ...``) renders under a forked torch RNG seeded with
    :func:`batch_seed` ``(samples.seed, k)``, so even ``noise_mode="random"`` gives the same images for
    the same seed (on the same device), whichever process renders the batch.

    Resumable and shardable: a rerun of the same request into the same folder (recorded in
    ``.render-plan.json``) skips the batches whose images are all there (PNGs are written atomically, so
    a present file is whole); under ``torch.distributed`` each process renders the batches
    ``k % world == rank`` and rank 0 writes latents.npy, preview.png and, last, labels.csv. The files are
    the same whatever the number of processes.
    """
    from PIL import Image

    from sfvq import dist
    from sfvq.generators.base import to_uint8
    from sfvq.images import labelled_grid
    from sfvq.io import atomic_open, read_json, save_npy_with_sidecar, save_png, write_json
    from sfvq.progress import track
    from sfvq.spaces import check_finite

    outdir = Path(outdir)
    img_dir = outdir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    n = samples.points.shape[0]
    width = max(6, len(str(n - 1)))
    files = [f"images/{k:0{width}d}.png" for k in range(n)]
    if layers is not None:  # a different render: images of the same points on all layers are not reused
        meta = {**(meta or {}), "layers": list(layers)}
    plan = _plan(space, samples, batch_size, meta)
    plan_path = outdir / PLAN_FILE
    reuse = False
    if plan_path.is_file():
        try:
            reuse = read_json(plan_path) == json.loads(json.dumps(plan))
        except (OSError, ValueError):
            reuse = False
    dist.barrier()  # every process has read the old plan before rank 0 replaces it
    if dist.is_main():
        (outdir / "labels.csv").unlink(missing_ok=True)  # written last: until then the folder is incomplete
        if not reuse:
            write_json(plan_path, plan)
    starts = dist.my_items(range(0, n, batch_size))  # this process's batches, round-robin
    with torch.random.fork_rng():
        for s in track(starts, f"rendering {samples.spec}", total=len(starts), enabled=progress):
            stop = min(n, s + batch_size)
            if reuse and all((outdir / files[k]).is_file() for k in range(s, stop)):
                continue  # rendered by an earlier, interrupted run of the same request
            torch.manual_seed(batch_seed(samples.seed, s // batch_size))
            if layers is None:
                img = space.render(torch.from_numpy(samples.points[s:stop]))  # (B, C, H, W)
            else:
                img = space.render_full(layered_full(space, samples, s, stop, layers))  # (B, C, H, W)
            check_finite(img, f"images of samples {s}..{stop - 1}")
            for k, im in enumerate(to_uint8(img), start=s):
                save_png(outdir / files[k], im)
    dist.barrier()  # every image is on disk
    paths = {
        "images": img_dir,
        "latents": outdir / "latents.npy",
        "labels": outdir / "labels.csv",
        "preview": outdir / "preview.png",
    }
    if not dist.is_main():
        return paths
    save_npy_with_sidecar(
        outdir / "latents.npy",
        samples.points,
        {
            "what": "space vectors of the augmentation samples, row k = labels.csv index k",
            "space": space.describe() if hasattr(space, "describe") else None,
            "segment": samples.spec,
            "seed": samples.seed,
            "jitter": samples.jitter,
            **(meta or {}),
        },
    )
    order = np.argsort(samples.t, kind="stable")
    keys = sorted(
        set(order[np.linspace(0, n - 1, min(n, 64)).round().astype(int)].tolist()), key=lambda k: samples.t[k]
    )
    tiles = []
    for k in keys:  # read back: other processes (or an earlier run) rendered some of them
        with Image.open(outdir / files[k]) as im:
            a = np.asarray(im)
        tiles.append(a[:, :, None] if a.ndim == 2 else a)
    grid = labelled_grid(np.stack(tiles), [f"t={samples.t[k]:.2f}" for k in keys], cols=8)
    save_png(outdir / "preview.png", grid)
    keep = {Path(f).name for f in files}
    for old in img_dir.glob("*.png"):  # images of an earlier, larger run into the same folder
        if old.stem.isdigit() and old.name not in keep:
            old.unlink()
    with atomic_open(outdir / "labels.csv", "w") as f:
        f.write(labels_csv(samples, files))
    plan_path.unlink(missing_ok=True)  # complete: the next render starts from its own plan
    return paths


__all__ = [
    "PLAN_FILE",
    "SegmentSamples",
    "batch_seed",
    "data_std",
    "labels_csv",
    "layered_full",
    "parse_segment",
    "sample_segment",
    "write_augmentation",
]
