"""Generated faces shared by the scorer tests (helpers for skipping are in scorer_support.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfvq.generators.base import to_uint8
from sfvq.generators.registry import load_generator
from sfvq.latents import z_for_seeds

SEEDS = list(range(16))


@pytest.fixture(scope="session")
def face_images() -> tuple[torch.Tensor, np.ndarray]:
    """16 faces from builtin:faces-dcgan (seeds 0-15): generator output (N, 3, 64, 64) and uint8 NHWC."""
    G = load_generator("builtin:faces-dcgan")
    z = torch.as_tensor(z_for_seeds(G, SEEDS))
    with torch.no_grad():
        images = G.synthesis(G.mapping(z))  # (16, 3, 64, 64) in [-1, 1]
    return images, to_uint8(images)
