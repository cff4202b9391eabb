"""Offline face scorers: identity (dlib), attributes (face-api in Node) and image change (SSIM).

* :class:`IdentityScorer`: 128-D dlib embeddings; ``distance`` < :data:`SAME_PERSON_THRESHOLD` (0.6) is
  usually the same person. Needs ``pip install 'sfvq[scorers]'``.
* :class:`AttributeScorer`: age, gender (P(male)), smile (P(happy)), yaw (+ = turned to the image's right),
  expressions, detection flags; one Node process per scorer. Needs ``scripts/install-scorers.sh``.
* :func:`ssim` (torch, images in [0, 1]) and :func:`image_ssim` (the scorers' image format).
* :mod:`sfvq.scorers.interface`: one small :class:`Scorer` interface (``names``, ``score(images)``) with
  adapters for the face scorers, the avatars factor classifier and a user's own entry point
  (``module:function``), as ``sfvq annotate`` uses them.

All take images as generators return them (float NCHW in [-1, 1]) or as uint8 NHWC numpy arrays. Nothing
is downloaded at run time; a missing package raises :class:`ScorerUnavailable` saying what to install.
Importing this package imports neither dlib nor Node.
"""

from sfvq.scorers._common import ScorerUnavailable, as_uint8_rgb
from sfvq.scorers.attributes import ATTRIBUTES, EXPRESSIONS, AttributeScorer, yaw_from_landmarks
from sfvq.scorers.identity import SAME_PERSON_THRESHOLD, IdentityEmbeddings, IdentityScorer
from sfvq.scorers.interface import (
    AvatarsScorer,
    FaceScorer,
    Scorer,
    ScorerError,
    load_user_scorer,
    make_scorer,
)
from sfvq.scorers.ssim import image_ssim, ssim

__all__ = [
    "ATTRIBUTES",
    "EXPRESSIONS",
    "SAME_PERSON_THRESHOLD",
    "AttributeScorer",
    "AvatarsScorer",
    "FaceScorer",
    "IdentityEmbeddings",
    "IdentityScorer",
    "Scorer",
    "ScorerError",
    "ScorerUnavailable",
    "as_uint8_rgb",
    "image_ssim",
    "load_user_scorer",
    "make_scorer",
    "ssim",
    "yaw_from_landmarks",
]
