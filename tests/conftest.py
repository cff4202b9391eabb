"""Suite-wide settings: one torch thread.

The tensors in these tests are small; with two threads on two shared cores, OpenMP's spinning threads
made a fit hundreds of times slower whenever any other process was busy (0.24 s vs 10.5 s measured).
"""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder beside the repository (fixtures and docs)."""
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need the shared fixtures beside the repository")
    return SHARED
