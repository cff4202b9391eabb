"""Latency of `sfvq explore`'s live image (GET /api/image) against a bare render in the same process.

    python -m benchmarks.explore_latency [--run runs/demo] [--n 40]

Without --run, a small run on builtin:faces-dcgan is made in a temporary folder (2,000 latents, 6 bits).
The issue's target is under 200 ms an image on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _make_run(run: Path) -> Path:
    from sfvq import SFVQ
    from sfvq.generators.registry import load_generator
    from sfvq.spaces import LatentSpace

    space = LatentSpace(load_generator("builtin:faces-dcgan"), "features")
    X = space.sample(2000, seed=0, progress=False)
    model = SFVQ(6, random_state=0, verbose=False).fit(X)
    model.metadata_ = {"network": "builtin:faces-dcgan", "space": space.describe()}
    model.save(run / "model.safetensors")
    space.save(run)
    return run


def _median_ms(fn, n: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args(argv)

    import torch
    from starlette.testclient import TestClient

    from sfvq.explore.app import Explorer, create_app

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or _make_run(Path(tmp))
        explorer = Explorer.open(run)
        client = TestClient(create_app(explorer), base_url="http://127.0.0.1")
        bits = max(explorer.model.codebooks_)
        K = 2**bits
        ts = [(i * 0.618 * K) % (K - 1) for i in range(args.n + 1)]
        codebook = explorer.model.codebooks_[bits]

        def bare(i: int) -> None:  # the generator alone: one point of the curve rendered, no HTTP, no PNG
            from sfvq import curve

            explorer.space.render(curve.decode(codebook, torch.tensor([ts[i]])))

        def served(i: int) -> None:
            r = client.get(f"/api/image?bits={bits}&t={ts[i]:.3f}")
            assert r.status_code == 200

        bare_ms = _median_ms(bare, args.n)
        served_ms = _median_ms(served, args.n)
    print(
        f"\n## sfvq explore: live image latency ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"torch threads {torch.get_num_threads()}, median of {args.n})\n"
    )
    print("| what | ms per image | ratio |")
    print("|---|---:|---:|")
    print(f"| bare render (generator only) | {bare_ms:.1f} | 1.00x |")
    print(f"| GET /api/image (render + PNG + HTTP) | {served_ms:.1f} | {served_ms / bare_ms:.2f}x |")
    print(f"\ntarget: under 200 ms an image; run: {run if args.run else 'temporary builtin:faces-dcgan run'}")


if __name__ == "__main__":
    main()
