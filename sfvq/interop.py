"""Reading and writing other tools' files: the SFVQ paper's release, InterFaceGAN and GANSpace.

Formats (all plain ``.npy`` / ``.npz`` / text; pickled objects are refused):

* SFVQ paper curves: a folder of ``codebook_{b}bit.npy``, each (2**b, D) float32, corners in curve order.
  Imported as an :class:`~sfvq.quantizer.SFVQ` with those codebooks (marked as imported in
  ``metadata_["imported"]``); exported back the same way.
* SFVQ paper directions: a folder of ``<name>.npy`` unit vectors (D,) and a layer table
  (``StyleGAN2-FFHQ_Layers.txt``): free text lines, and one line per direction ``Name: Wa-Wb`` with an
  inclusive range of style layers. Table names are matched to file names ignoring case and
  non-alphanumerics (``Hair_Color`` -> ``hair_color.npy``, ``Makeup`` -> ``make_up.npy``).
* InterFaceGAN boundaries: ``.npy`` of shape (1, D), the unit normal of an attribute's hyperplane.
* GANSpace components: ``.npz`` with ``lat_comp`` (K, 1, D) unit components, ``lat_mean`` (1, D),
  ``lat_stdev`` (K,) (the data's std along each component in W; ones when GANSpace regressed them
  from another layer), as GANSpace's ``decomposition.py`` writes them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfvq.directions import Direction, DirectionSet

_CODEBOOK_RE = re.compile(r"^codebook_(\d+)bit\.npy$")
_TABLE_LINE_RE = re.compile(r"^\s*([A-Za-z0-9][\w .\-]*?)\s*:\s*[Ww]?(\d+)\s*(?:-\s*[Ww]?(\d+))?\s*$")
_TABLE_HEADER = (
    "Layers to modify for the interpretable directions (written by sfvq).\n"
    "Note that ranges are inclusive. For example, W2-W4 means to change layers of 2,3, and 4.\n"
    "\n"
)
UNIT_TOLERANCE = 1e-3


class InteropError(ValueError):
    """A foreign file with the wrong shape, dtype or content; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------- helpers
def _load_array(path: Path, what: str) -> np.ndarray:
    """A numeric array from a plain .npy (no pickles), with errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"no such {what} file: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InteropError(f"{path} is not a plain numeric .npy file ({e})") from e
    except OSError as e:
        raise InteropError(f"cannot read {path}: {e}") from e
    if not isinstance(a, np.ndarray):
        raise InteropError(f"{path} is an archive, not a single array (.npy) as a {what} should be")
    return _check_numeric(a, path, "array")


def _check_numeric(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    if a.dtype.kind not in "fiu":
        raise InteropError(f"{path}: {key} does not hold numbers (dtype {a.dtype})")
    if a.size and not np.isfinite(a).all():
        raise InteropError(f"{path}: {key} contains NaN or inf ({int((~np.isfinite(a)).sum())} entries)")
    return a


def _norm(name: str) -> str:
    """Table / file name key: lowercase letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _unit_vector(v: np.ndarray, path: Path) -> tuple[torch.Tensor, float | None]:
    """(D,) -> unit float32 tensor; vectors already of unit length (within 1e-3) are kept bit-exact.

    Returns the original length when the vector had to be normalised, else None.
    """
    n = float(np.linalg.norm(v.astype(np.float64)))
    if n == 0:
        raise InteropError(f"{path}: the direction is the zero vector")
    if abs(n - 1) <= UNIT_TOLERANCE:
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)), None
    return torch.from_numpy((v.astype(np.float64) / n).astype(np.float32)), n


def file_stem(name: str) -> str:
    """A direction name as a file stem: anything but letters, digits, ``_ . -`` becomes ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip(".")
    if not stem:
        raise InteropError(f"direction name {name!r} gives an empty file name")
    return stem


# ---------------------------------------------------------------------------------------------- curves
def import_codebooks(
    folder: str | os.PathLike, *, X: Any = None, network: str | None = None, space: Any = None
) -> Any:
    """A folder of ``codebook_{b}bit.npy`` -> a fitted :class:`SFVQ` marked as imported.

    Built by :meth:`SFVQ.from_codebooks`: without data the fitted-state fields say "unknown"
    (``n_samples_fit_ = 0``, NaN total variance and perplexity, an empty ``history_``, zero usage;
    ``metadata_["imported"]["stats_from_data"] = False``); with the data X (N, D), every bitrate is scored
    on it (MSE, usage, perplexity) as ``fit`` would. ``network`` and ``space`` (a LatentSpace) are
    recorded in ``metadata_`` as the run contract wants.
    """
    from sfvq.io import sha256_file
    from sfvq.quantizer import SFVQ, as_matrix, check_bits

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder of codebooks: {folder}")
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        m = _CODEBOOK_RE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise FileNotFoundError(f"{folder} holds no codebook_{{b}}bit.npy files")
    books: dict[int, np.ndarray] = {}
    D = None
    for b, p in sorted(found.items()):
        try:
            check_bits(b)
        except ValueError as e:
            raise InteropError(f"{p.name}: {e}") from e
        C = _load_array(p, "codebook")
        if C.ndim != 2 or C.shape[0] != 2**b:
            raise InteropError(f"{p}: expected shape ({2**b}, D) for a {b}-bit curve, got {C.shape}")
        if D is not None and C.shape[1] != D:
            raise InteropError(f"{p}: the codebooks disagree on the dimension ({C.shape[1]} vs {D})")
        D = C.shape[1]
        books[b] = np.ascontiguousarray(C, dtype=np.float32)  # (2**b, D)
    if X is not None:
        X = as_matrix(X)  # (N, D)
        if X.shape[1] != D:
            raise InteropError(f"the data is {X.shape[1]}-D but the codebooks are {D}-D")
    meta: dict[str, Any] = {
        "imported": {
            "format": "sfvq-paper-codebooks",
            "source": str(folder),
            "files": {str(b): {"name": p.name, "sha256": sha256_file(p)} for b, p in sorted(found.items())},
            "stats_from_data": X is not None,
        }
    }
    if network is not None:
        meta["network"] = str(network)
    if space is not None:
        meta["space"] = space.describe()
    # init="gaussian": the authors' script starts its curves from N(0, I) samples.
    return SFVQ.from_codebooks(books, X, metadata=meta, init="gaussian")


def export_codebooks(model: Any, folder: str | os.PathLike, bits: list[int] | None = None) -> list[Path]:
    """Write ``codebook_{b}bit.npy`` (float32, (2**b, D)) for every bitrate of ``model`` (or ``bits``)."""
    from sfvq.io import save_npy

    model._check_fitted()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = sorted(model.codebooks_) if bits is None else sorted(bits)
    out = []
    for b in chosen:
        if b not in model.codebooks_:
            raise ValueError(f"no {b}-bit codebook; the model has bits {sorted(model.codebooks_)}")
        C = model.codebooks_[b].detach().cpu().to(torch.float32).numpy()
        out.append(save_npy(folder / f"codebook_{b}bit.npy", C))
    return out


# ---------------------------------------------------------------------------------------------- directions
def parse_layer_table(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """The authors' layer table -> ``{name as written: (start, stop_exclusive)}`` in file order.

    Lines ``Name: Wa-Wb`` (or ``Name: Wa``) are entries; other lines are free text and skipped, except
    a line with ``:`` and a ``W<digit>`` that does not parse, which is an error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such layer table: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InteropError(f"{path} is not a text file ({e})") from e
    table: dict[str, tuple[int, int]] = {}
    keys: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _TABLE_LINE_RE.match(line)
        if not m:
            if ":" in line and re.search(r"\bW\d", line):
                raise InteropError(f"{path}:{lineno}: cannot read {line.strip()!r} (expected 'Name: Wa-Wb')")
            continue
        name, a = m.group(1), int(m.group(2))
        b = int(m.group(3)) if m.group(3) is not None else a
        if b < a:
            raise InteropError(f"{path}:{lineno}: range W{a}-W{b} of {name!r} is reversed")
        k = _norm(name)
        if k in keys:
            raise InteropError(f"{path}:{lineno}: {name!r} is listed twice (also as {keys[k]!r})")
        keys[k] = name
        table[name] = (a, b + 1)
    if not table:
        raise InteropError(f"{path} has no 'Name: Wa-Wb' lines: not a layer table")
    return table


def _find_table(folder: Path) -> Path | None:
    txt = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".txt" and p.is_file())
    if not txt:
        return None
    layered = [p for p in txt if "layer" in p.name.lower()]
    if len(layered) == 1:
        return layered[0]
    if len(txt) == 1:
        return txt[0]
    raise InteropError(
        f"{folder} holds several .txt files ({', '.join(p.name for p in txt)}); name the layer table"
    )


def load_paper_directions(
    folder: str | os.PathLike, layer_table: str | os.PathLike | None | bool = True
) -> DirectionSet:
    """A folder of ``<name>.npy`` unit vectors (+ layer table) -> DirectionSet (names = file stems).

    ``layer_table``: a path, True to find the folder's table (the one ``.txt``, or the one with "layer"
    in its name; none is fine), or False/None for no layer ranges. ``codebook_{b}bit.npy`` files are
    curves, not directions, and are skipped. Directions without a table entry get
    all layers; table entries without a file are listed in ``meta["unmatched_table_entries"]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder of directions: {folder}")
    # Curves exported into the same folder (codebook_{b}bit.npy) are not directions.
    files = sorted(
        p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file() and not _CODEBOOK_RE.match(p.name)
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no <name>.npy direction files")
    if layer_table is True:
        table_path = _find_table(folder)
    elif layer_table in (False, None):
        table_path = None
    else:
        table_path = Path(layer_table)
    table = parse_layer_table(table_path) if table_path is not None else {}
    by_key = {_norm(k): (k, v) for k, v in table.items()}
    dirs = []
    used: set[str] = set()
    D = None
    for p in files:
        a = _load_array(p, "direction")
        if a.ndim == 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 1:
            raise InteropError(f"{p}: expected a vector of shape (D,) or (1, D), got {a.shape}")
        if D is not None and a.shape[0] != D:
            raise InteropError(f"{p}: the directions disagree on the dimension ({a.shape[0]} vs {D})")
        D = a.shape[0]
        v, length = _unit_vector(a, p)
        entry = by_key.get(_norm(p.stem))
        layers = None
        if entry is not None:
            used.add(entry[0])
            layers = entry[1]
        dirs.append(
            Direction(
                name=p.stem,
                vector=v,
                source={"method": "paper", "file": p.name, **({"table_name": entry[0]} if entry else {})},
                layer_start=None if layers is None else layers[0],
                layer_stop=None if layers is None else layers[1],
                length=length,
            )
        )
    meta = {
        "imported": {
            "format": "sfvq-paper-directions",
            "source": str(folder),
            "layer_table": None if table_path is None else str(table_path),
        },
        "unmatched_table_entries": [k for k in table if k not in used],
    }
    return DirectionSet(dirs, dim=D, meta=meta)


def export_paper_directions(
    directions: DirectionSet,
    folder: str | os.PathLike,
    *,
    table_name: str = "Layers.txt",
    num_ws: int | None = None,
) -> list[Path]:
    """Write ``<name>.npy`` (D,) float32 per direction and an inclusive layer table ``table_name``.

    Names become file stems (characters other than letters, digits, ``_ . -`` turn into ``_``).
    Directions on all layers are written as ``W0-W{num_ws-1}`` when ``num_ws`` is given, else left
    out of the table (which the importer reads as all layers).
    """
    from sfvq.io import atomic_open, save_npy

    folder = Path(folder)
    stems: dict[str, str] = {}
    for d in directions:
        s = file_stem(d.name)
        if _norm(s) in {_norm(t) for t in stems.values()}:
            raise InteropError(f"directions {d.name!r} and another name map to the same file name {s!r}.npy")
        stems[d.name] = s
    if not table_name.endswith(".txt") or "/" in table_name or "\\" in table_name:
        raise ValueError(f"table_name must be a plain file name ending in .txt, got {table_name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    lines = []
    for d in directions:
        out.append(
            save_npy(folder / f"{stems[d.name]}.npy", d.vector.detach().cpu().to(torch.float32).numpy())
        )
        layers = d.layers if d.layers is not None else ((0, num_ws) if num_ws else None)
        if layers is not None:
            lines.append(f"{stems[d.name]}: W{layers[0]}-W{layers[1] - 1}")
    with atomic_open(folder / table_name, "w") as f:
        f.write(_TABLE_HEADER + "\n".join(lines) + ("\n" if lines else ""))
    out.append(folder / table_name)
    return out


def load_interfacegan_boundary(path: str | os.PathLike, name: str | None = None) -> DirectionSet:
    """An InterFaceGAN boundary ``.npy`` of shape (1, D) -> a one-direction DirectionSet."""
    path = Path(path)
    a = _load_array(path, "boundary")
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim != 1:
        raise InteropError(f"{path}: an InterFaceGAN boundary has shape (1, D), got {a.shape}")
    v, length = _unit_vector(a, path)
    d = Direction(
        name=name or path.stem, vector=v, source={"method": "interfacegan", "file": path.name}, length=length
    )
    return DirectionSet([d], meta={"imported": {"format": "interfacegan", "source": str(path)}})


def load_ganspace(path: str | os.PathLike, count: int | None = None, prefix: str = "pc") -> DirectionSet:
    """GANSpace components (``.npz`` with lat_comp, lat_mean, lat_stdev) -> DirectionSet ``pc0, pc1, ...``.

    ``std`` of each direction is GANSpace's ``lat_stdev``; ``meta["lat_mean"]`` keeps the mean (D,).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such GANSpace file: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InteropError(f"{path} is not a readable .npz archive of plain arrays ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InteropError(f"{path} is a single array, not a GANSpace .npz archive")
    try:
        missing = [k for k in ("lat_comp", "lat_mean", "lat_stdev") if k not in npz.files]
        if missing:
            raise InteropError(
                f"{path} is not a GANSpace component file: missing {', '.join(missing)} "
                f"(has {', '.join(npz.files) or 'nothing'})"
            )
        arrays = {k: _check_numeric(npz[k], path, k) for k in ("lat_comp", "lat_mean", "lat_stdev")}
        var_ratio = npz["var_ratio"] if "var_ratio" in npz.files else None
    except ValueError as e:  # an entry that is pickled or unreadable
        if isinstance(e, InteropError):
            raise
        raise InteropError(f"{path}: an entry is not a plain array ({e})") from e
    finally:
        npz.close()
    comp, mean, stdev = arrays["lat_comp"], arrays["lat_mean"], arrays["lat_stdev"]
    if comp.ndim == 3 and comp.shape[1] == 1:
        comp = comp[:, 0]
    if comp.ndim != 2:
        raise InteropError(f"{path}: lat_comp should be (K, 1, D) or (K, D), got {comp.shape}")
    K, D = comp.shape
    if mean.size != D:
        raise InteropError(f"{path}: lat_mean has {mean.size} entries, lat_comp is {D}-D")
    if stdev.shape != (K,):
        raise InteropError(f"{path}: lat_stdev should have shape ({K},), got {stdev.shape}")
    if count is not None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        K = min(K, count)
    dirs = []
    for j in range(K):
        v, length = _unit_vector(comp[j], path)
        src: dict[str, Any] = {"method": "ganspace", "component": j, "file": path.name}
        if var_ratio is not None and j < np.size(var_ratio):
            src["var_ratio"] = float(np.asarray(var_ratio).reshape(-1)[j])
        dirs.append(
            Direction(name=f"{prefix}{j}", vector=v, source=src, length=length, std=float(abs(stdev[j])))
        )
    meta = {
        "imported": {"format": "ganspace", "source": str(path)},
        "lat_mean": [float(x) for x in mean.reshape(-1)],
    }
    return DirectionSet(dirs, dim=D, meta=meta)


__all__ = [
    "InteropError",
    "export_codebooks",
    "export_paper_directions",
    "file_stem",
    "import_codebooks",
    "load_ganspace",
    "load_interfacegan_boundary",
    "load_paper_directions",
    "parse_layer_table",
]
