"""Built-in synthetic data sets with known structure, for demos, tests and benchmarks."""

from __future__ import annotations

import math

import numpy as np


def make_spiral(n: int = 20_000, noise: float = 0.02, turns: float = 2.0, seed: int = 0) -> np.ndarray:
    """A noisy 2-D spiral: ``r = 0.1 + t``, ``theta = 2 pi turns t`` with t ~ U[0, 1) -> (n, 2) float32."""
    rng = np.random.default_rng(seed)
    t = rng.random(n)
    r = 0.1 + t
    theta = 2 * math.pi * turns * t
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return (x + noise * rng.standard_normal(x.shape)).astype(np.float32)


def spiral_points(t: np.ndarray, turns: float = 2.0) -> np.ndarray:
    """Noise-free points of :func:`make_spiral`'s curve at parameters t in [0, 1] -> (len(t), 2)."""
    r = 0.1 + t
    theta = 2 * math.pi * turns * t
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def make_aniso(n: int = 100_000, dim: int = 512, seed: int = 0) -> np.ndarray:
    """Anisotropic Gaussian: ``x = (g * s) @ Q.T + m``, ``s_i = (i+1)^-0.5``, Q a random rotation,
    ``m = 0.5 N(0, I)`` -> (n, dim) float32. Total variance is ``sum_i 1/(i+1)``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q *= np.sign(np.diag(r))  # a uniformly random rotation
    s = (np.arange(dim) + 1.0) ** -0.5
    m = 0.5 * rng.standard_normal(dim)
    g = rng.standard_normal((n, dim)).astype(np.float32)
    return ((g * s.astype(np.float32)) @ q.T.astype(np.float32) + m.astype(np.float32)).astype(np.float32)
