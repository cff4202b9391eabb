"""Fixtures of the explore tests: a tiny run directory on the test StyleGAN2 (W space, 8 style layers),
the app on it, and the same app served by uvicorn on a free loopback port in a background thread."""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generators"))

from pkl_writer import write_stylegan_pkl  # noqa: E402

SG2_FIXTURE = "fixtures/stylegan/sg2ada_uncond"
BITS = 3  # the tiny run has bitrates 2 and 3 (8 corners, 7 segments)


def make_tiny_run(run: Path, pkl: Path, bits: int = BITS, n: int = 256) -> Path:
    """A run directory as the contract describes: model.safetensors (metadata network + space),
    space.json and latents.npy (+ sidecar), fitted on ``n`` W latents of the StyleGAN2 pickle ``pkl``."""
    from sfvq import SFVQ
    from sfvq.generators.registry import load_generator
    from sfvq.io import save_npy_with_sidecar
    from sfvq.spaces import LatentSpace

    run.mkdir(parents=True, exist_ok=True)
    G = load_generator(str(pkl))
    space = LatentSpace(G, "w")
    X = space.sample(n, seed=0, progress=False)  # (n, 32)
    model = SFVQ(bits, epochs=1, batch_size=128, random_state=0, verbose=False).fit(X)
    model.metadata_ = {"network": str(pkl), "space": space.describe(), "data": {"n": n}}
    model.save(run / "model.safetensors")
    space.save(run)
    save_npy_with_sidecar(run / "latents.npy", X, {"space": space.describe(), "seed": 0})
    return run


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """Made once a session; tests work on copies (they write into their run)."""
    root = tmp_path_factory.mktemp("explore-template")
    pkl = write_stylegan_pkl(shared_dir / SG2_FIXTURE, root / "sg2.pkl")
    return make_tiny_run(root / "run", pkl)


def copy_run(template: Path, dest: Path) -> Path:
    """A copy of a run directory (the generator pickle it records stays where it is)."""
    shutil.copytree(template, dest)
    return dest


@pytest.fixture(scope="module")
def tiny_run(tiny_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the tiny run for each test module."""
    return copy_run(tiny_run_template, tmp_path_factory.mktemp("explore") / "run")


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    from sfvq.explore.app import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
