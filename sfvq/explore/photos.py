"""Your own images in the explorer: upload a photo, see it projected and placed on the map, edit it.

* ``POST /api/photos``: the image itself as the body (``Content-Type`` image/png, image/jpeg or
  image/webp, at most :data:`UPLOAD_MAX_BYTES`): decoded, projected into the run's space, placed (201 JSON;
  200 when the same image was uploaded before);
* ``GET /api/photos``: the photos of the run;
* ``GET /api/photos/<id>``: one photo, its figures and its place on every bitrate;
* ``GET /api/photos/<id>/edit?bits&segment&sigma[&layers]``: PNG of the photo moved along a segment;
* ``GET /api/photos/<id>/<file>``: photo.png, target.png, projection.png or compare.png.

Safety, on top of the app's (host guard, same origin, no CORS): the type is checked from the header and
again from the bytes, the body is read up to its limit and no further, and the image is decoded by
:func:`sfvq.project.read_image` (a format allow-list, verified, at most :data:`UPLOAD_MAX_PIXELS` pixels).
Nothing of the upload is stored as sent: the decoded photo is re-encoded as PNG into
``<run>/photos/<id>/`` (``id``: the first 16 hex digits of the upload's sha256, so the same photo is
projected once), written into a hidden temporary folder and renamed when complete. Projection takes the
explorer's render lock (:data:`PROJECT_STEPS` steps: a few seconds for the small generators on a CPU).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from sfvq.explore.params import SIGMA_MAX, ApiError, parse_float, parse_layers

PHOTOS_DIR = "photos"
UPLOAD_MAX_BYTES = 8 * 2**20  # bytes of one upload
UPLOAD_MAX_PIXELS = 16_000_000  # pixels of one uploaded image (width x height)
UPLOAD_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
PROJECT_STEPS = 200  # projection steps of an upload
PHOTO_ID_RE = re.compile(r"\A[0-9a-f]{16}\Z")
PHOTO_FILES = ("photo.png", "target.png", "projection.png", "compare.png")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class Photos:
    """The uploaded photos of an explorer's run (``<run>/photos/<id>/``): projection, placement, edits.

    Everything that renders takes the explorer's lock; paths are checked with ``explorer.inside``.
    """

    def __init__(self, explorer: Any, steps: int = PROJECT_STEPS) -> None:
        self.ex = explorer
        self.steps = steps
        self._reference: dict[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ paths
    def _root(self) -> Path:
        root = self.ex.run_dir / PHOTOS_DIR
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise ApiError(409, f"{PHOTOS_DIR} in the run is not a folder")
        root.mkdir(exist_ok=True)
        return self.ex.inside(root)

    def folder(self, photo_id: Any) -> Path:
        """The folder of a stored photo (checked: pattern, inside the run, complete); else 400 / 404."""
        if not isinstance(photo_id, str) or not PHOTO_ID_RE.match(photo_id):
            raise ApiError(400, "a photo id is 16 hexadecimal digits", "id")
        folder = self.ex.inside(self.ex.run_dir / PHOTOS_DIR / photo_id)
        if not (folder / "projected.npy").is_file():
            raise ApiError(404, f"no photo {photo_id} in this run", "id")
        return folder

    def file(self, photo_id: str, name: str) -> Path:
        """One picture of a stored photo (the names of :data:`PHOTO_FILES` only)."""
        if name not in PHOTO_FILES:
            raise ApiError(400, f"file must be one of {', '.join(PHOTO_FILES)}", "file")
        path = self.ex.inside(self.folder(photo_id) / name)
        if not path.is_file():
            raise ApiError(404, f"no such file: {PHOTOS_DIR}/{photo_id}/{name}", "file")
        return path

    # ------------------------------------------------------------------ reading
    def _latent(self, folder: Path) -> Any:
        from sfvq.project import LatentFileError, read_latent

        try:
            return read_latent(folder / "projected.npy", self.ex.space)
        except (LatentFileError, OSError) as e:
            raise ApiError(500, f"the stored latent of {folder.name} cannot be read: {e}") from e

    def _reference_distances(self) -> dict[int, np.ndarray]:
        """Distances of the run's sampled latents to each curve (2000 fresh samples without latents)."""
        if self._reference is None:
            from sfvq.locate import reference_distances

            X = self.ex.X
            if X is None:
                X = self.ex.space.sample(2000, seed=0, progress=False)
            self._reference = reference_distances(self.ex.model, X)
        return self._reference

    def describe(self, photo_id: str) -> dict[str, Any]:
        """A stored photo: its figures, its place on every bitrate (recomputed: cheap, and always of this
        run's curve) and the URLs of its pictures."""
        from sfvq.locate import place

        folder = self.folder(photo_id)
        lat = self._latent(folder)
        with self.ex.lock:
            placement = place(self.ex.model, lat.vector, self._reference_distances())
        summary: dict[str, Any] = {}
        try:
            summary = json.loads((folder / "projection.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        base = f"/api/photos/{photo_id}"
        return {
            "id": photo_id,
            "psnr": summary.get("psnr"),
            "ssim": summary.get("ssim"),
            "aligned": bool((summary.get("target") or {}).get("aligned")),
            **placement.to_json(),
            "files": {name.removesuffix(".png"): f"{base}/{name}" for name in PHOTO_FILES},
            "edit": f"{base}/edit",
        }

    def list(self) -> list[dict[str, Any]]:
        root = self.ex.run_dir / PHOTOS_DIR
        if not root.is_dir():
            return []
        root = self.ex.inside(root)
        return [
            {"id": d.name, "files": {"photo": f"/api/photos/{d.name}/photo.png"}}
            for d in sorted(root.iterdir())
            if PHOTO_ID_RE.match(d.name)
            and d.is_dir()
            and not d.is_symlink()
            and (d / "projected.npy").is_file()
        ]

    # ------------------------------------------------------------------ adding
    def add(self, data: bytes, declared: str) -> dict[str, Any]:
        """Decode, store, project and place an uploaded image; returns :meth:`describe`'s answer (with
        ``new``: False when the same image was uploaded before)."""
        from sfvq.align import NoFaceError
        from sfvq.atomic import temp_dir
        from sfvq.project import (
            ImageInputError,
            ProjectionSettings,
            Projector,
            prepare_target,
            read_image,
            write_projection,
        )
        from sfvq.scorers import ScorerUnavailable

        found = _sniff(data)
        if found is not None and found != UPLOAD_TYPES[declared]:
            raise ApiError(415, f"the upload was sent as {declared} but holds a {found} image", "image")
        photo_id = hashlib.sha256(data).hexdigest()[:16]
        root = self._root()
        dest = root / photo_id
        if (dest / "projected.npy").is_file():
            return {**self.describe(photo_id), "new": False}
        try:
            image = read_image(data, UPLOAD_MAX_PIXELS, name="the upload", max_bytes=UPLOAD_MAX_BYTES)
        except ImageInputError as e:
            raise ApiError(400, str(e), "image") from e
        if found is None:  # an image, but not of the types an upload may be sent as
            raise ApiError(
                415, f"the upload was sent as {declared} but is not a PNG, JPEG or WebP image", "image"
            )
        space = self.ex.space
        try:
            target = prepare_target(image, space.G, "auto")
        except NoFaceError as e:
            raise ApiError(400, str(e), "image") from e
        except ScorerUnavailable as e:
            raise ApiError(503, f"aligning a face needs dlib here: {e}") from e
        settings = ProjectionSettings(steps=self.steps)
        tmp = temp_dir(root, photo_id)
        try:
            with self.ex.lock:
                projector = Projector(space, settings=settings, reference=self.ex.X)
                result = projector.project(target.tensor)
            write_projection(
                result, tmp, target=target, meta={"network": self.ex.network, "upload": declared}
            )
            from sfvq.io import save_png
            from sfvq.project import fit_square

            save_png(tmp / "photo.png", _viewable(image, target, fit_square))
            if dest.exists():  # a folder left without its latent: replace it
                shutil.rmtree(self.ex.inside(dest))
            tmp.replace(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return {**self.describe(photo_id), "new": True}

    # ------------------------------------------------------------------ editing
    def edit_png(
        self, photo_id: str, bits: int, segment: int, sigma: float, layers: tuple[int, int] | None
    ) -> bytes:
        """PNG of the photo's latent moved by ``sigma`` (the data's std along the segment, raw units
        without latents) along segment ``bits:segment``."""
        from sfvq.explore.explorer import png_bytes
        from sfvq.generators.base import to_uint8
        from sfvq.spaces import check_finite

        lat = self._latent(self.folder(photo_id))
        unit, std, _ = self.ex.direction(bits, segment)
        scale = std if std is not None else 1.0
        with self.ex.lock, torch.no_grad():
            images = self.ex.space.render_edits(lat.full, [unit], [sigma * scale], layers)  # (1, 1, 1, ...)
            check_finite(images, "the edited image")
        return png_bytes(to_uint8(images[0, 0])[0])


def _sniff(data: bytes) -> str | None:
    """The format the bytes start with (PNG, JPEG, WEBP), None for another."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _viewable(image: Any, target: Any, fit_square: Any, size: int = 256) -> Any:
    """What was projected at a viewable size: the aligned crop, or the centred square."""
    if target.alignment is not None:
        from sfvq.align import crop_quad

        return crop_quad(image, target.alignment.quad, max(size, target.image.width))
    return fit_square(image, max(size, target.image.width))


# ---------------------------------------------------------------------------------------------- HTTP
async def read_upload(request: Request) -> tuple[bytes, str]:
    """An upload's bytes and declared type: an image content type of :data:`UPLOAD_TYPES`, same origin, at
    most :data:`UPLOAD_MAX_BYTES` (read no further); else a 4xx."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in UPLOAD_TYPES:
        raise ApiError(415, f"send the image itself as the body, as {', '.join(UPLOAD_TYPES)}", "image")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise ApiError(403, f"cross-origin request from {origin[:80]!r} refused")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > UPLOAD_MAX_BYTES):
        raise ApiError(413, f"the image is larger than {UPLOAD_MAX_BYTES:,} bytes", "image")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > UPLOAD_MAX_BYTES:
            raise ApiError(413, f"the image is larger than {UPLOAD_MAX_BYTES:,} bytes", "image")
        chunks.append(chunk)
    if size == 0:
        raise ApiError(400, "the body is empty: send the image", "image")
    return b"".join(chunks), ctype


def _query(request: Request, *allowed: str) -> dict[str, str]:
    from sfvq.explore.app import query

    return query(request, *allowed)


def routes(explorer: Any) -> list[Route]:
    """The photo endpoints on an explorer (see the module docstring)."""
    from sfvq.explore.app import png, sync

    photos = Photos(explorer)

    async def upload(request: Request) -> Response:
        _query(request)
        data, declared = await read_upload(request)
        out = await run_in_threadpool(photos.add, data, declared)
        return JSONResponse(out, status_code=201 if out["new"] else 200, headers=_NO_STORE)

    def listing(request: Request) -> Response:
        _query(request)
        return JSONResponse({"photos": photos.list()}, headers=_NO_STORE)

    def one(request: Request) -> Response:
        _query(request)
        return JSONResponse(photos.describe(request.path_params["id"]), headers=_NO_STORE)

    def edit(request: Request) -> Response:
        import time

        started = time.perf_counter()
        q = _query(request, "bits", "segment", "sigma", "layers")
        for key in ("bits", "segment", "sigma"):
            if key not in q:
                raise ApiError(400, f"missing parameter {key!r}", key)
        b = explorer.check_bits(q["bits"])
        seg = explorer.check_segment(b, q["segment"])
        sigma = parse_float(q["sigma"], "sigma", -SIGMA_MAX, SIGMA_MAX)
        layers = parse_layers(q.get("layers"), explorer.num_ws)
        return png(photos.edit_png(request.path_params["id"], b, seg, sigma, layers), started)

    def picture(request: Request) -> Response:
        _query(request)
        path = photos.file(request.path_params["id"], request.path_params["file"])
        return FileResponse(path, media_type="image/png", headers=_NO_STORE)

    return [
        Route("/api/photos", upload, methods=["POST"]),
        Route("/api/photos", sync(listing), methods=["GET"]),
        Route("/api/photos/{id}", sync(one), methods=["GET"]),
        Route("/api/photos/{id}/edit", sync(edit), methods=["GET"]),
        Route("/api/photos/{id}/{file}", sync(picture), methods=["GET"]),
    ]


__all__ = [
    "PHOTOS_DIR",
    "PHOTO_FILES",
    "PROJECT_STEPS",
    "UPLOAD_MAX_BYTES",
    "UPLOAD_MAX_PIXELS",
    "UPLOAD_TYPES",
    "Photos",
    "read_upload",
    "routes",
]
