"""SSIM: hand-computed cases, properties, scikit-image agreement, the scorers' image format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfvq.scorers import image_ssim, ssim
from sfvq.scorers.ssim import gaussian_window

C1 = (0.01 * 1.0) ** 2
C2 = (0.03 * 1.0) ** 2


def test_gaussian_window():
    g = gaussian_window(11, 1.5)
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert float(g[5]) == pytest.approx(1 / sum(math.exp(-(k**2) / 4.5) for k in range(-5, 6)))
    assert torch.equal(g, g.flip(0))
    with pytest.raises(ValueError, match="odd"):
        gaussian_window(10)


def test_constant_images_by_hand():
    # Constant a vs constant b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) * C2 / C2.
    a, b = 0.3, 0.7
    x = torch.full((1, 1, 16, 16), a)
    y = torch.full((1, 1, 16, 16), b)
    assert float(ssim(x, y)) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-6)


def test_one_bright_pixel_by_hand():
    # An 11x11 image (one window position): x constant 0.2, y the same with its centre raised by d.
    # With the centre's weight w = g[5]^2: mu_y = 0.2 + w d, var_y = w d^2 - (w d)^2, var_x = cov = 0.
    d = 0.5
    x = torch.full((1, 1, 11, 11), 0.2, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 5, 5] += d
    w = float(gaussian_window(11, 1.5)[5]) ** 2
    mx, my = 0.2, 0.2 + w * d
    var_y = w * d * d - (w * d) ** 2
    expected = (2 * mx * my + C1) / (mx * mx + my * my + C1) * C2 / (var_y + C2)
    assert float(ssim(x, y)) == pytest.approx(expected, rel=1e-9)
    assert ssim(x, y, full=True).shape == (1, 1, 1, 1)


def test_properties():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=gen)
    noise = torch.randn(3, 3, 32, 32, generator=gen)
    y = (x + 0.05 * noise).clamp(0, 1)
    z = (x + 0.2 * noise).clamp(0, 1)
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(ssim(x, y), ssim(y, x))
    s_small, s_big = ssim(x, y), ssim(x, z)
    assert (s_small < 1).all() and (s_big < s_small).all() and (s_big > -1).all()
    assert ssim(x[0], y[0]).shape == (1,)  # (C, H, W) accepted
    torch.testing.assert_close(ssim(x * 255, y * 255, data_range=255.0), s_small)


def test_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (dev extra) is the reference")
    rng = np.random.default_rng(3)
    a = rng.random((40, 48, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    ref = metrics.structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    ours = ssim(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1))
    assert float(ours) == pytest.approx(ref, abs=1e-10)


def test_bad_input():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=0)


def test_image_ssim_on_generated_faces(face_images):
    images, faces = face_images
    same = image_ssim(faces, faces)
    np.testing.assert_allclose(same, 1.0)
    mirror = image_ssim(faces, faces[:, :, ::-1])
    assert mirror.shape == (16,) and (mirror < 0.95).all() and (mirror > -1).all()
    np.testing.assert_allclose(image_ssim(images, faces[:, :, ::-1]), mirror)  # float NCHW == its uint8
    other = image_ssim(faces, np.roll(faces, 1, axis=0))  # different seeds
    assert other.mean() < same.mean()
    with pytest.raises(ValueError, match="differ in shape"):
        image_ssim(faces[:2], faces[:3])
