"""Directions from curve segments, named directions saved in a run, and edits along them.

A curve segment ``c_i -> c_{i+1}`` of a fitted SFVQ is a candidate interpretable direction (the paper's
"each line of the curve is a direction"); two or more consecutive segments give ``c_j - c_i``. This
module turns segments into a :class:`DirectionSet` (M unit vectors of dim D, each with metadata), reads
and writes such sets, resolves the specs users type (``"5:1"``, ``"4:10-9"``, or a saved name), keeps a
run's named directions (``<run>/directions.safetensors`` + ``directions.json``), and applies a direction
to a range of style layers.

File format (never pickle): ``<path>.safetensors`` holds one float32 tensor ``directions`` (M, D) and,
in its metadata under ``sfvq_directions``, the JSON description (format tag, dim, count, per-direction
metadata). The same JSON is written to the ``<path>.json`` sidecar afterwards for people and browser
tools; the safetensors file is the authoritative copy (each is replaced atomically, the tensors first).

Per-direction metadata: ``name``; ``source`` (e.g. ``{"method": "sfvq", "bits": 5, "segments": [1],
"corners": [1, 2]}``); ``layer_start`` / ``layer_stop`` (stop exclusive, None = all layers);
``length`` (the raw length ``||c_j - c_i||``); ``std`` (standard deviation of the data projected on the
unit vector, so that ``sigma`` can be given in data units); ``sign`` (+1 or -1, already applied to the
stored vector).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_NAME = "sfvq.directions"
FORMAT_VERSION = 1
META_KEY = "sfvq_directions"
TENSOR_KEY = "directions"
RUN_DIRECTIONS = "directions"  # <run>/directions.safetensors + <run>/directions.json

_SPEC_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
# Saved names: a letter or digit first, then letters, digits, '_', '-', '.', spaces; no ':' (specs use it),
# no path separators, at most 64 characters.
_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\- ]{0,63}\Z")


class DirectionFileError(ValueError):
    """A file that is not a readable sfvq directions file."""


class DirectionSpecError(ValueError):
    """A direction spec or name that does not resolve against a model or run."""


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Direction:
    """One direction: a vector (D,) (unit length unless it is a zero-length segment) and its metadata."""

    name: str
    vector: torch.Tensor  # (D,) float32, sign already applied
    source: dict[str, Any] = field(default_factory=dict)
    layer_start: int | None = None
    layer_stop: int | None = None  # exclusive
    length: float | None = None
    std: float | None = None
    sign: int = 1

    @property
    def layers(self) -> tuple[int, int] | None:
        """``(start, stop_exclusive)`` or None for all layers."""
        if self.layer_start is None:
            return None
        return int(self.layer_start), int(self.layer_stop)

    def info(self) -> dict[str, Any]:
        """The JSON-friendly metadata (everything but the vector)."""
        return {
            "name": self.name,
            "source": self.source,
            "layer_start": self.layer_start,
            "layer_stop": self.layer_stop,
            "length": self.length,
            "std": self.std,
            "sign": self.sign,
        }


def _check_info(d: Direction, where: str = "") -> None:
    """Shared validation of one direction's metadata (on construction and on load)."""
    at = f"{where}direction {d.name!r}: "
    if not isinstance(d.name, str) or not d.name.strip():
        raise ValueError(f"{where}a direction needs a non-empty name, got {d.name!r}")
    if d.sign not in (1, -1):
        raise ValueError(f"{at}sign must be +1 or -1, got {d.sign!r}")
    if (d.layer_start is None) != (d.layer_stop is None):
        raise ValueError(f"{at}layer_start and layer_stop must both be set or both be None")
    if d.layer_start is not None:
        a, b = d.layer_start, d.layer_stop
        if not (isinstance(a, int) and isinstance(b, int)) or not 0 <= a < b:
            raise ValueError(f"{at}layer range [{a}, {b}) must satisfy 0 <= start < stop")
    for key in ("length", "std"):
        v = getattr(d, key)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{at}{key} must be a finite non-negative number or None, got {v!r}")
    if not isinstance(d.source, dict):
        raise ValueError(f"{at}source must be a dict, got {type(d.source).__name__}")


class DirectionSet:
    """An ordered set of M named directions of dimension D (unique names), plus set-level ``meta``."""

    def __init__(
        self, directions: Sequence[Direction] = (), *, dim: int | None = None, meta: dict | None = None
    ):
        dirs = list(directions)
        if dim is None:
            if not dirs:
                raise ValueError("an empty DirectionSet needs its dim")
            dim = int(dirs[0].vector.numel())
        self.dim = int(dim)
        self.meta: dict[str, Any] = dict(meta or {})
        self._dirs: list[Direction] = []
        for d in dirs:
            self.add(d)

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self._dirs)

    def __iter__(self) -> Iterator[Direction]:
        return iter(self._dirs)

    def __contains__(self, name: object) -> bool:
        return any(d.name == name for d in self._dirs)

    def __getitem__(self, key: int | str) -> Direction:
        if isinstance(key, str):
            for d in self._dirs:
                if d.name == key:
                    return d
            raise KeyError(f"no direction named {key!r}; names: {', '.join(self.names) or '(none)'}")
        return self._dirs[key]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self._dirs]

    @property
    def vectors(self) -> torch.Tensor:
        """All vectors stacked, (M, D) float32."""
        if not self._dirs:
            return torch.zeros(0, self.dim)
        return torch.stack([d.vector for d in self._dirs])

    def add(self, d: Direction, *, overwrite: bool = False) -> None:
        """Append ``d`` (or replace the direction of the same name when ``overwrite``)."""
        v = torch.as_tensor(d.vector).detach().to("cpu", torch.float32).reshape(-1)  # (D,)
        if v.numel() != self.dim:
            raise ValueError(
                f"direction {d.name!r} has {v.numel()} entries, this set holds {self.dim}-D ones"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"direction {d.name!r} contains NaN or inf")
        d.vector = v
        _check_info(d)
        for i, old in enumerate(self._dirs):
            if old.name == d.name:
                if not overwrite:
                    raise ValueError(f"a direction named {d.name!r} already exists in this set")
                self._dirs[i] = d
                return
        self._dirs.append(d)

    def remove(self, name: str) -> Direction:
        """Remove and return the direction called ``name``."""
        d = self[name]
        self._dirs.remove(d)
        return d

    def rows(self, num_ws: int | None = None) -> list[dict[str, Any]]:
        """One dict a direction for tables and JSON: name, bits, segment, layers (inclusive text), length,
        std, sign, source. ``num_ws`` turns "all layers" into the explicit range."""
        out = []
        for d in self._dirs:
            src = d.source or {}
            out.append(
                {
                    "name": d.name,
                    "bits": src.get("bits"),
                    "segment": segment_label(src),
                    "layers": layers_text(d.layers, num_ws),
                    "layer_start": d.layer_start,
                    "layer_stop": d.layer_stop,
                    "length": d.length,
                    "std": d.std,
                    "sign": d.sign,
                    "source": src,
                }
            )
        return out

    def describe(self) -> dict[str, Any]:
        """The JSON description written to the file's metadata and sidecar."""
        from sfvq._version import __version__

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sfvq_version": __version__,
            "dim": self.dim,
            "count": len(self),
            "meta": self.meta,
            "directions": [d.info() for d in self._dirs],
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.safetensors`` (+ ``<path>.json``) atomically; returns the safetensors path."""
        from safetensors.torch import save_file

        from sfvq.io import atomic_path, to_json_text, write_json

        tensor_path, sidecar = direction_paths(path)
        desc = self.describe()
        text = to_json_text(desc)  # fails on unserialisable metadata before anything is written
        with atomic_path(tensor_path) as tmp:
            save_file({TENSOR_KEY: self.vectors.contiguous()}, str(tmp), metadata={META_KEY: text})
        write_json(sidecar, {**desc, "file": tensor_path.name})
        return tensor_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DirectionSet:
        """Read a set written by :meth:`save`; errors say why a file is not one."""
        from sfvq.io import read_safetensors_with_meta

        tensor_path, _ = direction_paths(path)
        tensors, desc = read_safetensors_with_meta(
            tensor_path, kind="directions", meta_key=META_KEY, error=DirectionFileError
        )
        tensor = tensors.get(TENSOR_KEY)
        if desc.get("format") != FORMAT_NAME:
            raise DirectionFileError(f"{tensor_path}: unknown format, expected {FORMAT_NAME!r}")
        if desc.get("format_version", 0) > FORMAT_VERSION:
            raise DirectionFileError(
                f"{tensor_path} was written by a newer sfvq (format {desc['format_version']}); upgrade sfvq"
            )
        infos = desc.get("directions")
        dim = desc.get("dim")
        if tensor is None or not isinstance(infos, list) or not isinstance(dim, int):
            raise DirectionFileError(
                f"{tensor_path}: incomplete directions file (tensor or metadata missing)"
            )
        if tensor.ndim != 2 or tensor.shape != (len(infos), dim):
            raise DirectionFileError(
                f"{tensor_path}: tensor {TENSOR_KEY!r} has shape {tuple(tensor.shape)}, "
                f"the metadata describes ({len(infos)}, {dim})"
            )
        out = cls(dim=dim, meta=desc.get("meta") or {})
        try:
            for info, v in zip(infos, tensor, strict=True):
                out.add(
                    Direction(
                        name=info["name"],
                        vector=v.clone(),
                        source=info.get("source") or {},
                        layer_start=info.get("layer_start"),
                        layer_stop=info.get("layer_stop"),
                        length=info.get("length"),
                        std=info.get("std"),
                        sign=info.get("sign", 1),
                    )
                )
        except (KeyError, TypeError, ValueError) as e:
            raise DirectionFileError(f"{tensor_path}: bad direction entry ({e})") from e
        return out

    def __repr__(self) -> str:
        more = "..." if len(self) > 6 else ""
        return f"DirectionSet({len(self)} x {self.dim}: {', '.join(self.names[:6])}{more})"


def direction_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``x``, ``x.safetensors`` or ``x.json`` -> (``x.safetensors``, ``x.json``)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


# ---------------------------------------------------------------------------------------------- text
def segment_label(source: dict[str, Any]) -> str:
    """``"1"`` for one segment, ``"3-5"`` for c5 - c3, ``""`` for directions not from a curve."""
    corners = source.get("corners")
    if source.get("method") != "sfvq" or not corners:
        return ""
    i, j = corners
    return str(i) if j == i + 1 else f"{i}-{j}"


def layers_text(layers: tuple[int, int] | None, num_ws: int | None = None) -> str:
    """(start, stop_exclusive) -> the inclusive text users type (``"4-7"``); None -> all layers."""
    if layers is None:
        return "all" if num_ws is None or num_ws <= 1 else f"0-{num_ws - 1}"
    a, b = layers
    return str(a) if b == a + 1 else f"{a}-{b - 1}"


def check_name(name: Any) -> str:
    """A name to save a direction under: refuse empty, path-like and spec-like names."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a direction name must be a non-empty string")
    if name != name.strip():
        raise ValueError(f"direction name {name!r} has leading or trailing spaces")
    if any(c in name for c in "/\\") or name in (".", "..") or name.startswith((".", "~")):
        raise ValueError(f"direction name {name!r} looks like a path; use letters, digits, '_', '-', '.'")
    if ":" in name:
        raise ValueError(f"direction name {name!r} contains ':', which is kept for segment specs (b:i)")
    if not _NAME_RE.match(name):
        raise ValueError(
            f"direction name {name!r} is not allowed: start with a letter or digit, then use letters, "
            "digits, '_', '-', '.', spaces (64 characters at most)"
        )
    return name


def check_layers(layers: tuple[int, int] | None, num_ws: int | None, what: str = "layer range") -> None:
    """Raise a ValueError when ``layers`` (start, stop_exclusive) does not fit a space with ``num_ws``."""
    if layers is None:
        return
    a, b = layers
    if not 0 <= a < b:
        raise ValueError(f"{what} [{a}, {b}) is empty or negative")
    if num_ws is None:
        return
    if num_ws <= 1:
        raise ValueError(
            f"{what} {layers_text(layers)} given, but this space has no style layers (num_ws = 1); "
            "layer ranges apply to StyleGAN's W+"
        )
    if b > num_ws:
        raise ValueError(f"{what} {layers_text(layers)} is outside this space's layers 0-{num_ws - 1}")


# ---------------------------------------------------------------------------------------------- data stats
def data_covariance(X: Any, chunk: int = 8192) -> torch.Tensor | None:
    """Covariance (D, D) float64 of rows of X (N, D), streamed in chunks (X may be a memory map)."""
    if X is None:
        return None
    N = X.shape[0]
    if N < 2:
        return None
    s = None
    ss = None
    for i in range(0, N, chunk):
        x = torch.from_numpy(np.array(X[i : i + chunk], dtype=np.float64))  # (n, D) copy: X may be read-only
        s = x.sum(0) if s is None else s + x.sum(0)
        ss = x.T @ x if ss is None else ss + x.T @ x
    mean = s / N
    return (ss - N * torch.outer(mean, mean)) / N  # population covariance (D, D)


def std_along(vectors: torch.Tensor, cov: torch.Tensor | None) -> list[float | None]:
    """Standard deviation of the data along each unit vector (M, D): ``sqrt(u^T cov u)``."""
    if cov is None:
        return [None] * vectors.shape[0]
    u = vectors.to(torch.float64)  # (M, D)
    var = ((u @ cov) * u).sum(1).clamp_min(0)  # (M,)
    return [float(v) for v in var.sqrt()]


# ---------------------------------------------------------------------------------------------- segments
def _codebook(model: Any, bits: int) -> torch.Tensor:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise DirectionSpecError(f"bits must be an integer, got {bits!r}")
    books = model.codebooks_
    if int(bits) not in books:
        have = sorted(books)
        raise DirectionSpecError(
            f"no {bits}-bit curve in this model; it has bits {have[0]}-{have[-1]}"
            if have == list(range(have[0], have[-1] + 1))
            else f"no {bits}-bit curve in this model; it has bits {have}"
        )
    return books[int(bits)].detach().to("cpu", torch.float64)  # (K, D)


def _unit(raw: torch.Tensor) -> tuple[torch.Tensor, float]:
    n = float(raw.norm())
    return (raw / n if n > 0 else torch.zeros_like(raw)).to(torch.float32), n


def segment_directions(model: Any, bits: int, X: Any = None) -> DirectionSet:
    """The directions of all segments of one bitrate: ``(c_{i+1} - c_i) / ||c_{i+1} - c_i||`` -> M = K-1.

    Names are the specs users type (``"5:0"``, ``"5:1"``, ...). With the data X (N, D), each direction
    also gets the std of X along it (else ``std`` is None). A zero-length segment gets a zero vector.
    """
    C = _codebook(model, bits)  # (K, D)
    raw = C[1:] - C[:-1]  # (S, D)
    lengths = raw.norm(dim=1)  # (S,)
    units = torch.where(lengths[:, None] > 0, raw / lengths.clamp_min(1e-300)[:, None], torch.zeros_like(raw))
    units = units.to(torch.float32)
    stds = std_along(units, data_covariance(X))
    dirs = [
        Direction(
            name=f"{bits}:{i}",
            vector=units[i],
            source={"method": "sfvq", "bits": int(bits), "segments": [i], "corners": [i, i + 1]},
            length=float(lengths[i]),
            std=stds[i],
        )
        for i in range(raw.shape[0])
    ]
    return DirectionSet(dirs, dim=C.shape[1], meta={"bits": int(bits)})


def parse_spec(spec: str) -> tuple[int, int, int] | None:
    """``"b:i"`` -> (b, i, i+1); ``"b:i-j"`` -> (b, i, j) for ``c_j - c_i``; anything else -> None."""
    m = _SPEC_RE.match(str(spec))
    if not m:
        return None
    b, i = int(m.group(1)), int(m.group(2))
    j = int(m.group(3)) if m.group(3) is not None else None
    if j is None:
        return b, i, i + 1
    return b, i, j


def spec_direction(model: Any, spec: str, X: Any = None) -> Direction:
    """The direction a segment spec names: ``"b:i"`` is segment i at b bits (``c_{i+1} - c_i``),
    ``"b:i-j"`` is ``c_j - c_i`` (several segments, or the reverse of one when j = i - 1)."""
    parsed = parse_spec(spec)
    if parsed is None:
        raise DirectionSpecError(f"{spec!r} is not a segment spec (b:i or b:i-j, e.g. 5:1 or 6:3-5)")
    b, i, j = parsed
    C = _codebook(model, b)  # (K, D)
    K = C.shape[0]
    single = _SPEC_RE.match(str(spec)).group(3) is None
    if single and not 0 <= i <= K - 2:
        raise DirectionSpecError(f"segment {i} is out of range: the {b}-bit curve has segments 0-{K - 2}")
    for c in (i, j):
        if not 0 <= c <= K - 1:
            raise DirectionSpecError(f"corner {c} is out of range: the {b}-bit curve has corners 0-{K - 1}")
    if i == j:
        raise DirectionSpecError(f"{spec!r} is empty: the two corners must differ")
    unit, length = _unit(C[j] - C[i])  # (D,)
    if length == 0:
        raise DirectionSpecError(f"{spec!r} has zero length (corners {i} and {j} coincide): no direction")
    name = f"{b}:{i}" if single else f"{b}:{i}-{j}"
    segments = [i] if single else [i, j]
    return Direction(
        name=name,
        vector=unit,
        source={"method": "sfvq", "bits": b, "segments": segments, "corners": [i, j]},
        length=length,
        std=std_along(unit[None], data_covariance(X))[0],
    )


# ---------------------------------------------------------------------------------------------- runs
def run_directions_path(run_dir: str | os.PathLike) -> Path:
    """``<run>/directions.safetensors``."""
    return direction_paths(Path(run_dir) / RUN_DIRECTIONS)[0]


def load_run_directions(run_dir: str | os.PathLike) -> DirectionSet | None:
    """The named directions saved in a run, or None when it has none yet."""
    path = run_directions_path(run_dir)
    return DirectionSet.load(path) if path.exists() else None


def run_num_ws(run_dir: str | os.PathLike | None, model: Any = None) -> int | None:
    """Style layers of the run's space (``<run>/space.json``, else the model's metadata); None if unknown."""
    if run_dir is not None:
        p = Path(run_dir) / "space.json"
        if p.is_file():
            try:
                n = json.loads(p.read_text(encoding="utf-8")).get("num_ws")
                if isinstance(n, int):
                    return n
            except json.JSONDecodeError:
                pass
    space = (getattr(model, "metadata_", None) or {}).get("space") or {}
    n = space.get("num_ws") if isinstance(space, dict) else None
    return n if isinstance(n, int) else None


def run_latents(run_dir: str | os.PathLike | None, model: Any = None) -> np.ndarray | None:
    """The latents a curve was fitted to, memory-mapped: ``<run>/latents.npy``, else the path recorded in
    the model's ``metadata_["data"]["path"]``; only when their dim matches the model. None otherwise."""
    candidates = []
    if run_dir is not None:
        candidates.append(Path(run_dir) / "latents.npy")
    data = (getattr(model, "metadata_", None) or {}).get("data") or {}
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        candidates.append(Path(data["path"]))
    D = getattr(model, "n_features_in_", None)
    for p in candidates:
        if p.is_file():
            try:
                X = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError):
                continue
            if X.ndim == 2 and X.shape[0] > 1 and (D is None or X.shape[1] == D):
                return X
    return None


def resolve_direction(
    spec: str, model: Any, run_dir: str | os.PathLike | None = None, X: Any = None
) -> Direction:
    """A segment spec (``"b:i"``, ``"b:i-j"``) or a name saved in ``<run>/directions.*`` -> Direction."""
    if parse_spec(spec) is not None:
        return spec_direction(model, spec, X)
    saved = load_run_directions(run_dir) if run_dir is not None else None
    if saved is not None and spec in saved:
        d = saved[spec]
        if d.vector.numel() != model.n_features_in_:
            raise DirectionSpecError(
                f"saved direction {spec!r} is {d.vector.numel()}-D but the model is {model.n_features_in_}-D"
            )
        return d
    where = f" in {run_directions_path(run_dir)}" if run_dir is not None else ""
    names = ", ".join(saved.names) if saved is not None and len(saved) else "(none)"
    raise DirectionSpecError(
        f"unknown direction {spec!r}: not a segment spec (b:i or b:i-j) and not a saved name{where} "
        f"(saved: {names})"
    )


def save_named_direction(
    run_dir: str | os.PathLike,
    name: str,
    spec: str,
    layers: tuple[int, int] | None,
    model: Any,
    sign: int = 1,
    *,
    overwrite: bool = False,
    X: Any = None,
) -> Direction:
    """Resolve ``spec`` against ``model``, give it ``name``, ``sign`` and a layer range (start,
    stop_exclusive; None = all layers), and add it to ``<run>/directions.*``. Returns the saved direction.

    The layer range is checked against the run's space (space.json or the model's metadata) when known.
    The std along the direction comes from ``X`` or, when not given, from the run's latents.
    """
    check_name(name)
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    run_dir = Path(run_dir)
    num_ws = run_num_ws(run_dir, model)
    check_layers(layers, num_ws)
    if X is None:
        X = run_latents(run_dir, model)
    d = resolve_direction(spec, model, run_dir, X)
    saved = load_run_directions(run_dir)
    if saved is None:
        saved = DirectionSet(dim=model.n_features_in_, meta={"num_ws": num_ws})
    if name in saved and not overwrite:
        raise ValueError(f"a direction named {name!r} is already saved in {run_directions_path(run_dir)}")
    out = Direction(
        name=name,
        vector=d.vector * sign,  # d.vector already carries d.sign
        source={**d.source, "spec": spec} if d.source.get("method") == "sfvq" else dict(d.source),
        layer_start=None if layers is None else int(layers[0]),
        layer_stop=None if layers is None else int(layers[1]),
        length=d.length,
        std=d.std,
        sign=sign * d.sign,
    )
    saved.add(out, overwrite=overwrite)
    saved.save(run_dir / RUN_DIRECTIONS)
    return out


# ---------------------------------------------------------------------------------------------- edits
def edit_full(
    space: Any,
    full: torch.Tensor,
    direction: torch.Tensor,
    sigmas: Sequence[float],
    layers: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Apply ``full[:, a:b] + sigma * d`` for each sigma: full (N, L, F) -> (len(sigmas), N, L, F).

    ``direction`` is in the space (dim,); the space lifts it (e.g. through its PCA). Layers outside
    [a, b) are copied unchanged; sigma 0 returns ``full`` exactly.
    """
    return torch.stack([space.edit(full, direction, float(s), layers) for s in sigmas])


# Edit strengths chosen from the data (see :func:`data_sigmas`).
SIGMA_QUANTILE = 0.99  # the share of the data along a direction that the largest default step stays within
SIGMA_STEPS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # default columns, as fractions of the chosen largest step
SIGMA_MAX_ROWS = 50_000  # rows of the data read to choose (an evenly spaced subset of larger data)


@dataclass(frozen=True)
class SigmaChoice:
    """Edit strengths chosen from the data by :func:`data_sigmas` (sigmas in stds along a direction).

    ``limit``: the largest step (the median of ``per_direction``, rounded down to 0.1); ``per_direction``:
    each direction's own limit (None for a zero vector or no spread); ``quantile``: the share of the
    data the step stays within; ``sigmas``: the default columns (``SIGMA_STEPS`` times ``limit``).
    """

    limit: float
    per_direction: list[float | None]
    quantile: float
    sigmas: tuple[float, ...]

    def describe(self) -> str:
        """One sentence saying how the sigmas were chosen (for the report and options.json)."""
        return (
            f"chosen from the data: a seed at the data's mean moved by the largest step, {self.limit:g} std, "
            f"stays within the central {100 * self.quantile:g} % of the sampled latents along the direction "
            f"(the {100 * self.quantile:g}th percentile of |projection - mean| / std, median over "
            f"{sum(v is not None for v in self.per_direction)} directions)"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (options.json, summary.json)."""
        return {
            "rule": "data",
            "quantile": self.quantile,
            "limit": self.limit,
            "per_direction": self.per_direction,
            "sigmas": list(self.sigmas),
        }


def data_sigmas(
    X: Any,
    directions: torch.Tensor | np.ndarray,
    quantile: float = SIGMA_QUANTILE,
    steps: Sequence[float] = SIGMA_STEPS,
    max_rows: int = SIGMA_MAX_ROWS,
) -> SigmaChoice:
    """Default edit strengths, in stds of the data along each direction, that keep edits on the data.

    Large steps along a direction leave the generator's manifold (on a trained StyleGAN2, +-6 std along a
    segment did), so the default is chosen from the sampled latents X (N, D) instead of fixed. For each
    direction u (M, D) (normalised here), with the projections p = X u (N,), their mean m and std s:

        limit_u = quantile_q(|p - m|) / s      (numpy's linear interpolation)

    i.e. the step, in stds, that moves a seed at the data's mean to the edge of the central ``quantile``
    of the data along u (for Gaussian data and q = 0.99: 2.58). The returned ``limit`` is the median of
    limit_u over the directions (one scale for all columns of a run's edit grids), rounded down to 0.1;
    ``sigmas`` are ``steps`` times it. Zero vectors and directions without spread are skipped. X may be
    a memory map; more than ``max_rows`` rows are thinned to an evenly spaced subset.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    U = torch.as_tensor(np.asarray(directions) if not isinstance(directions, torch.Tensor) else directions)
    U = U.detach().to("cpu", torch.float64)
    U = U.reshape(1, -1) if U.ndim == 1 else U  # (M, D)
    N = int(X.shape[0])
    if N < 2:
        raise ValueError(f"choosing sigmas from the data needs at least 2 latents, got {N}")
    if X.shape[1] != U.shape[1]:
        raise ValueError(f"directions are {U.shape[1]}-D but the latents are {X.shape[1]}-D")
    rows = np.asarray(X[:: max(1, -(-N // max_rows))], dtype=np.float64)  # (n, D)
    norms = U.norm(dim=1)  # (M,)
    units = U / norms.clamp_min(1e-300)[:, None]  # (M, D)
    p = torch.from_numpy(rows) @ units.T  # (n, M)
    dev = (p - p.mean(0)).abs()  # (n, M)
    std = p.std(0, unbiased=False)  # (M,)
    q = np.quantile(dev.numpy(), quantile, axis=0)  # (M,)
    per: list[float | None] = [
        float(q[i] / std[i]) if norms[i] > 0 and std[i] > 1e-12 * max(1.0, float(dev[:, i].max())) else None
        for i in range(U.shape[0])
    ]
    valid = [v for v in per if v is not None]
    if not valid:
        raise ValueError("no direction has any spread of the data along it: cannot choose sigmas")
    limit = math.floor(float(np.median(valid)) * 10 + 1e-9) / 10  # rounded down to 0.1
    limit = max(limit, 0.1)
    sigmas = tuple(round(float(s) * limit, 6) + 0.0 for s in steps)  # + 0.0: no "-0"
    return SigmaChoice(limit=limit, per_direction=per, quantile=float(quantile), sigmas=sigmas)


def nearest_segment(model: Any, vector: Any, bits: Sequence[int] | None = None) -> dict[str, Any]:
    """The segment of ``model`` (over ``bits``, default all bitrates) most parallel to ``vector`` (D,).

    Returns ``{"bits", "segment", "cosine"}``; the cosine is signed (-1: the vector is ``c_i - c_{i+1}``).
    Zero-length segments are skipped.
    """
    v = torch.as_tensor(np.asarray(vector) if not isinstance(vector, torch.Tensor) else vector)
    v = v.detach().to("cpu", torch.float64).reshape(-1)  # (D,)
    if v.numel() != model.n_features_in_:
        raise ValueError(f"the vector has {v.numel()} entries, the model is {model.n_features_in_}-D")
    v = v / v.norm().clamp_min(1e-300)
    best: dict[str, Any] = {"bits": None, "segment": None, "cosine": 0.0}
    for b in sorted(model.codebooks_) if bits is None else bits:
        C = _codebook(model, b)  # (K, D)
        d = C[1:] - C[:-1]  # (S, D)
        n = d.norm(dim=1)  # (S,)
        ok = n > 0
        cos = torch.where(ok, (d @ v) / n.clamp_min(1e-300), torch.zeros_like(n))  # (S,)
        i = int(cos.abs().argmax())
        if abs(float(cos[i])) > abs(best["cosine"]):
            best = {"bits": int(b), "segment": i, "cosine": float(cos[i])}
    return best


__all__ = [
    "SIGMA_QUANTILE",
    "SIGMA_STEPS",
    "Direction",
    "DirectionFileError",
    "DirectionSet",
    "DirectionSpecError",
    "check_layers",
    "check_name",
    "data_covariance",
    "data_sigmas",
    "direction_paths",
    "edit_full",
    "layers_text",
    "load_run_directions",
    "nearest_segment",
    "parse_spec",
    "resolve_direction",
    "run_directions_path",
    "run_latents",
    "run_num_ws",
    "save_named_direction",
    "segment_directions",
    "segment_label",
    "SigmaChoice",
    "spec_direction",
    "std_along",
]
