"""Face alignment for projection: dlib's 68 landmarks and the FFHQ crop (an oriented square around the face).

A face generator draws faces in one framing: FFHQ's StyleGANs the crop of the FFHQ data set, the built-in
DCGAN its CelebA-like crop. A photo is therefore cut to the same framing before it is projected:

1. :func:`detect_face`: dlib's HOG detector finds the faces (the photo is scaled so that its shorter side
   is at least :data:`DETECT_MIN_SIDE` px and its longer side at most :data:`DETECT_MAX_SIDE` px), the
   largest one is kept and dlib's 68-point shape predictor places its landmarks. None found:
   :class:`NoFaceError`.
2. :func:`face_quad`: the FFHQ recipe. From the centres of the eyes and of the mouth corners: the
   eye-to-eye vector e and the eye-to-mouth vector m; the crop's x axis is ``e - rot90(m)`` made unit
   length and scaled to ``max(2 |e|, 1.8 |m|)``, its y axis that rotated by 90 degrees, its centre
   ``eye_centre + 0.1 m``; the crop is the square spanned by +-x and +-y around the centre.
   ``framing`` scales this square and moves its centre (in units of its half side) for generators whose
   faces sit differently (:data:`FRAMINGS`).
3. :func:`crop_quad`: the square is cut out and resampled to the output size. A photo much larger than the
   output is first shrunk (so the resampling does not alias), and where the square reaches beyond the
   photo, the photo is extended by reflection and blended towards a blurred copy of itself the further out
   it goes (no black wedges in a tight portrait).

The model files come from the ``face-recognition-models`` package, found as the identity scorer finds them
(:func:`sfvq.scorers.identity.dlib_models_dir`); dlib from the ``dlib-bin`` wheel. Missing:
:class:`~sfvq.scorers.ScorerUnavailable` saying what to install.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

DETECT_MIN_SIDE = 256  # px: smaller photos are upscaled before detection (dlib's HOG finds faces from ~80 px)
DETECT_MAX_SIDE = 1600  # px: larger photos are shrunk for detection (speed), landmarks scaled back
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class Framing:
    """Where a generator draws its faces, relative to the FFHQ crop: the crop's width is multiplied by
    ``sx``, its height by ``sy``, and its centre moved by ``(dx, dy)`` half sides of the FFHQ square (x to
    the right, y down, in the face's own orientation). FFHQ's own framing is (1, 1, 0, 0)."""

    sx: float = 1.0
    sy: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    def __post_init__(self) -> None:
        if not (self.sx > 0 and self.sy > 0 and math.isfinite(self.sx) and math.isfinite(self.sy)):
            raise ValueError(f"a framing's scales must be positive and finite, got {self.sx}, {self.sy}")
        if not (math.isfinite(self.dx) and math.isfinite(self.dy)):
            raise ValueError(f"a framing's shifts must be finite, got {self.dx}, {self.dy}")

    def describe(self) -> dict[str, float]:
        return {"sx": self.sx, "sy": self.sy, "dx": self.dx, "dy": self.dy}


FFHQ = Framing()
# builtin:faces-dcgan draws its faces larger and taller than an FFHQ crop shows them (CelebA-like): fitted
# (fit_framing) between dlib's anchor points on 171 of its first 256 faces in which dlib finds one and on
# the FFHQ-aligned scikit-image astronaut; `python -m benchmarks.real_images --framing` measures it again.
FRAMINGS: dict[str, Framing] = {"builtin:faces-dcgan": Framing(sx=0.829, sy=0.635, dx=0.001, dy=-0.005)}


class NoFaceError(ValueError):
    """Alignment was asked for but dlib found no face in the image."""


@dataclass
class Face:
    """A face found in a photo: ``landmarks`` (68, 2) in pixels of the photo (x, y), ``box`` (left, top,
    right, bottom) in pixels, the detector's ``score``, and how many faces were found in all."""

    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    faces_found: int


@dataclass
class AlignedFace:
    """The result of :func:`align_face`: the cropped ``image`` (size x size RGB), the face it was cut
    around, the crop square ``quad`` (4, 2) in the photo's pixels (top-left, bottom-left, bottom-right,
    top-right corner) and the framing used."""

    image: Image.Image
    face: Face
    quad: np.ndarray
    framing: Framing

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (for an options or result file)."""
        return {
            "quad": np.round(self.quad, 2).tolist(),
            "box": [round(float(v), 2) for v in self.face.box],
            "score": round(self.face.score, 4),
            "faces_found": self.face.faces_found,
            "framing": self.framing.describe(),
        }


def _dlib() -> tuple[Any, Any]:
    """dlib and the 68-landmark predictor's path; ScorerUnavailable saying how to install them."""
    from sfvq.scorers._common import INSTALL_HINT, ScorerUnavailable
    from sfvq.scorers.identity import dlib_models_dir

    try:
        import dlib
    except ImportError as e:
        raise ScorerUnavailable(
            f"face alignment needs dlib (the dlib-bin wheel): {INSTALL_HINT} ({e})"
        ) from e
    path = dlib_models_dir() / LANDMARKS_FILE
    if not path.is_file():
        raise ScorerUnavailable(f"dlib's landmark model {path} is missing: {INSTALL_HINT}")
    return dlib, path


_MODELS: dict[str, Any] = {}


def _models() -> tuple[Any, Any]:
    """The HOG face detector and the 68-point shape predictor, loaded once per process."""
    if "detector" not in _MODELS:
        dlib, path = _dlib()
        _MODELS["detector"] = dlib.get_frontal_face_detector()
        _MODELS["predictor"] = dlib.shape_predictor(str(path))
        _MODELS["rectangle"] = dlib.rectangle
    return _MODELS["detector"], _MODELS["predictor"]


def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {arr.shape} {arr.dtype}")
    return arr


def detect_face(image: Image.Image | np.ndarray, threshold: float = 0.0) -> Face:
    """The largest face dlib finds in an RGB image, with its 68 landmarks; :class:`NoFaceError` if none.

    ``threshold``: the HOG detector's score threshold (lower finds more, and more false faces).
    """
    arr = _as_rgb_array(image)
    H, W = arr.shape[:2]
    scale = 1.0
    if min(H, W) < DETECT_MIN_SIDE:
        scale = DETECT_MIN_SIDE / min(H, W)
    elif max(H, W) > DETECT_MAX_SIDE:
        scale = DETECT_MAX_SIDE / max(H, W)
    work = arr
    if scale != 1.0:
        size = (max(1, round(W * scale)), max(1, round(H * scale)))
        work = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC))
    detector, predictor = _models()
    rects, scores, _ = detector.run(work, 1, threshold)  # upsample once: faces from ~40 px
    if not rects:
        raise NoFaceError(
            f"no face found in the {W}x{H} image (dlib's HOG detector); alignment needs a frontal face"
        )
    best = max(range(len(rects)), key=lambda i: rects[i].width() * rects[i].height())
    rect = rects[best]
    shape = predictor(work, rect)
    points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64) / scale
    box = tuple(float(v) / scale for v in (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1))
    return Face(points, box, float(scores[best]), len(rects))  # type: ignore[arg-type]


def face_quad(landmarks: np.ndarray, framing: Framing = FFHQ) -> np.ndarray:
    """The FFHQ crop square of a face from its 68 landmarks (68, 2) -> corners (4, 2): top-left,
    bottom-left, bottom-right, top-right (the order :meth:`PIL.Image.Image.transform` takes a quad in)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks (68, 2), got {lm.shape}")
    eye_left = lm[36:42].mean(0)  # the person's right eye, on the image's left
    eye_right = lm[42:48].mean(0)
    mouth = (lm[48] + lm[54]) / 2  # the mouth corners
    eye_centre = (eye_left + eye_right) / 2
    e = eye_right - eye_left  # eye to eye
    m = mouth - eye_centre  # eye centre to mouth
    x = e - np.array([-m[1], m[0]])  # e minus m turned by 90 degrees: the crop's horizontal axis
    x /= max(np.hypot(*x), 1e-9)
    x *= max(2.0 * np.hypot(*e), 1.8 * np.hypot(*m))  # half the crop's side
    y = np.array([-x[1], x[0]])  # x turned by 90 degrees: the crop's vertical axis (pointing down)
    c = eye_centre + 0.1 * m
    c = c + framing.dx * x + framing.dy * y
    x, y = x * framing.sx, y * framing.sy
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # (4, 2)


def _extend(image: Image.Image, pad: tuple[int, int, int, int]) -> Image.Image:
    """``image`` grown by ``pad`` (left, top, right, bottom) px of reflection, blended towards a blurred
    copy the further a pixel lies outside the original (so the added border reads as background)."""
    left, top, right, bottom = pad
    arr = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    H, W = arr.shape[:2]
    big = np.pad(arr, ((top, bottom), (left, right), (0, 0)), mode="reflect")  # (H', W', 3)
    yy, xx = np.mgrid[0 : big.shape[0], 0 : big.shape[1]].astype(np.float32)
    outside = np.maximum.reduce(
        [left - xx, xx - (left + W - 1), top - yy, yy - (top + H - 1), np.zeros_like(xx)]
    )  # px outside the original, 0 inside
    reach = max(1.0, 0.3 * min(H, W))
    weight = np.clip(outside / reach, 0.0, 1.0)[..., None]  # (H', W', 1)
    radius = max(1.0, 0.02 * max(H, W))
    blurred = np.asarray(
        Image.fromarray(big.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
        dtype=np.float32,
    )
    out = big + (blurred - big) * weight
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def crop_quad(image: Image.Image, quad: np.ndarray, size: int) -> Image.Image:
    """Cut the square ``quad`` (4, 2) out of an RGB image and resample it to ``size`` x ``size`` px."""
    if size < 1:
        raise ValueError(f"size must be >= 1 px, got {size}")
    quad = np.asarray(quad, dtype=np.float64).copy()
    image = image.convert("RGB")
    side = float(np.hypot(*(quad[3] - quad[0])))  # px of the photo along the crop's side
    shrink = int(math.floor(side / size / 2))
    if shrink > 1:  # more than 4x larger than the output: shrink first, antialiased
        image = image.resize(
            (max(1, round(image.width / shrink)), max(1, round(image.height / shrink))),
            Image.Resampling.LANCZOS,
        )
        quad /= shrink
        side /= shrink
    W, H = image.size
    lo = np.floor(quad.min(0)).astype(int) - 2
    hi = np.ceil(quad.max(0)).astype(int) + 2
    pad = (max(0, -lo[0]), max(0, -lo[1]), max(0, hi[0] - W), max(0, hi[1] - H))
    if any(pad):
        image = _extend(image, pad)
        quad += np.array([pad[0], pad[1]], dtype=np.float64)
    work = max(size, int(round(side)))  # resample at about the photo's own scale, then resize down
    out = image.transform(
        (work, work), Image.Transform.QUAD, tuple(quad.reshape(-1).tolist()), Image.Resampling.BICUBIC
    )
    if work != size:
        out = out.resize((size, size), Image.Resampling.LANCZOS)
    return out


def align_face(
    image: Image.Image | np.ndarray, size: int, framing: Framing = FFHQ, threshold: float = 0.0
) -> AlignedFace:
    """Find the face in an RGB photo and cut its crop square (FFHQ's, adjusted by ``framing``) at
    ``size`` px. Raises :class:`NoFaceError` when there is no face."""
    pil = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(_as_rgb_array(image))
    face = detect_face(pil, threshold)
    quad = face_quad(face.landmarks, framing)
    return AlignedFace(crop_quad(pil, quad, size), face, quad, framing)


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """The three points the FFHQ recipe reads from 68 landmarks (68, 2) -> (3, 2): the centre of the left
    eye, of the right eye, and of the mouth corners."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), (lm[48] + lm[54]) / 2])


def fit_framing(ffhq_points: np.ndarray, generator_points: np.ndarray) -> Framing:
    """The framing that moves anchor points as an FFHQ crop shows them (n, 3, 2), in [0, 1] crop
    coordinates, onto where a generator draws them (m, 3, 2): per axis, a least-squares scale and shift
    between the two mean configurations (a crop ``sx`` times as wide shows a face ``1/sx`` times as wide).
    """
    ref = np.asarray(ffhq_points, dtype=np.float64).reshape(-1, 3, 2).mean(0) - 0.5  # (3, 2)
    gen = np.asarray(generator_points, dtype=np.float64).reshape(-1, 3, 2).mean(0) - 0.5
    out = []
    for axis in range(2):  # ref = s * gen + t, least squares
        A = np.stack([gen[:, axis], np.ones(3)], axis=1)  # (3, 2)
        (s, t), *_ = np.linalg.lstsq(A, ref[:, axis], rcond=None)
        out.append((float(s), float(t)))
    (sx, tx), (sy, ty) = out
    return Framing(sx=round(sx, 3), sy=round(sy, 3), dx=round(2 * tx, 3), dy=round(2 * ty, 3))


def framing_for(name: str) -> Framing:
    """The framing of a generator by its name (:data:`FRAMINGS`), FFHQ's for any other."""
    return FRAMINGS.get(name, FFHQ)


__all__ = [
    "FFHQ",
    "FRAMINGS",
    "AlignedFace",
    "Face",
    "Framing",
    "NoFaceError",
    "align_face",
    "crop_quad",
    "detect_face",
    "anchor_points",
    "face_quad",
    "fit_framing",
    "framing_for",
]
