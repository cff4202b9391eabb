"""`sfvq quality`: every map-quality measure of a run's bitrates and of the ordered baselines, written to
quality.json in the run, with a recommended bitrate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sfvq.cli import main
from sfvq.datasets import make_spiral

MEASURES = {
    "mse",
    "mean_distance",
    "topographic_error",
    "kaski_lagus",
    "trustworthiness",
    "continuity",
    "usage_kl",
    "sparseness",
    "entropy",
    "smoothness",
    "u_profile",
}


def _invoke(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-bit curve fitted by `sfvq fit` to 600 points of a 2-D spiral (the model records the latents)."""
    base = tmp_path_factory.mktemp("quality")
    np.save(base / "X.npy", make_spiral(600, noise=0.02, turns=2.0, seed=0).astype(np.float32))
    r = _invoke("fit", "--latents", base / "X.npy", "--bits", 3, "--epochs", 2, "--batch-size", 128,
                "--quiet", "--outdir", base / "run")  # fmt: skip
    assert r.exit_code == 0, r.output
    return base / "run"


def test_quality_writes_quality_json(tiny_run: Path) -> None:
    r = _invoke("quality", "--run", tiny_run, "--subsample", 200, "--quiet")
    assert r.exit_code == 0, r.output
    assert "updated" not in r.output and not (tiny_run / "report.html").exists()  # no report to update
    q = json.loads((tiny_run / "quality.json").read_text())
    assert set(q["bits"]) == {"2", "3"}
    for b, m in q["bits"].items():
        assert set(m) == MEASURES
        assert len(m["u_profile"]) == 2 ** int(b) - 1
        assert 0 <= m["topographic_error"] <= 1 and 0 <= m["trustworthiness"] <= 1
        assert m["entropy"] + m["usage_kl"] == pytest.approx(int(b))
    assert set(q["baselines"]) == {"kmeans_tour", "som", "pca_order"}
    for per in q["baselines"].values():
        assert set(per) == {"2", "3"} and all(set(m) == MEASURES for m in per.values())
    assert q["recommended_bits"] in (2, 3)
    assert f"{q['recommended_bits']} bits" in q["recommendation"]
    assert f"recommended: {q['recommended_bits']} bits" in r.output
    assert "curve" in r.output and "SOM" in r.output and "quality.json" in r.output
    assert not [p.name for p in tiny_run.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_quality_without_baselines(tiny_run: Path, tmp_path: Path) -> None:
    r = _invoke("quality", "--run", tiny_run / "model.safetensors", "--no-baselines", "--quiet")
    assert r.exit_code == 0, r.output
    q = json.loads((tiny_run / "quality.json").read_text())
    assert q["baselines"] == {} and set(q["bits"]) == {"2", "3"}


def test_quality_needs_the_latents(tiny_run: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    lone.mkdir()
    from sfvq import SFVQ

    model = SFVQ.load(tiny_run / "model.safetensors")
    model.metadata_ = {}  # no recorded data path
    model.save(lone / "model.safetensors")
    r = _invoke("quality", "--run", lone, "--quiet")
    assert r.exit_code == 2 and "has no latents.npy" in r.output
    r = _invoke("quality", "--run", tmp_path / "missing", "--quiet")
    assert r.exit_code == 2 and "--run" in r.output


def test_quality_and_annotate_update_the_report_of_a_run(shared_dir: Path, tmp_path: Path) -> None:
    """A main-job run has report.json: `sfvq quality` draws report.html again with its section, so the
    page never lags behind the files beside it (a fit-only run, without a report, is left alone above)."""
    from sfvq_runs import sg2_pickle

    from sfvq.pipeline import RunConfig, run_pipeline

    net = str(sg2_pickle(shared_dir, tmp_path))
    out = tmp_path / "run"
    run_pipeline(
        RunConfig(network=net, outdir=out, bits=2, n=128, edit_seeds=(0,), walk_frames=2, progress=False)
    )
    before = (out / "report.html").read_text()
    assert "sfvq quality --run" in before  # the absent section says how to make it
    r = _invoke("quality", "--run", out, "--subsample", 100, "--no-baselines", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"updated {out / 'report.html'}" in r.output
    after = (out / "report.html").read_text()
    rec = json.loads((out / "quality.json").read_text())["recommendation"]
    assert after != before and rec.split(".")[0] in after
    r = _invoke("annotate", "--run", out, "--bits", 2, "--seeds", 0, "--quiet")
    assert r.exit_code == 0, r.output
    assert f"updated {out / 'report.html'}" in r.output
    annotated = (out / "report.html").read_text()
    heat = json.loads((out / "annotations.json").read_text())["bits"]["2"][0]["heat"]
    assert annotated != after and heat.startswith("annotations/")
