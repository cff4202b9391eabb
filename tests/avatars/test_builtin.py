"""The shipped builtin:avatars-sg2 and its classifier: they load, read fresh renders, run the main job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sfvq.avatars import BUILTIN_NAME, CLASSIFIER_FILE, GENERATOR_FILE, WEIGHTS_DIR
from sfvq.avatars.classifier import load_avatars_classifier, uint8_to_input
from sfvq.avatars.dataset import factor_vocabularies, render_faces
from sfvq.generators.registry import generator_sha256, load_generator
from sfvq.io import sha256_file


def test_shipped_generator_loads_and_says_how_it_was_made() -> None:
    G = load_generator(BUILTIN_NAME)
    assert G.num_ws == 8 and G.w_dim == 128 and G.img_resolution == 32 and "w" in G.spaces
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = G.synthesis(G.mapping(z))
    assert img.shape == (4, 3, 32, 32) and torch.isfinite(img).all()
    assert img.std(dim=0).mean() > 0.05  # different latents, different faces
    weights = WEIGHTS_DIR / GENERATOR_FILE
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["sha256"] == sha256_file(weights) == generator_sha256(BUILTIN_NAME)
    assert meta["bytes"] == weights.stat().st_size <= 20 * 2**20
    assert meta["training"]["nimg"] >= 300_000 and meta["dataset"]["seed"] == 0
    assert meta["dataset"]["count"] == 20_000
    assert set(meta["quality"]["factors"]) == set(factor_vocabularies())


def test_shipped_classifier_reads_fresh_renders() -> None:
    clf = load_avatars_classifier()
    vocab = factor_vocabularies()
    assert {k: list(v) for k, v in clf.vocab.items()} == {k: list(v) for k, v in vocab.items()}
    assert (WEIGHTS_DIR / CLASSIFIER_FILE).with_suffix(".json").is_file()
    images, factors = render_faces(99, range(24), (32,), workers=1, progress=False)  # not in the data set
    probs = clf.predict_proba(uint8_to_input(images[32]))
    acc = {
        k: float(np.mean([vocab[k][int(i)] == f[k] for i, f in zip(p.argmax(1), factors, strict=True)]))
        for k, p in probs.items()
    }
    assert np.mean(list(acc.values())) > 0.85, acc
    assert acc["background"] > 0.9 and acc["skin"] > 0.8


def test_main_job_runs_on_the_builtin(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sfvq.cli import main

    out = tmp_path / "run"
    args = ["run", "--network", BUILTIN_NAME, "--bits", "4", "--n", "2000", "--outdir", str(out), "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"]["kind"] == "w"
    four = next(s for s in summary["smoothness"] if s["bits"] == 4)
    assert four["sfvq_image"] < four["kmeans_image"]  # neighbouring corners look alike; k-means's do not
    assert (out / "report.html").is_file() and (out / "maps" / "map_4bit.png").is_file()
