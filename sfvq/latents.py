"""Seeded sampling of latents (z, w, w+, s), streamed to disk with a JSON sidecar.

How z is drawn is the generator's own (``G.z_stream``, ``G.z_for_seeds``); the default follows NVIDIA's
tools, so seeds mean the same thing here as there:

* a list of seeds gives one z per seed, ``np.random.RandomState(seed).randn(1, z_dim)``;
* one ``seed`` for a large N gives one stream, ``np.random.RandomState(seed).randn(N, z_dim)``, drawn
  batch by batch (the legacy generator keeps its state between calls, so the result does not depend on
  the batch size).

:func:`sample_latent_shards` writes the same rows as ``.npy`` shards with a manifest (for data larger than
memory and for several processes, each writing its own shards): row i is the same latent either way.

A generator may draw differently (BigGAN's z is truncated noise times psi, seeded the same way); the
sidecar's ``rng`` says how (``G.z_rng_description``).

Stored layouts (float32, one row per sample, ready to fit a curve on):

* ``z``: (N, z_dim), the z fed to the mapping. Truncation is recorded in the sidecar and applies when
  the z are mapped (for StyleGAN it acts in W; for the DCGAN it scales z), except for a generator whose
  z already carries it (``G.truncation_in_z``, e.g. BigGAN); ``truncation_applied`` in the sidecar says
  which.
* ``w``: (N, w_dim) = ``mapping(z, c, psi, cutoff)[:, 0]``.
* ``w+``: (N, num_ws * w_dim) = ``ws.reshape(N, -1)``; reshape to (N, num_ws, w_dim) to synthesise.
* ``s`` (StyleGAN2/3): (N, style_dim) = ``G.styles(ws)``, every style layer's code concatenated
  (StyleSpace); ``s:GROUP`` keeps the columns of the group's layers (:func:`style_columns`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq import __version__
from sfvq.generators.base import Generator, normal_z_for_seeds
from sfvq.io import atomic_path, load_npy_with_sidecar, sidecar_path, to_json_text

SPACES = ("z", "w", "w+", "s")
MAX_SEED = 2**32 - 1
LATENTS_KIND = "sfvq-latents"
LAYOUTS = {
    "z": "(N, z_dim)",
    "w": "(N, w_dim) = ws[:, 0]",
    "w+": "(N, num_ws * w_dim) = ws.reshape(N, -1)",
    "s": "(N, style_dim) = G.styles(ws)",
}


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return int(seed)


def format_seeds(seeds: Sequence[int]) -> str:
    """Compact seed list in the ``--seeds`` syntax: ``[0, 1, 2, 3, 7]`` -> ``"0-3,7"`` (order kept)."""
    parts: list[str] = []
    i = 0
    seeds = [int(s) for s in seeds]
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if j == i else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def z_from_seeds(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """One z per seed, as NVIDIA's tools draw it: row i = ``RandomState(seeds[i]).randn(1, z_dim)``.

    Returns (N, z_dim) float32.
    """
    return normal_z_for_seeds([_check_seed(s) for s in seeds], z_dim)


def z_for_seeds(G: Generator, seeds: Sequence[int], truncation_psi: float = 1.0) -> np.ndarray:
    """The z to feed ``G.mapping`` for each seed, drawn the generator's way (``G.z_for_seeds``):
    (N, z_dim) float32. NVIDIA's ``RandomState(seed).randn(1, z_dim)`` unless G draws otherwise."""
    seeds = [_check_seed(s) for s in seeds]
    return np.asarray(G.z_for_seeds(seeds, truncation_psi), dtype=np.float32)


def check_space(G: Generator, space: str) -> str:
    """``space`` if ``G`` offers it (``s:GROUP``: StyleSpace and a group that fits G), else ValueError
    naming the spaces it has."""
    from sfvq.parsing import split_space_name

    base, group = split_space_name(space)
    if base not in SPACES:
        raise ValueError(f"unknown latent space {space!r}; choose one of {', '.join(SPACES)}")
    if base not in G.spaces:
        raise ValueError(f"{G.name} has no {base!r} space (it offers: {', '.join(G.spaces)})")
    if base == "s":
        style_columns(G, group)
    return space


def style_columns(G: Generator, group: str | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """StyleSpace group -> (its W+ layers [start, stop), its entries [c0, c1) of the full S vector).

    The style layers (``G.style_layers``: name, ws index, channels) are ordered by their ws index, so the
    layers that read W+ entries ``start..stop-1`` are one contiguous block of S. ValueError for a group
    that does not fit G (:func:`sfvq.parsing.style_group_range`) or holds no layer.
    """
    from sfvq.parsing import style_group_range

    layout = getattr(G, "style_layers", None)
    if layout is None:
        raise ValueError(f"{G.name} has no StyleSpace (the style codes of a StyleGAN2/StyleGAN3 network)")
    start, stop = style_group_range(group, G.num_ws)
    c0 = sum(ch for _, i, ch in layout if i < start)
    c1 = sum(ch for _, i, ch in layout if i < stop)
    if c1 == c0:
        raise ValueError(f"style group {group} of {G.name} holds no style layer")
    return (start, stop), (c0, c1)


def check_truncation(G: Generator, truncation_psi: float, truncation_cutoff: int | None) -> None:
    """psi finite; cutoff None or in [0, num_ws]."""
    if not math.isfinite(truncation_psi):
        raise ValueError(f"truncation psi must be a finite number, got {truncation_psi}")
    if truncation_cutoff is not None and G.w_dim is None:
        raise ValueError(f"{G.name} has no style layers (no w space), so a truncation cutoff does not apply")
    if truncation_cutoff is not None and not 0 <= truncation_cutoff <= G.num_ws:
        raise ValueError(
            f"truncation cutoff must be in [0, {G.num_ws}] ({G.name} has num_ws {G.num_ws}), "
            f"got {truncation_cutoff}"
        )


def class_vectors(G: Generator, class_idx: int | None, n: int) -> torch.Tensor | None:
    """One-hot class vectors (n, c_dim) on G's device for a conditional G; None for an unconditional one.

    Raises ValueError when a conditional G gets no class, an unconditional one gets a class, or the
    class is out of range.
    """
    if G.c_dim == 0:
        if class_idx is not None:
            raise ValueError(f"{G.name} is unconditional (c_dim 0); do not give a class (got {class_idx})")
        return None
    if class_idx is None:
        raise ValueError(f"{G.name} is conditional ({G.c_dim} classes): give a class in 0..{G.c_dim - 1}")
    if not 0 <= class_idx < G.c_dim:
        raise ValueError(f"class {class_idx} is out of range for {G.name}: classes are 0..{G.c_dim - 1}")
    c = torch.zeros(n, G.c_dim, device=G.device)  # (n, c_dim)
    c[:, class_idx] = 1
    return c


def latent_dim(G: Generator, space: str) -> int:
    """Row length of stored latents in ``space``."""
    if space == "z":
        return G.z_dim
    if G.w_dim is None:
        raise ValueError(f"{G.name} has no mapping network, so no {space!r} space")
    if space.partition(":")[0] == "s":
        from sfvq.parsing import split_space_name

        c0, c1 = style_columns(G, split_space_name(space)[1])[1]
        return c1 - c0
    return G.w_dim if space == "w" else G.num_ws * G.w_dim


@torch.no_grad()
def latents_from_z(
    G: Generator,
    z: np.ndarray,
    space: str,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
) -> np.ndarray:
    """z (N, z_dim) -> stored latents in ``space``: (N, z_dim), (N, w_dim), (N, num_ws * w_dim) or
    (N, columns of the style group) float32."""
    N, D = z.shape
    if D != G.z_dim:
        raise ValueError(f"expected z of shape (N, {G.z_dim}), got {z.shape}")
    if space == "z":
        return np.asarray(z, dtype=np.float32)
    zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(G.device)  # (N, z_dim)
    c = class_vectors(G, class_idx, N)  # (N, c_dim) or None
    ws = G.mapping(zt, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)  # (N, L, w_dim)
    if ws.ndim != 3 or ws.shape[0] != N or ws.shape[1] != G.num_ws:
        raise ValueError(f"{G.name}.mapping returned {tuple(ws.shape)}, expected (N, {G.num_ws}, w_dim)")
    if space.partition(":")[0] == "s":
        from sfvq.parsing import split_space_name

        c0, c1 = style_columns(G, split_space_name(space)[1])[1]
        return G.styles(ws)[:, c0:c1].float().cpu().numpy()  # (N, c1 - c0)
    out = ws[:, 0] if space == "w" else ws.reshape(N, -1)  # (N, w_dim) or (N, L * w_dim)
    return out.float().cpu().numpy()


def _request(
    G: Generator,
    n: int | None,
    space: str,
    seed: int,
    truncation_psi: float,
    truncation_cutoff: int | None,
    class_idx: int | None,
    batch_size: int,
    seeds: Sequence[int] | None,
    generator_sha256: str | None,
) -> tuple[int, int, list[int] | None, int, dict[str, Any]]:
    """Check a sampling request before any work: (n, seed, seeds, row length D, sidecar metadata)."""
    if seeds is not None:
        seeds = [_check_seed(s) for s in seeds]
        if n is not None and n != len(seeds):
            raise ValueError(f"n ({n}) and the number of seeds ({len(seeds)}) disagree")
        n = len(seeds)
    else:
        seed = _check_seed(seed)
    if n is None or isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = int(n)
    check_space(G, space)
    check_truncation(G, truncation_psi, truncation_cutoff)
    class_vectors(G, class_idx, 1)  # validate the class before any work
    D = latent_dim(G, space)

    meta = {
        "kind": LATENTS_KIND,
        "version": __version__,
        "generator": G.name,
        "generator_sha256": generator_sha256,
        "space": space,
        "layout": _layout(G, space),
        "n": n,
        "z_dim": G.z_dim,
        "w_dim": G.w_dim,
        "num_ws": G.num_ws,
        "c_dim": G.c_dim,
        "class_idx": class_idx,
        "truncation_psi": float(truncation_psi),
        "truncation_cutoff": truncation_cutoff,
        "truncation_applied": space != "z" or bool(G.truncation_in_z),
        "seed": None if seeds is not None else seed,
        "seeds": format_seeds(seeds) if seeds is not None else None,
        "rng": G.z_rng_description(per_seed=seeds is not None),
    }
    return n, seed, seeds, D, meta


def _layout(G: Generator, space: str) -> str:
    """The sidecar's ``layout`` text of ``space`` (a StyleSpace group names its columns)."""
    if space.partition(":")[0] != "s" or ":" not in space:
        return LAYOUTS[space.partition(":")[0]]
    from sfvq.parsing import split_space_name

    (start, stop), (c0, c1) = style_columns(G, split_space_name(space)[1])
    return f"(N, {c1 - c0}) = G.styles(ws)[:, {c0}:{c1}] (the style layers of W+ layers {start}-{stop - 1})"


def sample_latents(
    G: Generator,
    n: int | None = None,
    space: str = "z",
    seed: int = 0,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    batch_size: int = 1024,
    out_path: str | Path | None = None,
    progress: bool = True,
    *,
    seeds: Sequence[int] | None = None,
    generator_sha256: str | None = None,
) -> np.ndarray:
    """Sample ``n`` latents of ``G`` in ``space`` (layouts in the module docstring).

    Either ``seed`` (one RandomState stream of ``n`` rows) or ``seeds`` (one z per seed, NVIDIA style;
    ``n`` then defaults to ``len(seeds)``). With ``out_path``, the rows stream batch by batch into a
    memory-mapped temporary ``.npy`` beside it, renamed into place when complete, then a JSON sidecar
    (``latents.npy`` -> ``latents.json``) is written; the returned array is then a read-only memmap.
    ``generator_sha256`` goes into the sidecar (see ``sfvq.generators.registry.generator_sha256``).
    """
    n, seed, seeds, D, meta = _request(
        G, n, space, seed, truncation_psi, truncation_cutoff, class_idx, batch_size, seeds, generator_sha256
    )
    stream = G.z_stream(n, seed, truncation_psi, batch_size) if seeds is None else None

    def fill(out: np.ndarray) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(f"sampling {space}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
            task = bar.add_task("sample", total=n)
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                if stream is not None:
                    z = next(stream)  # (b, z_dim), continues the seeded stream
                else:
                    z = z_for_seeds(G, seeds[start : start + b], truncation_psi)  # (b, z_dim)
                if z.shape != (b, G.z_dim):
                    raise ValueError(f"{G.name} drew z of shape {z.shape}, expected ({b}, {G.z_dim})")
                out[start : start + b] = latents_from_z(
                    G, z, space, truncation_psi, truncation_cutoff, class_idx
                )
                bar.advance(task, b)

    if out_path is None:
        out = np.empty((n, D), dtype=np.float32)
        fill(out)
        return out

    out_path = Path(out_path)
    meta["file"] = out_path.name
    meta["shape"] = [n, D]
    meta["dtype"] = "float32"
    text = to_json_text(meta)
    side = sidecar_path(out_path)
    with atomic_path(out_path) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, D))
        try:
            fill(mm)
            mm.flush()
        finally:
            del mm
        # Complete: drop an old sidecar before the new array replaces the old one, so an array never
        # sits beside a sidecar that describes another array (an array without sidecar reads as incomplete).
        side.unlink(missing_ok=True)
    with atomic_path(side) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return np.load(out_path, mmap_mode="r", allow_pickle=False)


class _ZRows:
    """The z of rows ``[a, b)`` of a sampling request, asked for in increasing order: per seed, or from
    the one seeded stream (rows before ``a`` that this process does not write are drawn and dropped,
    so row i is the stream's row i whoever asks)."""

    def __init__(
        self, G: Generator, n: int, seed: int, seeds: list[int] | None, psi: float, batch_size: int
    ) -> None:
        self.G, self.seeds, self.psi = G, seeds, psi
        self.stream = G.z_stream(n, seed, psi, batch_size) if seeds is None else None
        self.start = 0  # stream row of self.buf[0]
        self.buf = np.zeros((0, G.z_dim), dtype=np.float32)

    def rows(self, a: int, b: int) -> np.ndarray:
        """(b - a, z_dim) float32."""
        if self.seeds is not None:
            z = z_for_seeds(self.G, self.seeds[a:b], self.psi)
        else:
            if a < self.start:
                raise ValueError(f"stream rows are drawn in order: asked for row {a} after row {self.start}")
            parts = []
            while True:
                end = self.start + len(self.buf)
                lo, hi = max(a, self.start), min(b, end)
                if hi > lo:
                    parts.append(self.buf[lo - self.start : hi - self.start])
                if end >= b:
                    break
                self.start, self.buf = end, next(self.stream)  # (batch, z_dim)
                if self.buf.ndim != 2 or self.buf.shape[1] != self.G.z_dim or not len(self.buf):
                    raise ValueError(
                        f"{self.G.name} drew z of shape {self.buf.shape}, expected (b, {self.G.z_dim})"
                    )
            z = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if z.shape != (b - a, self.G.z_dim):
            raise ValueError(f"{self.G.name} drew z of shape {z.shape}, expected ({b - a}, {self.G.z_dim})")
        return z


def _shard_sidecar(meta: dict[str, Any], name: str, k: int, count: int, a: int, b: int, D: int) -> dict:
    """The sidecar of shard ``k``: the request's metadata, this shard's rows and file."""
    return {
        **meta,
        "n": b - a,
        "file": Path(name).name,
        "shape": [b - a, D],
        "dtype": "float32",
        "shard": {"index": k, "count": count, "start": a, "stop": b, "of_n": meta["n"]},
    }


def _shard_is_done(path: Path, expected: dict[str, Any]) -> bool:
    """Whether an earlier run of the same request left shard ``path`` complete (its sidecar, written
    after the array, says so and the array's header agrees)."""
    side = sidecar_path(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        if json.loads(side.read_text(encoding="utf-8")) != json.loads(to_json_text(expected)):
            return False
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return list(a.shape) == expected["shape"] and a.dtype == np.float32


def sample_latent_shards(
    G: Generator,
    outdir: str | Path,
    n: int | None = None,
    space: str = "z",
    seed: int = 0,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    batch_size: int = 1024,
    shard_rows: int = 100_000,
    progress: bool = True,
    *,
    seeds: Sequence[int] | None = None,
    generator_sha256: str | None = None,
) -> Path:
    """Sample as :func:`sample_latents` does, into ``.npy`` shards of ``shard_rows`` rows and a manifest.

    Writes ``outdir/shards/latents-KKKKK-of-CCCCC.npy`` (rows ``K * shard_rows ...``, each with a JSON
    sidecar) and, last, ``outdir/manifest.json`` (:mod:`sfvq.shards`); returns the manifest's path.
    Row i is the row i :func:`sample_latents` draws with the same settings (one z per seed, or row i of
    the one seeded stream), so the shards read in order equal its file, whatever the shard size and the
    number of processes. Under ``torch.distributed`` each process writes the shards ``K % world ==
    rank``. A shard an interrupted run of the same request completed (its sidecar says so) is kept.
    """
    from sfvq import dist
    from sfvq.shards import MANIFEST_FILE, MANIFEST_KIND, shard_name, shard_ranges

    if isinstance(shard_rows, bool) or not isinstance(shard_rows, (int, np.integer)) or shard_rows < 1:
        raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    n, seed, seeds, D, meta = _request(
        G, n, space, seed, truncation_psi, truncation_cutoff, class_idx, batch_size, seeds, generator_sha256
    )
    outdir = Path(outdir)
    manifest = outdir / MANIFEST_FILE
    ranges = shard_ranges(n, int(shard_rows))
    names = [shard_name(k, len(ranges)) for k in range(len(ranges))]
    mine = dist.my_items(range(len(ranges)))
    if dist.is_main():
        manifest.unlink(missing_ok=True)  # until the new one is written, the folder is incomplete
    zrows = _ZRows(G, n, seed, seeds, truncation_psi, batch_size)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"sampling {space}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    total = sum(ranges[k][1] - ranges[k][0] for k in mine)
    with Progress(*columns, console=Console(stderr=True), disable=not (progress and dist.is_main())) as bar:
        task = bar.add_task("sample", total=total)
        for k in mine:
            a, b = ranges[k]
            path = outdir / names[k]
            side_meta = _shard_sidecar(meta, names[k], k, len(ranges), a, b, D)
            if _shard_is_done(path, side_meta):
                bar.advance(task, b - a)
                continue
            text = to_json_text(side_meta)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(b - a, D))
                try:
                    for s0 in range(a, b, batch_size):
                        s1 = min(b, s0 + batch_size)
                        z = zrows.rows(s0, s1)  # (s1 - s0, z_dim)
                        mm[s0 - a : s1 - a] = latents_from_z(
                            G, z, space, truncation_psi, truncation_cutoff, class_idx
                        )
                        bar.advance(task, s1 - s0)
                    mm.flush()
                finally:
                    del mm
                sidecar_path(path).unlink(missing_ok=True)
            with atomic_path(sidecar_path(path)) as tmp:
                tmp.write_text(text, encoding="utf-8")
    dist.barrier()  # every shard is on disk
    if dist.is_main():
        shards = [{"file": names[k], "start": a, "stop": b} for k, (a, b) in enumerate(ranges)]
        full = {
            **meta,
            "kind": MANIFEST_KIND,
            "shape": [n, D],
            "dtype": "float32",
            "shard_rows": int(shard_rows),
        }
        text = to_json_text({**full, "shards": shards})
        with atomic_path(manifest) as tmp:
            tmp.write_text(text, encoding="utf-8")
    dist.barrier()  # the manifest exists before any process returns it
    return manifest


def load_latents(path: str | Path, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read latents written by :func:`sample_latents`: the (N, D) array (memmap by default) and sidecar."""
    array, meta = load_npy_with_sidecar(path, mmap=mmap)
    if not isinstance(meta, dict) or meta.get("kind") != LATENTS_KIND:
        raise ValueError(
            f"{sidecar_path(path)} is not an sfvq latents sidecar (kind {LATENTS_KIND!r} missing)"
        )
    if array.ndim != 2 or list(array.shape) != meta.get("shape"):
        raise ValueError(f"{path}: array shape {array.shape} does not match its sidecar {meta.get('shape')}")
    return array, meta
