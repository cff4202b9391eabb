"""dlib identity scorer: embeddings of generated faces, mirror vs other seeds, fallback, missing packages."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from scorer_support import scorer_or_skip

from sfvq.scorers import SAME_PERSON_THRESHOLD, IdentityScorer, ScorerUnavailable
from sfvq.scorers import identity as identity_module


@pytest.fixture(scope="module")
def scorer() -> IdentityScorer:
    return scorer_or_skip(IdentityScorer)


@pytest.fixture(scope="module")
def embedded(scorer, face_images):
    """Embeddings of the 16 faces and of their mirror images."""
    _, faces = face_images
    return scorer.analyse(faces), scorer.analyse(faces[:, :, ::-1])


def test_embeddings_shape_and_values(embedded):
    plain, _ = embedded
    assert plain.embeddings.shape == (16, 128) and plain.embeddings.dtype == np.float32
    assert np.isfinite(plain.embeddings).all()
    norms = np.linalg.norm(plain.embeddings, axis=1)
    assert (norms > 0.1).all(), norms  # a real descriptor, not zeros
    assert plain.detected.dtype == bool and plain.boxes.shape == (16, 4)
    assert np.isnan(plain.scores[~plain.detected]).all() and np.isfinite(plain.scores[plain.detected]).all()
    assert plain.detected.sum() >= 8, "dlib's detector should find most builtin faces after upscaling"
    left, top, right, bottom = plain.boxes.T
    assert ((right > left) & (bottom > top)).all()


def test_mirror_is_the_same_person_other_seeds_are_not(scorer, embedded):
    plain, mirrored = embedded
    d_mirror = scorer.distance(plain.embeddings, mirrored.embeddings)  # (16,)
    assert d_mirror.shape == (16,)
    assert d_mirror.max() < SAME_PERSON_THRESHOLD, d_mirror
    assert d_mirror.mean() < 0.6 * SAME_PERSON_THRESHOLD, d_mirror
    e = plain.embeddings
    d_pairs = scorer.distance(e[:, None], e[None])  # (16, 16)
    assert np.allclose(np.diag(d_pairs), 0)
    d_other = d_pairs[~np.eye(16, dtype=bool)]
    assert d_other.mean() > 1.5 * d_mirror.mean(), (d_other.mean(), d_mirror.mean())
    assert d_other.mean() > d_mirror.max()


def test_tensor_input_matches_uint8_and_distances(scorer, face_images, embedded):
    images, faces = face_images
    plain, mirrored = embedded
    np.testing.assert_allclose(scorer.embed(images[:3]), plain.embeddings[:3], atol=1e-6)
    d = scorer.distances(faces[:4], faces[:4, :, ::-1])
    np.testing.assert_allclose(d, scorer.distance(plain.embeddings[:4], mirrored.embeddings[:4]), atol=1e-5)


def test_no_face_falls_back_to_the_fixed_box(scorer):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)  # what tiny StyleGAN fixtures make
    grey = np.full((1, 32, 32, 1), 128, np.uint8)
    before = (scorer.images_seen, scorer.fallbacks)
    out = scorer.analyse(np.concatenate([noise, np.repeat(grey, 3, axis=-1)]))
    assert out.embeddings.shape == (4, 128) and np.isfinite(out.embeddings).all()
    assert not out.detected.any() and out.n_fallback == 4
    assert (scorer.images_seen, scorer.fallbacks) == (before[0] + 4, before[1] + 4)
    l, t, r, b = scorer.fallback_box
    np.testing.assert_allclose(out.boxes, np.tile([l * 32, t * 32, r * 32, b * 32], (4, 1)), atol=0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="landmarks"):
        IdentityScorer(landmarks=7)
    with pytest.raises(ValueError, match="fallback_box"):
        IdentityScorer(fallback_box=(0.5, 0.2, 0.4, 0.9))
    with pytest.raises(ValueError, match="128-D"):
        IdentityScorer.distance(np.zeros((2, 64)), np.zeros((2, 64)))


def test_bad_images(scorer):
    with pytest.raises(ValueError, match="uint8"):
        scorer.embed(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="N, H, W, 3"):
        scorer.embed(np.zeros((1, 64, 64, 4), np.uint8))


def test_missing_model_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "face_recognition_models" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ScorerUnavailable, match=r"sfvq\[scorers\]"):
        identity_module.dlib_models_dir()


def test_missing_dlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ScorerUnavailable, match=r"dlib-bin.*sfvq\[scorers\]"):
        IdentityScorer()


def test_missing_scorer_skips_or_fails_as_ci_asks(monkeypatch):
    def unavailable():
        raise ScorerUnavailable("not installed")

    monkeypatch.delenv("SFVQ_REQUIRE_SCORERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        scorer_or_skip(unavailable)
    monkeypatch.setenv("SFVQ_REQUIRE_SCORERS", "1")
    with pytest.raises(pytest.fail.Exception, match="SFVQ_REQUIRE_SCORERS=1.*not installed"):
        scorer_or_skip(unavailable)
