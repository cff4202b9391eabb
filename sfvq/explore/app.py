"""The web app behind ``sfvq explore``: a local page to walk a run's curve, pick segments and use them.

One :class:`Explorer` holds a run directory with its model, latent space and generator, loaded once;
every render happens in this process under one lock (torch is not re-entrant here). :func:`create_app`
wraps it in a Starlette app: the page and its assets from ``static/`` (nothing from a CDN) and a JSON/PNG
API under ``/api``:

==========================================  ===============================================================
``GET  /api/info``                           run, network, space, bitrates, corners, layers, limits
``GET  /api/image?bits=b&t=x``               PNG of the curve point at fractional index t in [0, K-1]
``GET  /api/corner?bits=b&index=i``          PNG of corner i (all corners of a bitrate rendered once, cached)
``GET  /api/map?bits=b``                     the panoptic map of a bitrate: labelled grid PNG (cached)
``GET  /api/segments?bits=b``                every segment's length, std of the data along it and usage
``GET  /api/edit?bits&segment&seeds&sigma[&layers]``  PNG grid: rows = seeds, columns = -sigma, 0, +sigma
``GET  /api/directions``                     the run's saved directions
``POST /api/directions``                     save segment ``bits:segment`` under a name, with a layer range
``GET  /api/augment``                        finished augmentation batches in ``<run>/augment/``
``POST /api/augment``                        write a batch along a segment into ``<run>/augment/<name>/``
``GET  /api/augment/<name>/<file>``          one file of a batch (preview.png, labels.csv, images/...)
==========================================  ===============================================================

Safety: every parameter is checked (type, bounds, a strict name pattern; unknown or repeated parameters
are refused) and a bad request gets a 4xx JSON ``{"error": ..., "param": ...}``. Files are read and
written only inside the run directory: names never become paths unchecked, and every path is resolved
(symlinks included) and must lie inside the resolved run directory. POSTs need a JSON content type (a
cross-site form cannot send one without a CORS preflight, which this server never grants), and requests
whose Host header is not the bound host are refused (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sfvq.generators.base import to_uint8
from sfvq.io import labelled_grid, write_options

MODEL_FILE = "model.safetensors"
AUGMENT_DIR = "augment"
STATIC_DIR = Path(__file__).resolve().parent / "static"

MAX_SEEDS = 8  # seeds in one edit grid
SIGMA_MAX = 20.0  # |sigma| of an edit (in data std along the direction, or raw units without latents)
AUGMENT_MAX = 256  # images in one augmentation batch
JITTER_MAX = 2.0
SEED_MAX = 2**32 - 1
BODY_MAX = 4096  # bytes of a POST body

# Names that become file or folder names (augmentation batches) or keys in the directions file: a letter
# or digit, then letters, digits, '_' or '-' (no dots, no spaces, no separators), 64 characters at most.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_INT_RE = re.compile(r"^[+-]?\d{1,12}$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_AUGMENT_FILE_RE = re.compile(r"^(preview\.png|labels\.csv|latents\.json|options\.json|images/\d{6,9}\.png)$")
_MEDIA = {".png": "image/png", ".csv": "text/csv; charset=utf-8", ".json": "application/json"}


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, a message for people and the parameter at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "param": self.param}


# ---------------------------------------------------------------------------------------------- parsing
def parse_int(text: Any, param: str, lo: int, hi: int, *, json: bool = False) -> int:
    """A decimal integer in [lo, hi], else a 400 naming ``param``: text from a query, or (``json``) a
    JSON integer (not a bool, not a string)."""
    if isinstance(text, bool) or not isinstance(text, (int,) if json else (str, int)):
        raise ApiError(400, f"{param} must be an integer, got {type(text).__name__}", param)
    if isinstance(text, str):
        if not _INT_RE.match(text):
            raise ApiError(400, f"{param} must be an integer, got {text[:40]!r}", param)
        text = int(text)
    if not lo <= text <= hi:
        raise ApiError(400, f"{param} must lie in [{lo}, {hi}], got {text}", param)
    return int(text)


def parse_float(text: Any, param: str, lo: float, hi: float, *, json: bool = False) -> float:
    """A finite number in [lo, hi], else a 400 naming ``param``: text from a query, or (``json``) a JSON
    number (not a bool, not a string)."""
    if isinstance(text, bool) or not isinstance(text, (int, float) if json else (str, int, float)):
        raise ApiError(400, f"{param} must be a number, got {type(text).__name__}", param)
    if isinstance(text, str):
        if not _FLOAT_RE.match(text.strip()):
            raise ApiError(400, f"{param} must be a decimal number, got {text[:40]!r}", param)
        text = float(text)
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, f"{param} must be a finite number, got {value}", param)
    if not lo <= value <= hi:
        raise ApiError(400, f"{param} must lie in [{lo:g}, {hi:g}], got {value:g}", param)
    return value


def parse_name(text: Any, param: str = "name") -> str:
    """A name matching :data:`NAME_RE` (it may become a folder name), else a 400."""
    if not isinstance(text, str):
        raise ApiError(400, f"{param} must be a string, got {type(text).__name__}", param)
    if not NAME_RE.match(text):
        raise ApiError(
            400,
            f"{param} {text[:70]!r} is not allowed: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit",
            param,
        )
    return text


def parse_seeds(text: Any, param: str = "seeds") -> list[int]:
    """``"0-3,7"`` -> seeds, at most :data:`MAX_SEEDS`, else a 400."""
    from sfvq.cli.options import parse_seeds as _parse

    if not isinstance(text, str) or len(text) > 200:
        raise ApiError(400, f"{param} must be a short text such as 0-3,7", param)
    try:
        return _parse(text, max_count=MAX_SEEDS)
    except ValueError as e:
        raise ApiError(400, f"{param}: {e}", param) from e


def parse_layers(text: Any, num_ws: int, param: str = "layers") -> tuple[int, int] | None:
    """Inclusive ``"a-b"`` (or ``"a"``) -> (a, b + 1) within 0..num_ws-1; None or "" -> all layers."""
    from sfvq.cli.options import parse_layer_range

    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text) > 40:
        raise ApiError(400, f"{param} must be an inclusive range text such as 4-7", param)
    try:
        start, stop = parse_layer_range(text)
    except ValueError as e:
        raise ApiError(400, f"{param}: {e}", param) from e
    if num_ws <= 1:
        raise ApiError(400, f"{param}: this space has no style layers; layer ranges apply to W+", param)
    if stop > num_ws:
        raise ApiError(400, f"{param} {text} is outside this space's layers 0-{num_ws - 1}", param)
    return start, stop


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """An HWC uint8 array or PIL image -> PNG bytes (fast compression: these go straight to a browser)."""
    if not isinstance(image, Image.Image):
        image = np.asarray(image)
        image = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- explorer
class Explorer:
    """A run directory opened for exploring: model, space and generator loaded once, renders cached.

    All rendering goes through :meth:`_locked` (one lock for the process). Paths the API touches are
    checked by :meth:`inside` against the resolved run directory.
    """

    def __init__(self, run_dir: str | Path, model: Any, space: Any, network: str) -> None:
        from sfvq.directions import run_latents

        self.run_dir = Path(run_dir).resolve()
        self.model = model
        self.space = space
        self.network = str(network)
        self.bits = sorted(int(b) for b in model.codebooks_)
        self.num_ws = int(space.num_ws)
        self.X = run_latents(self.run_dir, model)  # (N, D) memory map, or None
        self.lock = threading.Lock()
        self._codebooks = {b: model.codebooks_[b].detach().to("cpu", torch.float32) for b in self.bits}
        self._corner_png: dict[int, list[bytes]] = {}
        self._map_png: dict[int, bytes] = {}
        self._segments: dict[int, dict[str, Any]] = {}
        self._cov: torch.Tensor | None = None
        self._image_shape: tuple[int, int] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, run_dir: str | Path, network: str | None = None, device: str = "cpu") -> Explorer:
        """Load ``<run>/model.safetensors``, its generator (``network`` or the one the model records) and
        ``<run>/space.json``. Raises FileNotFoundError / ValueError with messages naming what is wrong;
        :class:`~sfvq.generators.base.GeneratorError` (a ValueError) for the generator."""
        from sfvq.generators.registry import load_generator
        from sfvq.quantizer import SFVQ
        from sfvq.spaces import SPACE_FILE, LatentSpace

        run = Path(run_dir)
        if not run.is_dir():
            raise FileNotFoundError(f"{run} is not a directory (expected an sfvq run directory)")
        if not (run / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{run} has no {MODEL_FILE}: not an sfvq run directory")
        if not (run / SPACE_FILE).is_file():
            raise FileNotFoundError(f"{run} has no {SPACE_FILE}: the page needs the space the curve lives in")
        model = SFVQ.load(run / MODEL_FILE)
        if network is None:
            network = (getattr(model, "metadata_", None) or {}).get("network")
            if not network:
                raise ValueError(
                    "the model does not record its generator (metadata 'network'); give --network"
                )
        G = load_generator(str(network), device=device)
        space = LatentSpace.load(run, G)
        if space.dim != model.n_features_in_:
            raise ValueError(
                f"the model is {model.n_features_in_}-D but space {space.name!r} of {G.name} is "
                f"{space.dim}-D: wrong generator?"
            )
        return cls(run, model, space, str(network))

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _locked(self) -> Any:
        with self.lock, torch.no_grad():
            yield

    def inside(self, path: Path) -> Path:
        """``path`` resolved (symlinks followed); a 403 unless it lies inside the run directory."""
        resolved = Path(path).resolve()
        if resolved != self.run_dir and not resolved.is_relative_to(self.run_dir):
            raise ApiError(403, "that path leads outside the run directory")
        return resolved

    def check_bits(self, value: Any, param: str = "bits", *, json: bool = False) -> int:
        b = parse_int(value, param, 0, 64, json=json)
        if b not in self.bits:
            raise ApiError(400, f"{param} must be one of this model's bitrates {self.bits}, got {b}", param)
        return b

    def corners(self, bits: int) -> int:
        return int(self._codebooks[bits].shape[0])

    def check_segment(self, bits: int, value: Any, param: str = "segment", *, json: bool = False) -> int:
        return parse_int(value, param, 0, self.corners(bits) - 2, json=json)

    def _render(self, vectors: torch.Tensor) -> np.ndarray:
        """Space vectors (n, dim) -> uint8 images (n, H, W, C); call under the lock."""
        from sfvq.spaces import check_finite

        images = self.space.render(vectors)  # (n, C, H, W)
        check_finite(images, "the rendered images")
        out = to_uint8(images)
        self._image_shape = (int(out.shape[1]), int(out.shape[2]))
        return out

    def _render_full(self, full: torch.Tensor) -> np.ndarray:
        """Full tensors (n, num_ws, full_dim) -> uint8 images (n, H, W, C); call under the lock."""
        from sfvq.spaces import check_finite

        images = self.space.render_full(full)  # (n, C, H, W)
        check_finite(images, "the rendered images")
        return to_uint8(images)

    def direction(self, bits: int, segment: int) -> tuple[torch.Tensor, float | None, float]:
        """Unit direction of a segment (D,), the std of the data along it (None without latents), and the
        segment's length."""
        C = self._codebooks[bits]  # (K, D)
        raw = (C[segment + 1] - C[segment]).double()  # (D,)
        length = float(raw.norm())
        unit = (raw / length if length > 0 else raw).float()
        std = None
        if self.X is not None:
            if self._cov is None:
                from sfvq.directions import data_covariance

                self._cov = data_covariance(self.X)  # (D, D) float64
            std = float((unit.double() @ self._cov @ unit.double()).clamp_min(0).sqrt())
        return unit, std, length

    # ------------------------------------------------------------------ API operations
    def info(self) -> dict[str, Any]:
        """What the page needs to build itself."""
        if self._image_shape is None:
            self.image_png(self.bits[0], 0.0)
        return {
            "run": self.run_dir.name,
            "network": self.network,
            "space": self.space.describe(),
            "bits": self.bits,
            "corners": {str(b): self.corners(b) for b in self.bits},
            "num_ws": self.num_ws,
            "image_size": list(self._image_shape),
            "has_latents": self.X is not None,
            "sigma_unit": "std" if self.X is not None else "raw",
            "limits": {
                "max_seeds": MAX_SEEDS,
                "sigma_max": SIGMA_MAX,
                "augment_max": AUGMENT_MAX,
                "jitter_max": JITTER_MAX,
                "name_pattern": NAME_RE.pattern,
            },
        }

    def image_png(self, bits: int, t: float) -> bytes:
        """PNG of the curve point at fractional index ``t`` of the ``bits``-bit curve."""
        from sfvq.curve import decode

        v = decode(self._codebooks[bits], torch.tensor([t], dtype=torch.float64))  # (1, D)
        with self._locked():
            images = self._render(v.float())
        return png_bytes(images[0])

    def _corner_images(self, bits: int) -> list[bytes]:
        if bits not in self._corner_png:
            with self._locked():
                if bits not in self._corner_png:
                    images = self._render(self._codebooks[bits])  # (K, H, W, C)
                    self._map_png[bits] = png_bytes(
                        labelled_grid(images, [str(i) for i in range(len(images))])
                    )
                    self._corner_png[bits] = [png_bytes(im) for im in images]
        return self._corner_png[bits]

    def corner_png(self, bits: int, index: int) -> bytes:
        return self._corner_images(bits)[index]

    def map_png(self, bits: int) -> bytes:
        self._corner_images(bits)
        return self._map_png[bits]

    def segments(self, bits: int) -> dict[str, Any]:
        """Per segment: index, length, std of the data along it, share of the data projecting onto it;
        per corner ``empty``: no data has it as nearest corner (cached per bitrate)."""
        if bits not in self._segments:
            C = self._codebooks[bits]  # (K, D)
            K = C.shape[0]
            usage = near = None
            if self.X is not None:
                with self._locked():
                    x = torch.tensor(np.asarray(self.X, dtype=np.float32))  # (N, D), a writable copy
                    seg = self.model.project(x, bits=bits).segment.cpu()  # (N,)
                    usage = torch.bincount(seg, minlength=K - 1).double() / x.shape[0]  # (S,)
                    near = torch.bincount(self.model.predict(x, bits=bits).cpu(), minlength=K)  # (K,)
            rows = []
            for i in range(K - 1):
                _, std, length = self.direction(bits, i)
                rows.append(
                    {
                        "index": i,
                        "spec": f"{bits}:{i}",
                        "length": length,
                        "std": std,
                        "usage": None if usage is None else float(usage[i]),
                    }
                )
            empty = [] if near is None else [int(i) for i in torch.nonzero(near == 0).flatten()]
            self._segments[bits] = {"segments": rows, "empty_corners": empty}
        return self._segments[bits]

    def edit_png(
        self, bits: int, segment: int, seeds: list[int], sigma: float, layers: tuple[int, int] | None
    ) -> bytes:
        """Grid PNG: rows = seeds, columns = the seed edited by -sigma, 0, +sigma along the segment."""
        unit, std, _ = self.direction(bits, segment)
        scale = std if std is not None else 1.0
        sigmas = [-sigma if sigma else 0.0, 0.0, sigma]  # no "-0" label
        with self._locked():
            full = self.space.encode_seeds(seeds)  # (S, num_ws, full_dim)
            edited = torch.stack(
                [self.space.edit(full, unit, s * scale, layers) for s in sigmas], dim=1
            )  # (S, 3, num_ws, full_dim)
            images = self._render_full(edited.reshape(len(seeds) * 3, *full.shape[1:]))
        labels = [f"seed {s} {sig:+g}" for s in seeds for sig in sigmas]
        return png_bytes(labelled_grid(images, labels, cols=3))

    def directions(self) -> list[dict[str, Any]]:
        """The saved directions of the run (rows as ``sfvq directions`` lists them)."""
        from sfvq.directions import DirectionFileError, direction_paths, load_run_directions

        for p in direction_paths(self.run_dir / "directions"):
            self.inside(p)
        try:
            saved = load_run_directions(self.run_dir)
        except (DirectionFileError, OSError) as e:
            raise ApiError(500, f"the run's directions file cannot be read: {e}") from e
        return [] if saved is None else saved.rows(self.num_ws)

    def save_direction(
        self, name: str, bits: int, segment: int, layers: tuple[int, int] | None, sign: int, overwrite: bool
    ) -> dict[str, Any]:
        """Save segment ``bits:segment`` as ``name`` (with its layer range) in ``<run>/directions.*``."""
        from sfvq.directions import (
            DirectionFileError,
            direction_paths,
            load_run_directions,
            save_named_direction,
        )

        for p in direction_paths(self.run_dir / "directions"):
            self.inside(p)
        with self.lock:  # one writer at a time (read-modify-write of the directions file)
            try:
                saved = load_run_directions(self.run_dir)
            except (DirectionFileError, OSError) as e:
                raise ApiError(500, f"the run's directions file cannot be read: {e}") from e
            if saved is not None and name in saved and not overwrite:
                raise ApiError(409, f"a direction named {name!r} is already saved in this run", "name")
            try:
                d = save_named_direction(
                    self.run_dir, name, f"{bits}:{segment}", layers, self.model, sign,
                    overwrite=overwrite, X=self.X,
                )  # fmt: skip
            except ValueError as e:  # zero-length segment, name refused by the library
                raise ApiError(400, str(e)) from e
        return {"saved": d.info(), "file": "directions.safetensors"}

    def _augment_root(self) -> Path:
        return self.inside(self.run_dir / AUGMENT_DIR)

    def augment_batches(self) -> list[dict[str, Any]]:
        """Finished batches (those with labels.csv, which is written last)."""
        root = self.run_dir / AUGMENT_DIR
        if not root.is_dir():
            return []
        root = self._augment_root()
        out = []
        for d in sorted(root.iterdir()):
            if NAME_RE.match(d.name) and d.is_dir() and not d.is_symlink() and (d / "labels.csv").is_file():
                opts_file = d / "options.json"
                opts: dict[str, Any] = {}
                with contextlib.suppress(OSError, ValueError):
                    opts = json.loads(opts_file.read_text(encoding="utf-8")).get("options", {})
                out.append({"name": d.name, "segment": opts.get("segment"), "n": opts.get("n")})
        return out

    def augment(
        self, name: str, bits: int, segment: int, n: int, seed: int, jitter: float, overwrite: bool
    ) -> dict[str, Any]:
        """Write ``n`` images sampled on segment ``bits:segment`` into ``<run>/augment/<name>/``.

        Written into a hidden temporary folder and renamed when complete, so a batch that failed
        half-way never looks finished.
        """
        from sfvq.augment import sample_segment, write_augmentation

        if jitter > 0 and self.X is None:
            raise ApiError(
                400, "jitter > 0 needs the run's latents (latents.npy), which it has not", "jitter"
            )
        root = self.run_dir / AUGMENT_DIR
        if root.is_symlink() or root.exists():
            root = self._augment_root()
            if not root.is_dir():
                raise ApiError(409, f"{AUGMENT_DIR} in the run is not a folder")
        else:
            root.mkdir()
        dest = root / name
        with self.lock:
            if dest.is_symlink() or dest.exists():
                if dest.is_symlink() or not dest.is_dir():
                    raise ApiError(409, f"{AUGMENT_DIR}/{name} exists and is not a batch folder", "name")
                if not overwrite:
                    raise ApiError(409, f"an augmentation batch named {name!r} already exists", "name")
            samples = sample_segment(self.model, bits, segment, n, seed=seed, jitter=jitter, X=self.X)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
            try:
                with torch.no_grad():
                    write_augmentation(
                        self.space, samples, tmp, progress=False, meta={"network": self.network}
                    )
                options = {"segment": samples.spec, "n": n, "seed": seed, "jitter": jitter, "run": "."}
                write_options(tmp, "sfvq explore: augment", options)
                old = None
                if dest.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=root))
                    dest.replace(old / name)
                tmp.replace(dest)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        base = f"/api/augment/{name}"
        return {
            "name": name,
            "folder": f"{AUGMENT_DIR}/{name}",
            "segment": samples.spec,
            "n": n,
            "preview": f"{base}/preview.png",
            "labels": f"{base}/labels.csv",
            "first_images": [f"{base}/images/{k:06d}.png" for k in range(min(n, 8))],
        }

    def augment_file(self, name: str, file: str) -> Path:
        """The path of one file of a finished batch (checked: pattern, inside the run, a regular file)."""
        parse_name(name)
        if not isinstance(file, str) or not _AUGMENT_FILE_RE.match(file):
            raise ApiError(
                400, "file must be preview.png, labels.csv, latents.json, options.json or images/NNNNNN.png",
                "file",
            )  # fmt: skip
        path = self.inside(self.run_dir / AUGMENT_DIR / name / file)
        if not path.is_file():
            raise ApiError(404, f"no such file: {AUGMENT_DIR}/{name}/{file}", "file")
        return path


# ---------------------------------------------------------------------------------------------- app
def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> Any:
    """The Starlette app serving ``explorer``. ``allowed_hosts``: Host header values accepted
    (default: loopback names only); ``["*"]`` accepts any."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    ex = explorer
    no_store = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    def query(request: Request, *allowed: str) -> dict[str, str]:
        items = request.query_params.multi_items()
        out: dict[str, str] = {}
        for k, v in items:
            if k not in allowed:
                raise ApiError(400, f"unknown parameter {k[:40]!r}; this endpoint takes {sorted(allowed)}", k)
            if k in out:
                raise ApiError(400, f"parameter {k!r} is given more than once", k)
            out[k] = v
        return out

    def required(q: dict[str, Any], key: str) -> Any:
        if key not in q:
            raise ApiError(400, f"missing parameter {key!r}", key)
        return q[key]

    async def body(request: Request, *allowed: str) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "send the request body as JSON (Content-Type: application/json)")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            raise ApiError(403, f"cross-origin request from {origin[:80]!r} refused")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > BODY_MAX):
            raise ApiError(413, f"request body larger than {BODY_MAX} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > BODY_MAX:
                raise ApiError(413, f"request body larger than {BODY_MAX} bytes")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ApiError(400, f"the body must be a JSON object, got {type(data).__name__}")
        for k in data:
            if k not in allowed:
                raise ApiError(400, f"unknown field {k[:40]!r}; this endpoint takes {sorted(allowed)}", k)
        return data

    def flag(data: dict[str, Any], key: str) -> bool:
        v = data.get(key, False)
        if not isinstance(v, bool):
            raise ApiError(400, f"{key} must be true or false", key)
        return v

    def png(data: bytes, started: float) -> Response:
        ms = (time.perf_counter() - started) * 1000
        return Response(data, media_type="image/png", headers={**no_store, "X-Render-Ms": f"{ms:.1f}"})

    def sync(fn: Callable[..., Response]) -> Callable[..., Any]:
        """Run a blocking endpoint in the thread pool (renders must not block the event loop)."""
        from starlette.concurrency import run_in_threadpool

        async def endpoint(request: Request) -> Response:
            return await run_in_threadpool(fn, request)

        endpoint.__name__ = fn.__name__
        return endpoint

    # ------------------------------------------------------------------ endpoints
    async def index(request: Request) -> Response:
        query(request)
        return FileResponse(STATIC_DIR / "index.html", headers=no_store)

    def info(request: Request) -> Response:
        query(request)
        return JSONResponse(ex.info(), headers=no_store)

    def image(request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits", "t")
        b = ex.check_bits(required(q, "bits"))
        t = parse_float(required(q, "t"), "t", 0.0, ex.corners(b) - 1)
        return png(ex.image_png(b, t), started)

    def corner(request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits", "index")
        b = ex.check_bits(required(q, "bits"))
        i = parse_int(required(q, "index"), "index", 0, ex.corners(b) - 1)
        return png(ex.corner_png(b, i), started)

    def panoptic(request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits")
        return png(ex.map_png(ex.check_bits(required(q, "bits"))), started)

    def segments(request: Request) -> Response:
        q = query(request, "bits")
        b = ex.check_bits(required(q, "bits"))
        data = ex.segments(b)
        return JSONResponse({"bits": b, **data, "sigma_unit": "std" if ex.X is not None else "raw"})

    def edit(request: Request) -> Response:
        started = time.perf_counter()
        q = query(request, "bits", "segment", "seeds", "sigma", "layers")
        b = ex.check_bits(required(q, "bits"))
        seg = ex.check_segment(b, required(q, "segment"))
        seeds = parse_seeds(required(q, "seeds"))
        sigma = parse_float(required(q, "sigma"), "sigma", -SIGMA_MAX, SIGMA_MAX)
        layers = parse_layers(q.get("layers"), ex.num_ws)
        return png(ex.edit_png(b, seg, seeds, sigma, layers), started)

    def directions_get(request: Request) -> Response:
        query(request)
        return JSONResponse({"directions": ex.directions()}, headers=no_store)

    async def directions_post(request: Request) -> Response:
        query(request)
        data = await body(request, "name", "bits", "segment", "layers", "sign", "overwrite")
        name = parse_name(required(data, "name"))
        b = ex.check_bits(required(data, "bits"), json=True)
        seg = ex.check_segment(b, required(data, "segment"), json=True)
        layers = parse_layers(data.get("layers"), ex.num_ws)
        sign = data.get("sign", 1)
        if isinstance(sign, bool) or sign not in (1, -1):
            raise ApiError(400, "sign must be 1 or -1", "sign")
        overwrite = flag(data, "overwrite")
        from starlette.concurrency import run_in_threadpool

        out = await run_in_threadpool(ex.save_direction, name, b, seg, layers, int(sign), overwrite)
        return JSONResponse(out, status_code=201)

    def augment_get(request: Request) -> Response:
        query(request)
        return JSONResponse({"batches": ex.augment_batches()}, headers=no_store)

    async def augment_post(request: Request) -> Response:
        query(request)
        data = await body(request, "name", "bits", "segment", "n", "seed", "jitter", "overwrite")
        name = parse_name(required(data, "name"))
        b = ex.check_bits(required(data, "bits"), json=True)
        seg = ex.check_segment(b, required(data, "segment"), json=True)
        n = parse_int(data.get("n", 32), "n", 1, AUGMENT_MAX, json=True)
        seed = parse_int(data.get("seed", 0), "seed", 0, SEED_MAX, json=True)
        jitter = parse_float(data.get("jitter", 0.0), "jitter", 0.0, JITTER_MAX, json=True)
        overwrite = flag(data, "overwrite")
        from starlette.concurrency import run_in_threadpool

        out = await run_in_threadpool(ex.augment, name, b, seg, n, seed, jitter, overwrite)
        return JSONResponse(out, status_code=201)

    def augment_file(request: Request) -> Response:
        query(request)
        path = ex.augment_file(request.path_params["name"], request.path_params["file"])
        return FileResponse(path, media_type=_MEDIA[path.suffix], headers=no_store)

    # ------------------------------------------------------------------ errors
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=no_store)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message, "param": None}, status_code=exc.status_code, headers=no_store)

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {exc}", "param": None}, status_code=500
        )

    routes = [
        Route("/", index),
        Route("/api/info", sync(info)),
        Route("/api/image", sync(image)),
        Route("/api/corner", sync(corner)),
        Route("/api/map", sync(panoptic)),
        Route("/api/segments", sync(segments)),
        Route("/api/edit", sync(edit)),
        Route("/api/directions", sync(directions_get), methods=["GET"]),
        Route("/api/directions", directions_post, methods=["POST"]),
        Route("/api/augment", sync(augment_get), methods=["GET"]),
        Route("/api/augment", augment_post, methods=["POST"]),
        Route("/api/augment/{name}/{file:path}", sync(augment_file)),
        Mount("/static", StaticFiles(directory=STATIC_DIR)),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, allowed_hosts=hosts)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
    )


class Guard:
    """ASGI middleware: refuse requests whose Host header is not one of ``allowed_hosts`` (a 400 JSON
    error; guards against DNS rebinding), and give every response a Content-Security-Policy that allows
    nothing but this server, and ``nosniff``."""

    CSP = (
        b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'"
    )

    def __init__(self, app: Any, allowed_hosts: list[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.lower() for h in allowed_hosts}

    def _host_ok(self, scope: dict) -> bool:
        if self.any_host:
            return True
        host = next((v.decode("latin-1").lower() for k, v in scope.get("headers", []) if k == b"host"), "")
        if host.startswith("["):  # "[::1]:8000" -> "[::1]"
            name = host.split("]")[0] + "]"
        else:  # "127.0.0.1:8000" -> "127.0.0.1"
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in self.hosts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                drop = b"x-content-type-options"
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != drop]
                headers += [(b"content-security-policy", self.CSP), (drop, b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        if not self._host_ok(scope):
            from starlette.responses import JSONResponse

            error = {"error": "this server answers only requests addressed to the host it listens on",
                     "param": "Host"}  # fmt: skip
            await JSONResponse(error, status_code=400)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------------------------- serving
def bind(host: str, port: int) -> Any:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    import socket

    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, kind, proto, _, address = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only then, and without it every
    # keep-alive response (headers, then body) waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def url_of(sock: Any) -> str:
    """``http://host:port/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: Any, sock: Any, log_level: str = "warning") -> None:
    """Serve ``app`` on the bound socket until interrupted (uvicorn, one process)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, lifespan="off", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = [
    "AUGMENT_MAX",
    "ApiError",
    "Explorer",
    "MAX_SEEDS",
    "NAME_RE",
    "SIGMA_MAX",
    "bind",
    "create_app",
    "serve",
    "url_of",
]
