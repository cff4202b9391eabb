"""Row sources: an (N, D) matrix of latents read chunk by chunk, never held whole.

The fit, the projections and the statistics of :class:`~sfvq.quantizer.SFVQ` read their data through a
:class:`Rows`: contiguous blocks (``read``, ``chunks``) and gathered rows (``take``), each returned as a
fresh torch tensor on the fit device. Three kinds:

* :class:`TensorRows`: a tensor (or a writable in-memory numpy array, shared without a copy);
* :class:`ArrayRows`: a numpy array, typically a memory-mapped ``.npy``. A file up to
  :data:`MAP_BYTES` (1 GiB) is read through its map, whose pages then stay resident (the fastest way to
  gather rows); a larger one is read with positional reads (``preadv``) into fresh buffers, so its pages
  stay in the page cache, outside the process, and resident memory stays bounded however large the
  file. Any other read-only map (a view of one) is released (``madvise(MADV_DONTNEED)``) whenever
  ``release_bytes`` may have been mapped since the last release (a gathered row counts as the 64 KiB a
  page fault maps);
* :class:`ShardedRows`: the shards listed in a manifest (``sfvq sample --shard-rows``), one
  :class:`ArrayRows` per shard, seen as one matrix in manifest order.

A manifest is a JSON file (``kind`` ``"sfvq-latents-manifest"``) written last, after every shard; it
lists ``shards`` as ``{"file", "start", "stop"}`` (row ranges of the whole set, in order, relative file
names) and ``shape``, ``dtype`` and the sampling settings of the set.
"""

from __future__ import annotations

import json
import mmap
import os
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

MANIFEST_KIND = "sfvq-latents-manifest"
MANIFEST_FILE = "manifest.json"
# Bytes of input per chunk of a sequential pass (statistics, projections).
CHUNK_BYTES = 16 * 2**20
# Mapped bytes read before a read-only memory map is dropped from the process's resident memory.
RELEASE_BYTES = 128 * 2**20
# A memory-mapped .npy up to this size is read through its map (its pages stay resident: the fastest way
# to gather rows, within the budget of input size + 1 GiB); a larger one is read with positional reads,
# which keep nothing resident (about 5 us a gathered row).
MAP_BYTES = 2**30
# A page fault on a mapped file maps the neighbouring cached pages too (Linux's fault-around, 64 KiB
# by default): what reading one row may add to resident memory.
_FAULT_BYTES = 64 * 2**10


class ManifestError(ValueError):
    """A manifest that does not describe a complete, readable sharded latents set."""


def _float_dtype(dtype: Any) -> torch.dtype:
    """The dtype rows are computed in: float64 stays float64, everything else becomes float32."""
    return torch.float64 if dtype in (np.float64, torch.float64) else torch.float32


class Rows:
    """An (N, D) matrix read in pieces. Subclasses implement ``_read`` and ``_take``.

    ``dtype`` is the torch float dtype of what ``read``/``take`` return unless told otherwise (float64
    for float64 data, float32 for anything else); ``device`` is where they return it.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def __len__(self) -> int:
        return self.shape[0]

    def chunk_rows(self, chunk_bytes: int | None = None) -> int:
        """Rows per chunk of a sequential pass (about ``chunk_bytes``, default :data:`CHUNK_BYTES`, of
        float32 input)."""
        return max(1, (chunk_bytes or CHUNK_BYTES) // (4 * self.shape[1]))

    def read(self, start: int, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows ``start:stop`` -> (stop - start, D) tensor on ``device``."""
        return self._read(start, stop).to(device=self.device, dtype=dtype or self.dtype)

    def take(self, idx: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows ``idx`` (any order, repeats allowed) -> (len(idx), D) tensor on ``device``."""
        return self._take(idx).to(device=self.device, dtype=dtype or self.dtype)

    def chunks(
        self,
        start: int = 0,
        stop: int | None = None,
        rows: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first row, block)`` for consecutive blocks of rows ``start:stop``."""
        stop = self.shape[0] if stop is None else stop
        step = rows or self.chunk_rows()
        for a in range(start, stop, step):
            yield a, self.read(a, min(stop, a + step), dtype)

    def release(self) -> None:
        """Drop mapped pages from resident memory (no-op for in-memory data)."""

    def _read(self, start: int, stop: int) -> torch.Tensor:
        raise NotImplementedError

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TensorRows(Rows):
    """Rows of a tensor held in memory (views, no copy beyond the dtype/device change)."""

    def __init__(self, x: torch.Tensor, device: torch.device | str | None = None) -> None:
        self.x = x if device is None else x.to(device)  # in-memory data moves to the device once
        self.shape = (int(x.shape[0]), int(x.shape[1]))
        self.dtype = _float_dtype(x.dtype)
        self.device = self.x.device

    def _read(self, start: int, stop: int) -> torch.Tensor:
        return self.x[start:stop]

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx.to(self.x.device)]


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` object behind a read-only memory-mapped array (following ``.base``), else None."""
    if array.flags.writeable:
        return None  # a writable or copy-on-write map may hold changes: never drop its pages
    base: Any = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def _file_of(array: np.ndarray) -> tuple[str, int] | None:
    """(path, byte offset of row 0) of a whole read-only memory-mapped ``.npy`` (as ``np.load(...,
    mmap_mode="r")`` returns it), whose rows can be read from the file directly; else None."""
    if (
        isinstance(array, np.memmap)
        and isinstance(array.base, mmap.mmap)  # the map itself, not a view of it
        and getattr(array, "mode", None) == "r"
        and array.filename
        and array.flags.c_contiguous
        and hasattr(os, "preadv")
    ):
        return str(array.filename), int(array.offset)
    return None


class ArrayRows(Rows):
    """Rows of a numpy array, read block by block, never copied whole.

    A whole read-only memory-mapped ``.npy`` larger than ``map_bytes`` is read from its file with
    positional reads (``preadv``, about 5 us a gathered row): the rows land in fresh buffers and the file's
    pages stay in the page cache, outside the process. Any other read-only memory map (a smaller one, a
    view of one) is read through the map; one larger than ``release_bytes`` is released
    (``madvise(MADV_DONTNEED)``) whenever ``release_bytes`` may have been mapped since the last release.
    """

    def __init__(
        self,
        array: np.ndarray,
        device: torch.device | str | None = None,
        release_bytes: int | None = None,
        map_bytes: int | None = None,
    ) -> None:
        release_bytes = RELEASE_BYTES if release_bytes is None else release_bytes
        map_bytes = MAP_BYTES if map_bytes is None else map_bytes
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))
        self.dtype = _float_dtype(array.dtype)
        self.device = torch.device(device if device is not None else "cpu")
        self._row_bytes = array.dtype.itemsize * self.shape[1]
        self._release_bytes = release_bytes
        self._touched = 0
        self._fd: int | None = None
        self._mm = None
        where = _file_of(array)
        if where is not None and array.nbytes > map_bytes:
            self._fd = os.open(where[0], os.O_RDONLY)
            self._offset = where[1]
            self._closer = weakref.finalize(self, os.close, self._fd)
        elif where is None:  # a whole file within map_bytes stays mapped; anything else is released
            self._mm = _mapping_of(array)
            if self._mm is not None and len(self._mm) <= release_bytes:
                self._mm = None  # a map smaller than the budget never needs releasing

    def _account(self, nbytes: int) -> None:
        if self._mm is None:
            return
        self._touched += nbytes
        if self._touched >= self._release_bytes:
            self.release()

    def release(self) -> None:
        if self._mm is not None and hasattr(self._mm, "madvise"):
            self._mm.madvise(mmap.MADV_DONTNEED)
        self._touched = 0

    def _tensor(self, block: np.ndarray) -> torch.Tensor:
        if block.dtype not in (np.float32, np.float64):
            block = block.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(block))

    def _pread(self, buf: np.ndarray, offset: int) -> None:
        """Fill ``buf`` from the file at ``offset`` (looping over short reads)."""
        view = memoryview(buf.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"{self.array.filename}: the file ended early (truncated while reading?)")
            done += n

    def _read(self, start: int, stop: int) -> torch.Tensor:
        if self._fd is not None:
            block = np.empty((stop - start, self.shape[1]), dtype=self.array.dtype)
            self._pread(block, self._offset + start * self._row_bytes)
            return self._tensor(block)
        block = np.array(self.array[start:stop])  # a copy: the result must not pin mapped pages
        self._account((stop - start) * self._row_bytes + _FAULT_BYTES)
        return self._tensor(block)

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        i = idx.cpu().numpy()
        if self._fd is not None:
            out = np.empty((len(i), self.shape[1]), dtype=self.array.dtype)
            fd, base, size = self._fd, self._offset, self._row_bytes
            rows = memoryview(out.reshape(-1).view(np.uint8))
            for k, r in enumerate(i.tolist()):  # one positional read a row
                if os.preadv(fd, [rows[k * size : (k + 1) * size]], base + r * size) != size:
                    self._pread(out[k], base + r * size)  # a short read: finish it
            return self._tensor(out)
        if self._mm is None:
            return self._tensor(self.array[i])  # fancy indexing copies
        # Gather in blocks that each touch at most the release budget of mapped pages.
        per_row = max(self._row_bytes, _FAULT_BYTES)
        block = max(1, self._release_bytes // per_row)
        out = np.empty((len(i), self.shape[1]), dtype=self.array.dtype)
        for a in range(0, len(i), block):
            np.take(self.array, i[a : a + block], axis=0, out=out[a : a + block], mode="clip")
            self._account(len(i[a : a + block]) * per_row)
        return self._tensor(out)


class ShardedRows(Rows):
    """The shards of a manifest as one (N, D) matrix; shards are opened memory-mapped, read-only."""

    def __init__(
        self,
        shards: Sequence[np.ndarray],
        device: torch.device | str | None = None,
        meta: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> None:
        if not shards:
            raise ManifestError("a sharded set needs at least one shard")
        D = shards[0].shape[1]
        # Read on the CPU, moved by read/take; the shards of a set larger than MAP_BYTES all use
        # positional reads (each alone may be small, together they are not).
        map_bytes = MAP_BYTES if sum(s.nbytes for s in shards) <= MAP_BYTES else 0
        self.parts = [ArrayRows(s, map_bytes=map_bytes) for s in shards]
        self.offsets = np.cumsum([0, *(p.shape[0] for p in self.parts)])  # (S + 1,)
        self.shape = (int(self.offsets[-1]), int(D))
        self.dtype = _float_dtype(shards[0].dtype)
        self.device = torch.device(device if device is not None else "cpu")
        self.meta = dict(meta or {})
        self.path = path

    def release(self) -> None:
        for p in self.parts:
            p.release()

    def _read(self, start: int, stop: int) -> torch.Tensor:
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        blocks = []
        s = first
        while start < stop:
            a, b = int(self.offsets[s]), int(self.offsets[s + 1])
            end = min(stop, b)
            blocks.append(self.parts[s].read(start - a, end - a, self.parts[s].dtype))
            start = end
            s += 1
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        i = idx.cpu().numpy().astype(np.int64)
        shard = np.searchsorted(self.offsets, i, side="right") - 1  # (n,)
        out = torch.empty(len(i), self.shape[1], dtype=self.dtype)
        for s in np.unique(shard):
            where = np.nonzero(shard == s)[0]
            part = self.parts[s]
            out[torch.from_numpy(where)] = part.take(torch.from_numpy(i[where] - self.offsets[s]), self.dtype)
        return out


# ---------------------------------------------------------------------------------------------- input
def as_rows(X: Any, name: str = "X", device: torch.device | str | None = None) -> Rows:
    """Validate an (N, D) input without reading it: a tensor, a numpy array (memory maps included) or
    a :class:`Rows`. Errors name the problem as :func:`sfvq.quantizer.as_matrix` does (type, ndim, empty,
    dtype); non-finite values are found by the pass that reads the rows."""
    if isinstance(X, Rows):
        rows = X
        if device is not None:
            rows.device = torch.device(device)
    elif isinstance(X, np.ndarray):
        if X.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold numbers, got numpy dtype {X.dtype}")
        _check_shape(X.shape, name)
        if X.flags.writeable and X.dtype in (np.float32, np.float64) and _mapping_of(X) is None:
            rows = TensorRows(torch.from_numpy(np.ascontiguousarray(X)), device)
        else:
            rows = ArrayRows(X, device)
    elif isinstance(X, torch.Tensor):
        _check_shape(tuple(X.shape), name)
        x = X.detach()
        if not x.is_floating_point() or x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        rows = TensorRows(x, device)
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(X).__name__}")
    return rows


def _check_shape(shape: tuple[int, ...], name: str) -> None:
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {len(shape)}-D with shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {shape}")


# ------------------------------------------------------------------------------------------- manifests
def shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[(0, r), (r, 2r), ...]`` of ``n`` rows cut into shards of ``shard_rows``."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be a positive integer, got {shard_rows}")
    return [(a, min(n, a + shard_rows)) for a in range(0, n, shard_rows)]


def shard_name(index: int, count: int) -> str:
    """File name of shard ``index`` of ``count``: ``shards/latents-00003-of-00010.npy``."""
    width = max(5, len(str(count)))
    return f"shards/latents-{index:0{width}d}-of-{count:0{width}d}.npy"


def is_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a manifest (a ``.json`` file) rather than a ``.npy``."""
    return Path(path).suffix.lower() == ".json"


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest's JSON, checked: kind, shape, contiguous shard ranges covering every row."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("kind") != MANIFEST_KIND:
        raise ManifestError(f"{path} is not an sfvq latents manifest (kind {MANIFEST_KIND!r} missing)")
    shape, shards = meta.get("shape"), meta.get("shards")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape)):
        raise ManifestError(f"{path}: 'shape' must be [N, D], got {shape!r}")
    if not isinstance(shards, list) or not shards:
        raise ManifestError(f"{path}: 'shards' must list at least one shard")
    expect = 0
    for k, s in enumerate(shards):
        if not (isinstance(s, dict) and isinstance(s.get("file"), str) and s.get("start") == expect):
            raise ManifestError(f"{path}: shard {k} must be {{file, start={expect}, stop}}, got {s!r}")
        if not isinstance(s.get("stop"), int) or s["stop"] <= s["start"]:
            raise ManifestError(f"{path}: shard {k} has no rows ({s!r})")
        if Path(s["file"]).is_absolute() or ".." in Path(s["file"]).parts:
            raise ManifestError(
                f"{path}: shard {k} must be a relative path inside the folder, got {s['file']!r}"
            )
        expect = s["stop"]
    if expect != shape[0]:
        raise ManifestError(f"{path}: the shards cover {expect} rows but the shape says {shape[0]}")
    return meta


def open_manifest(path: str | os.PathLike, device: torch.device | str | None = None) -> ShardedRows:
    """Every shard of a manifest, memory-mapped read-only, as one :class:`ShardedRows`."""
    path = Path(path)
    meta = read_manifest(path)
    D = meta["shape"][1]
    arrays = []
    for k, s in enumerate(meta["shards"]):
        f = path.parent / s["file"]
        try:
            a = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ManifestError(f"{path}: shard {k} ({f}) is missing or unreadable: {e}") from e
        if a.ndim != 2 or a.shape != (s["stop"] - s["start"], D) or a.dtype.kind not in "fiu":
            raise ManifestError(
                f"{path}: shard {k} ({f.name}) holds {a.shape} {a.dtype}, "
                f"expected ({s['stop'] - s['start']}, {D}) numbers"
            )
        arrays.append(a)
    return ShardedRows(arrays, device, meta=meta, path=path)


__all__ = [
    "CHUNK_BYTES",
    "MAP_BYTES",
    "RELEASE_BYTES",
    "MANIFEST_FILE",
    "MANIFEST_KIND",
    "ArrayRows",
    "ManifestError",
    "Rows",
    "ShardedRows",
    "TensorRows",
    "as_rows",
    "is_manifest",
    "open_manifest",
    "read_manifest",
    "shard_name",
    "shard_ranges",
]
