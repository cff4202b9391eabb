"""Files a run writes, written atomically: a reader never sees a half-written file under its final name.

Every writer goes to a hidden temporary name in the destination directory (``.NAME.PID.XXXXXXXX.tmp``),
fsyncs it and ``os.replace``s it into place only when complete; on any error (KeyboardInterrupt included)
the temporary file is removed, and one a killed process left is removed by
:func:`sfvq.atomic.clean_stale`. A whole run is published at once by :func:`sfvq.runs.staged_run`.
The one reader of safetensors files with a JSON description (:func:`read_safetensors_with_meta`) is here
too, so that every format (models, direction sets, exported generators, classifiers) fails the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from sfvq._version import __version__
from sfvq.atomic import atomic_path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; it becomes ``path`` when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:  # fsyncs the file before renaming it
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as f:
            yield f


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


def write_options(
    outdir: str | Path, command: str, options: Mapping[str, Any], *, run_id: str | None = None
) -> Path:
    """Write ``outdir/options.json``: the command, its resolved options and the sfvq version, and the id
    of the run it belongs to (see :mod:`sfvq.runs`) when given."""
    data: dict[str, Any] = {"command": command, "version": __version__, "options": dict(options)}
    if run_id is not None:
        data["run_id"] = run_id
    return write_json(Path(outdir) / "options.json", data)


# The metadata keys of sfvq's own safetensors formats, to name a file that is one of them but not the one
# a reader expected (a model passed where directions are wanted, say).
_KNOWN_META_KEYS = {"sfvq": "an sfvq model", "sfvq_directions": "an sfvq directions file"}


def read_safetensors_with_meta(
    path: str | Path,
    *,
    kind: str,
    meta_key: str | None = None,
    error: type[Exception] = ValueError,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read every tensor of a safetensors file (on the CPU) and the JSON object that describes it.

    The description is the JSON text stored under ``meta_key`` in the file's own metadata or, without
    ``meta_key``, the JSON sidecar beside it (``x.safetensors`` -> ``x.json``). ``kind`` names the format
    in messages ("model" -> "no such model file", "not an sfvq model file"). A missing file raises
    FileNotFoundError; everything else that makes the file unreadable (a directory, a truncated or
    foreign file, a missing metadata key or sidecar, JSON that does not parse or is not an object)
    raises ``error`` saying which. Checking the description's content is left to the caller.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    what = f"an sfvq {kind} file"
    if not path.exists():
        raise FileNotFoundError(f"no such {kind} file: {path}")
    if path.is_dir():
        raise error(f"{path} is a directory, not {what}")
    side = sidecar_path(path)
    if meta_key is None and not side.is_file():
        raise error(f"{path} has no JSON sidecar {side.name}: incomplete, or not {what}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"{path} is not {what} (not a readable safetensors file: {e})") from e
    if meta_key is None:
        where, source = side, f"{side} is not valid JSON"
        try:
            text = side.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise error(f"cannot read {side} ({e})") from e
    else:
        if meta_key not in header:
            found = next((v for k, v in _KNOWN_META_KEYS.items() if k in header), "a safetensors file")
            raise error(f"{path} is {found}, not {what} (no {meta_key!r} metadata)")
        where, source = path, f"{path}: the {meta_key!r} metadata is not valid JSON"
        text = header[meta_key]
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{source} ({e})") from e
    if not isinstance(meta, dict):
        raise error(f"{where}: the description of {what} must be a JSON object, got {type(meta).__name__}")
    return tensors, meta
