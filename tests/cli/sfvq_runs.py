"""Test helper: tiny run directories (model + space + latents) on the test generators.

A run follows the run-directory contract: ``model.safetensors`` (metadata_ with network, space, data),
``space.json`` (+ PCA for feature spaces), ``latents.npy`` + ``latents.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generators"))

from pkl_writer import write_stylegan_pkl  # noqa: E402

SG2_FIXTURE = "fixtures/stylegan/sg2ada_uncond"


def sg2_pickle(shared_dir: Path, out_dir: Path) -> Path:
    """A StyleGAN2 .pkl (8 style layers, 32-D W, 32x32 images) written from the shared fixture."""
    return write_stylegan_pkl(shared_dir / SG2_FIXTURE, out_dir / "sg2.pkl")


def make_run(
    run_dir: Path,
    network: str,
    kind: str,
    *,
    n: int = 400,
    bits: int = 4,
    seed: int = 0,
    pca_max: int = 16,
    truncation_psi: float = 1.0,
) -> tuple[Any, Any, np.ndarray]:
    """Sample ``n`` latents of ``network`` in space ``kind``, fit a ``bits``-bit curve, write the run."""
    from sfvq import SFVQ
    from sfvq.generators.registry import load_generator
    from sfvq.io import save_npy_with_sidecar
    from sfvq.spaces import LatentSpace

    G = load_generator(network)
    space = LatentSpace(G, kind, truncation_psi=truncation_psi)
    X = space.sample(n, seed=seed, progress=False, pca_max=pca_max)  # (n, dim)
    model = SFVQ(bits, epochs=2, batch_size=256, random_state=seed, verbose=False).fit(X)
    model.metadata_ = {"network": network, "space": space.describe(), "data": {"name": "test", "n": n}}
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.safetensors")
    space.save(run_dir)
    save_npy_with_sidecar(run_dir / "latents.npy", X, {"space": space.describe(), "seed": seed})
    return model, space, X


def sg2_test_run(shared_dir: Path, tmp_path_factory: Any) -> tuple[Path, Any, Any, np.ndarray]:
    """A tiny run in W of the sg2ada_uncond fixture: (run dir, model, space, latents)."""
    base = tmp_path_factory.mktemp("sg2")
    model, space, X = make_run(base / "run", str(sg2_pickle(shared_dir, base)), "w")
    return base / "run", model, space, X


def dcgan_test_run(tmp_path_factory: Any) -> tuple[Path, Any, Any, np.ndarray]:
    """A tiny run in the built-in DCGAN's feature space: (run dir, model, space, latents)."""
    base = tmp_path_factory.mktemp("dcgan")
    model, space, X = make_run(base / "run", "builtin:faces-dcgan", "features", n=300)
    return base / "run", model, space, X


def invoke(*args: Any) -> Any:
    """Run the sfvq CLI in-process with stringified arguments."""
    from click.testing import CliRunner

    from sfvq.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])
