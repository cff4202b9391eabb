"""face-api attribute scorer: yaw geometry, ranges on generated faces, mirror = opposite yaw, the process."""

from __future__ import annotations

import numpy as np
import pytest
from scorer_support import scorer_or_skip

from sfvq.scorers import ATTRIBUTES, EXPRESSIONS, AttributeScorer, ScorerUnavailable, yaw_from_landmarks
from sfvq.scorers import attributes as attributes_module

# iBUG 68-point index of each point's mirror partner (jaw, brows, nose, eyes, mouth).
MIRROR = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


def frontal_landmarks() -> np.ndarray:
    """A left-right symmetric 68-point face (1, 68, 2) centred on x = 50."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(20, 80, size=(68, 2))
    pts[0:8, 0] = rng.uniform(15, 45, size=8)  # the jaw's left half lies left of the midline
    pts[MIRROR[MIRROR > np.arange(68)]] = pts[np.arange(68)[MIRROR > np.arange(68)]] * [-1, 1] + [100, 0]
    pts[[27, 28, 29, 30, 33, 51, 57, 62, 66, 8], 0] = 50.0  # points on the midline
    return pts[None]


def test_mirror_table_is_an_involution():
    assert sorted(MIRROR) == list(range(68))
    assert (MIRROR[MIRROR] == np.arange(68)).all()


def test_yaw_geometry():
    L = frontal_landmarks()
    assert yaw_from_landmarks(L)[0] == pytest.approx(0.0, abs=1e-12)
    turned = L.copy()
    turned[:, 27:36, 0] += 6.0  # the nose moves towards the image's right
    yaw = yaw_from_landmarks(turned)[0]
    assert yaw > 0.05
    mirrored = turned.copy()
    mirrored[..., 0] = 100.0 - mirrored[..., 0]  # mirror image, points re-labelled as a detector would
    assert yaw_from_landmarks(mirrored[:, MIRROR])[0] == pytest.approx(-yaw)
    assert yaw_from_landmarks(mirrored)[0] == pytest.approx(-yaw)  # labels kept: still the opposite sign
    scaled = turned * 3.0 + 7.0  # scale and shift invariant
    assert yaw_from_landmarks(scaled)[0] == pytest.approx(yaw)
    with pytest.raises(ValueError, match="68, 2"):
        yaw_from_landmarks(np.zeros((2, 5, 2)))


@pytest.fixture(scope="module")
def scorer():
    s = scorer_or_skip(AttributeScorer)
    yield s
    s.close()


@pytest.fixture(scope="module")
def scored(scorer, face_images):
    """Scores of the 16 faces and of their mirror images (one Node process for the whole module)."""
    _, faces = face_images
    return scorer.score(faces, return_landmarks=True), scorer.score(faces[:, :, ::-1])


def test_ranges_on_generated_faces(scored):
    out, _ = scored
    for key in (*ATTRIBUTES, "detected", "det_score", *(f"expression_{e}" for e in EXPRESSIONS)):
        assert out[key].shape == (16,), key
    assert ((out["age"] > 0) & (out["age"] < 100)).all(), out["age"]
    for key in ("gender", "smile", *(f"expression_{e}" for e in EXPRESSIONS)):
        assert ((out[key] >= 0) & (out[key] <= 1)).all(), (key, out[key])
    total = sum(out[f"expression_{e}"] for e in EXPRESSIONS)
    np.testing.assert_allclose(total, 1.0, atol=1e-3)  # a softmax over the seven expressions
    np.testing.assert_array_equal(out["smile"], out["expression_happy"])
    assert np.isfinite(out["yaw"]).all() and (np.abs(out["yaw"]) < 3).all()
    assert out["detected"].dtype == bool and out["detected"].sum() >= 8
    assert np.isnan(out["det_score"][~out["detected"]]).all()
    assert ((out["det_score"][out["detected"]] > 0) & (out["det_score"][out["detected"]] <= 1)).all()
    L = out["landmarks"]
    assert L.shape == (16, 68, 2) and (L > -16).all() and (L < 80).all()  # on the 64 px face
    assert out["age"].std() > 1 and out["gender"].std() > 0.05  # the nets see different faces


def test_mirror_flips_yaw(scored):
    out, mirrored = scored
    turned = np.abs(out["yaw"]) > 0.15
    assert turned.sum() >= 4, out["yaw"]
    assert (np.sign(mirrored["yaw"][turned]) == -np.sign(out["yaw"][turned])).all(), (
        out["yaw"][turned],
        mirrored["yaw"][turned],
    )
    assert np.corrcoef(out["yaw"], -mirrored["yaw"])[0, 1] > 0.8


def test_batching_and_tensor_input_give_the_same_scores(scorer, face_images, scored):
    images, _ = face_images
    out, _ = scored
    scorer.batch_size = 3
    try:
        again = scorer.score(images[:7])  # generator output, sent as three requests
    finally:
        scorer.batch_size = 32
    for key in (*ATTRIBUTES, "detected"):
        np.testing.assert_allclose(again[key], out[key][:7], atol=1e-5, err_msg=key)


def test_noise_images_do_not_crash(scorer):
    noise = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    before = scorer.images_seen
    out = scorer.score(noise)
    assert out["age"].shape == (2,) and np.isfinite(out["yaw"]).all()
    assert scorer.images_seen == before + 2
    assert scorer.fallbacks >= int((~out["detected"]).sum())


def test_large_images_are_downscaled_and_landmarks_scaled_back(scorer, face_images, scored):
    _, faces = face_images
    out, _ = scored
    big = faces[:3].repeat(4, axis=1).repeat(4, axis=2)  # (3, 256, 256, 3), each pixel a 4x4 block
    scorer.max_side = 64  # the box filter turns the blocks back into the 64 px faces exactly
    try:
        again = scorer.score(big, return_landmarks=True)
    finally:
        scorer.max_side = 512
    np.testing.assert_allclose(again["landmarks"], out["landmarks"][:3] * 4, atol=1e-4)
    for key in ATTRIBUTES:
        np.testing.assert_allclose(again[key], out[key][:3], atol=1e-5, err_msg=key)


def test_ssd_detector_runs(face_images):
    with scorer_or_skip(lambda: AttributeScorer(detector="ssd")) as s:
        out = s.score(face_images[1][:1])
    assert 0 < out["age"][0] < 100 and np.isfinite(out["yaw"][0])


def test_closed_or_dead_process_is_reported(face_images):
    s = scorer_or_skip(AttributeScorer)
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        s.score(face_images[1][:1])
    s = scorer_or_skip(AttributeScorer)
    s._proc.kill()
    s._proc.wait()
    with pytest.raises(RuntimeError, match="not running|exited"):
        s.score(face_images[1][:1])
    s.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="detector"):
        AttributeScorer(detector="yolo")
    with pytest.raises(ValueError, match="multiple of 32"):
        AttributeScorer(input_size=100)
    with pytest.raises(ValueError, match="max_side"):
        AttributeScorer(max_side=10)


def test_missing_node_modules_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("SFVQ_NODE_MODULES", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScorerUnavailable, match="install-scorers.sh"):
        attributes_module.find_node_modules(start=tmp_path)
    with pytest.raises(ScorerUnavailable, match="install-scorers.sh"):
        AttributeScorer(node_modules=tmp_path)
