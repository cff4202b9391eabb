"""Face alignment: the FFHQ crop square from landmarks, cropping, dlib on a real photo, no face found."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sfvq.align import (
    FFHQ,
    Framing,
    NoFaceError,
    align_face,
    anchor_points,
    crop_quad,
    detect_face,
    face_quad,
    fit_framing,
    framing_for,
)

pytest.importorskip("dlib")


def _landmarks(eye_left: tuple, eye_right: tuple, mouth: tuple) -> np.ndarray:
    """68 landmarks whose eyes (points 36-41, 42-47) and mouth corners (48, 54) centre on the given points."""
    lm = np.zeros((68, 2))
    lm[36:42] = eye_left
    lm[42:48] = eye_right
    lm[48] = np.array(mouth) - (5, 0)
    lm[54] = np.array(mouth) + (5, 0)
    return lm


def test_the_ffhq_square_of_an_upright_face() -> None:
    # eyes 40 px apart at y = 100, mouth 50 px below their centre: the eye term 2 * 40 = 80 is below the
    # mouth term 1.8 * 50 = 90, so the half side is 90; the centre lies 0.1 * 50 below the eyes.
    quad = face_quad(_landmarks((80, 100), (120, 100), (100, 150)))
    cx, cy = 100, 105
    assert quad == pytest.approx(
        np.array([[cx - 90, cy - 90], [cx - 90, cy + 90], [cx + 90, cy + 90], [cx + 90, cy - 90]])
    )


def test_the_square_turns_with_the_face_and_the_framing_moves_it() -> None:
    upright = face_quad(_landmarks((80, 100), (120, 100), (100, 150)))
    # the same face turned by 90 degrees (x -> -y): the square turns with it
    turn = np.array([[0, -1], [1, 0]])
    turned = face_quad(_landmarks(*(tuple(turn @ p) for p in [(80, 100), (120, 100), (100, 150)])))
    assert turned == pytest.approx(upright @ turn.T)
    framed = face_quad(
        _landmarks((80, 100), (120, 100), (100, 150)), Framing(sx=0.5, sy=2.0, dx=0.2, dy=-0.1)
    )
    centre = framed.mean(0)
    assert centre == pytest.approx([100 + 0.2 * 90, 105 - 0.1 * 90])
    assert np.ptp(framed[:, 0]) == pytest.approx(90) and np.ptp(framed[:, 1]) == pytest.approx(360)
    with pytest.raises(ValueError, match="68 landmarks"):
        face_quad(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="positive"):
        Framing(sx=0.0)


def test_crop_quad_cuts_the_square_and_extends_past_the_edge() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    whole = crop_quad(image, np.array([[0, 0], [0, 64], [64, 64], [64, 0]], dtype=float), 64)
    assert np.abs(np.asarray(whole, dtype=int) - arr).max() <= 1  # the identity crop
    left = crop_quad(image, np.array([[0, 0], [0, 32], [32, 32], [32, 0]], dtype=float), 32)
    assert np.abs(np.asarray(left, dtype=int) - arr[:32, :32]).max() <= 1
    # a square reaching past the photo is filled (reflection, blurred), not black
    out = np.asarray(crop_quad(Image.new("RGB", (40, 40), (200, 150, 100)), np.array(
        [[-40, -40], [-40, 80], [80, 80], [80, -40]], dtype=float), 30))  # fmt: skip
    assert out.shape == (30, 30, 3) and np.abs(out.astype(int) - (200, 150, 100)).max() <= 2


def test_fit_framing_recovers_a_known_framing() -> None:
    ffhq = np.array([[[0.38, 0.48], [0.62, 0.48], [0.5, 0.69]]])
    truth = Framing(sx=0.8, sy=0.6, dx=0.02, dy=-0.04)
    # where a generator framed like ``truth`` shows these points: p' = (p - 0.5 - d / 2) / s + 0.5
    shift = np.array([truth.dx, truth.dy]) / 2
    scale = np.array([truth.sx, truth.sy])
    gen = (ffhq - 0.5 - shift) / scale + 0.5
    got = fit_framing(ffhq, np.repeat(gen, 3, axis=0))
    assert (got.sx, got.sy, got.dx, got.dy) == pytest.approx((0.8, 0.6, 0.02, -0.04), abs=1e-3)
    assert framing_for("builtin:faces-dcgan") != FFHQ and framing_for("some.pkl") == FFHQ


def test_a_real_photo_is_aligned_with_its_eyes_level() -> None:
    data = pytest.importorskip("skimage.data")
    photo = data.astronaut()  # (512, 512, 3): Eileen Collins, upright
    face = detect_face(photo)
    assert face.landmarks.shape == (68, 2) and face.faces_found >= 1
    aligned = align_face(photo, 128)
    assert aligned.image.size == (128, 128)
    again = anchor_points(detect_face(aligned.image).landmarks) / 128  # eyes and mouth in the crop
    assert abs(again[0, 1] - again[1, 1]) < 0.02  # the eyes level
    assert again[:, 0].mean() == pytest.approx(0.5, abs=0.03)  # the face centred
    assert np.hypot(*(again[1] - again[0])) == pytest.approx(0.25, abs=0.02)  # FFHQ: eyes a quarter apart
    assert aligned.describe()["faces_found"] == face.faces_found


def test_no_face_is_a_clear_error() -> None:
    blank = np.full((200, 200, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face found in the 200x200 image"):
        align_face(blank, 64)
