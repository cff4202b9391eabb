"""The service behind ``sfvq explore``: one run opened for exploring, its renders and the files it writes.

An :class:`Explorer` holds a :class:`~sfvq.runs.Run` (model, latent space, generator, latents) loaded
once; every render happens in this process under one lock (torch is not re-entrant here). Corner images
and panoptic maps are rendered once per bitrate and cached. Files are read and written only inside the
run directory: names never become paths unchecked, and every path is resolved (symlinks included) and
must lie inside the resolved run directory (:meth:`Explorer.inside`). The HTTP side is
:mod:`sfvq.explore.app`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sfvq.atomic import temp_dir
from sfvq.explore.params import (
    AUGMENT_MAX,
    JITTER_MAX,
    MAX_SEEDS,
    NAME_PATTERN,
    NAME_RE,
    SIGMA_MAX,
    ApiError,
    parse_int,
    parse_name,
)
from sfvq.generators.base import to_uint8
from sfvq.images import labelled_grid
from sfvq.io import write_options
from sfvq.runs import Run, RunError

AUGMENT_DIR = "augment"
_AUGMENT_FILE_RE = re.compile(
    r"\A(preview\.png|labels\.csv|latents\.json|options\.json|images/\d{6,9}\.png)\Z"
)


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """An HWC uint8 array or PIL image -> PNG bytes (fast compression: these go straight to a browser)."""
    if not isinstance(image, Image.Image):
        image = np.asarray(image)
        image = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class Explorer:
    """A run directory opened for exploring: model, space and generator loaded once, renders cached.

    All rendering goes through :meth:`_locked` (one lock for the process). Paths the API touches are
    checked by :meth:`inside` against the resolved run directory.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.run_dir = run.path.resolve()
        self.model = run.model
        self.space = run.space
        self.network = run.network
        self.bits = sorted(int(b) for b in self.model.codebooks_)
        self.num_ws = int(self.space.num_ws)
        self.X = run.latents  # (N, D) memory map, or None
        self.lock = threading.Lock()
        self._codebooks = {b: self.model.codebooks_[b].detach().to("cpu", torch.float32) for b in self.bits}
        self._corner_png: dict[int, list[bytes]] = {}
        self._map_png: dict[int, bytes] = {}
        self._segments: dict[int, dict[str, Any]] = {}
        self._cov: torch.Tensor | None = None
        self._image_shape: tuple[int, int] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, run_dir: str | Path, network: str | None = None, device: str = "cpu") -> Explorer:
        """Open a run directory (:meth:`sfvq.runs.Run.open`) with its generator (``network`` or the one the
        model records) and its ``space.json``, which the page needs. Raises
        :class:`~sfvq.runs.RunError` naming what is wrong; :class:`~sfvq.generators.base.GeneratorError`
        for the generator."""
        from sfvq.spaces import SPACE_FILE

        path = Path(run_dir)
        if not path.is_dir():
            raise RunError(f"{path} is not a directory (expected an sfvq run directory)", "path")
        run = Run.open(path, network=network, device=device)
        if not run.space_file.is_file():
            raise RunError(f"{path} has no {SPACE_FILE}: the page needs the space the curve lives in", "path")
        return cls(run)

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
                "name_pattern": NAME_PATTERN,
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
        notes = self.annotations(bits)
        cached = self._segments[bits]
        rows = [{**row, "annotation": notes.get(row["index"])} for row in cached["segments"]]
        return {**cached, "segments": rows, "annotated": bool(notes)}

    # ------------------------------------------------------------------ annotations (sfvq annotate)
    def annotations(self, bits: int) -> dict[int, dict[str, Any]]:
        """The run's annotations of the ``bits``-bit segments, read afresh (``sfvq annotate`` may run while
        the page is open) and defensively (a missing, broken or stale file gives {}): {segment: row} with
        ``summary``, ``locality``, ``change``, ``layers`` (inclusive text or None), ``layer_share`` and
        ``heat`` (the URL of its heat map, or None)."""
        from sfvq.annotate import read_annotations
        from sfvq.directions import layers_text

        run_id = (getattr(self.model, "metadata_", None) or {}).get("run_id")
        data = read_annotations(self.run_dir, run_id)
        rows = (data or {}).get("bits", {}).get(str(bits))
        out: dict[int, dict[str, Any]] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or not isinstance(row.get("segment"), int):
                continue
            i = row["segment"]
            lay = row.get("layers")
            ok = isinstance(lay, list) and len(lay) == 2 and all(isinstance(x, int) for x in lay)
            heat = self.run_dir / "annotations" / f"b{bits}_s{i:03d}.png"
            out[i] = {
                "summary": str(row.get("summary") or ""),
                **{k: _number(row.get(k)) for k in ("locality", "change", "layer_share")},
                "layers": layers_text((lay[0], lay[1])) if ok and 0 <= lay[0] < lay[1] else None,
                "heat": f"/api/heat?bits={bits}&segment={i}" if heat.is_file() else None,
            }
        return out

    def heat_path(self, bits: int, segment: int) -> Path:
        """The heat map of a segment (``annotations/b{bits}_s{i:03d}.png``), checked to lie in the run."""
        path = self.inside(self.run_dir / "annotations" / f"b{bits}_s{segment:03d}.png")
        if not path.is_file():
            hint = f"segment {bits}:{segment} has no heat map: run sfvq annotate --run RUN"
            raise ApiError(404, hint, "segment")
        return path

    def auto_layers(self, bits: int, segment: int) -> tuple[int, int] | None:
        """``layers=auto``: the segment's annotated range, else computed now (as ``--layers auto``); None in
        a space without style layers."""
        from sfvq.annotate import AnnotationError, auto_layers
        from sfvq.directions import Direction

        unit, std, length = self.direction(bits, segment)
        d = Direction(
            f"{bits}:{segment}", unit, {"method": "sfvq", "bits": bits, "corners": [segment, segment + 1]},
            length=length, std=std,
        )  # fmt: skip
        with self._locked():
            try:
                used, _ = auto_layers(self.run, d, self.space)
            except AnnotationError as e:
                raise ApiError(400, f"layers auto: {e}", "layers") from e
        return None if used is None or used == (0, self.num_ws) else used

    def edit_png(
        self, bits: int, segment: int, seeds: list[int], sigma: float, layers: tuple[int, int] | None
    ) -> bytes:
        """Grid PNG: rows = seeds, columns = the seed edited by -sigma, 0, +sigma along the segment."""
        from sfvq.render import edit_grid
        from sfvq.spaces import check_finite

        unit, std, _ = self.direction(bits, segment)
        scale = std if std is not None else 1.0
        sigmas = [-sigma if sigma else 0.0, 0.0, sigma]  # no "-0" label
        with self._locked():
            full = self.space.encode_seeds(seeds)  # (S, num_ws, full_dim)
            images = self.space.render_edits(
                full, [unit], [s * scale for s in sigmas], layers
            )  # (S, 1, 3, C, H, W)
            check_finite(images, "the rendered images")
            tiles = to_uint8(images.reshape(-1, *images.shape[3:]))  # (S * 3, H, W, C): rows = seeds
        return png_bytes(edit_grid(tiles, seeds, sigmas, label="seed {seed} {sigma:+g}", pad=2))

    def directions(self) -> list[dict[str, Any]]:
        """The saved directions of the run (rows as ``sfvq directions`` lists them)."""
        from sfvq.directions import DirectionFileError, direction_paths

        for p in direction_paths(self.run_dir / "directions"):
            self.inside(p)
        try:
            saved = self.run.directions()
        except (DirectionFileError, OSError) as e:
            raise ApiError(500, f"the run's directions file cannot be read: {e}") from e
        return [] if saved is None else saved.rows(self.num_ws)

    def save_direction(
        self, name: str, bits: int, segment: int, layers: tuple[int, int] | None, sign: int, overwrite: bool
    ) -> dict[str, Any]:
        """Save segment ``bits:segment`` as ``name`` (with its layer range) in ``<run>/directions.*``."""
        from sfvq.directions import DirectionFileError, direction_paths

        for p in direction_paths(self.run_dir / "directions"):
            self.inside(p)
        with self.lock:  # one writer at a time (read-modify-write of the directions file)
            try:
                saved = self.run.directions()
            except (DirectionFileError, OSError) as e:
                raise ApiError(500, f"the run's directions file cannot be read: {e}") from e
            if saved is not None and name in saved and not overwrite:
                raise ApiError(409, f"a direction named {name!r} is already saved in this run", "name")
            try:
                d = self.run.save_direction(name, f"{bits}:{segment}", layers, sign, overwrite=overwrite)
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
            tmp = temp_dir(root, name)  # .NAME.PID.XXXXXXXX.tmp: cleaned once this process is gone
            try:
                with torch.no_grad():
                    write_augmentation(
                        self.space, samples, tmp, progress=False, meta={"network": self.network}
                    )
                options = {"segment": samples.spec, "n": n, "seed": seed, "jitter": jitter, "run": "."}
                write_options(tmp, "sfvq explore: augment", options)
                old = None
                if dest.exists():
                    old = temp_dir(root, f"{name}-old")
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


def _number(x: Any) -> float | None:
    """A finite number from JSON, else None (annotations are read defensively)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) else None


__all__ = ["AUGMENT_DIR", "Explorer", "png_bytes"]
