"""`sfvq fit` and `sfvq demo` end to end through click."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sfvq import SFVQ
from sfvq.cli import main


@pytest.fixture
def latents(tmp_path):
    X = np.random.default_rng(0).standard_normal((800, 6)).astype(np.float32)
    path = tmp_path / "X.npy"
    np.save(path, X)
    return path, X


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_fit_writes_everything(latents, tmp_path):
    path, X = latents
    out = tmp_path / "run"
    r = _run(
        "fit",
        "--latents",
        path,
        "--bits",
        4,
        "--epochs",
        2,
        "--batch-size",
        128,
        "--seed",
        3,
        "--quiet",
        "--outdir",
        out,
    )
    assert r.exit_code == 0, r.output
    assert {"model.safetensors", "summary.json", "loss.png", "curve.png", "options.json"} <= {
        p.name for p in out.iterdir()
    }
    assert "NMSE" in r.output and "used segments" in r.output
    model = SFVQ.load(out / "model.safetensors")
    assert sorted(model.codebooks_) == [2, 3, 4] and model.random_state == 3
    summary = json.loads((out / "summary.json").read_text())
    assert [s["bits"] for s in summary["stages"]] == [2, 3, 4]
    assert summary["stages"][-1]["nmse"] == pytest.approx(-model.score(X) / float(X.var(0).sum()), rel=1e-4)
    opts = json.loads((out / "options.json").read_text())
    assert opts["command"] == "fit" and opts["options"]["bits"] == 4 and "version" in opts
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_fit_bad_inputs(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy")
    r = _run("fit", "--latents", bad, "--outdir", tmp_path / "o")
    assert r.exit_code == 2 and "not a plain numeric .npy file" in r.output
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = _run("fit", "--latents", obj, "--outdir", tmp_path / "o")
    assert r.exit_code == 2 and "not a plain numeric .npy file" in r.output
    nan = tmp_path / "nan.npy"
    X = np.ones((100, 3), np.float32)
    X[5, 0] = np.nan
    np.save(nan, X)
    r = _run("fit", "--latents", nan, "--quiet", "--bits", 2, "--outdir", tmp_path / "o")
    assert r.exit_code == 2 and "NaN or inf in 1 of 100 rows" in r.output
    assert not (tmp_path / "o" / "model.safetensors").exists()
    wplus = tmp_path / "wplus.npy"
    np.save(wplus, np.zeros((10, 4, 3), np.float32))
    r = _run("fit", "--latents", wplus, "--outdir", tmp_path / "o")
    assert r.exit_code == 2 and "(N, layers, D)" in r.output
    r = _run("fit", "--latents", tmp_path / "missing.npy", "--outdir", tmp_path / "o")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = _run("fit", "--latents", nan, "--bits", 17, "--outdir", tmp_path / "o")
    assert r.exit_code == 2 and "--bits" in r.output


def test_demo_runs(tmp_path):
    out = tmp_path / "demo"
    r = _run("demo", "--bits", 3, "--epochs", 1, "--quiet", "--outdir", out)
    assert r.exit_code == 0, r.output
    assert (out / "latents.npy").exists() and (out / "latents.json").exists()
    assert SFVQ.load(out / "model.safetensors").codebook_.shape == (8, 2)


def test_fit_into_the_folder_of_its_latents_keeps_them(tmp_path):
    """`sfvq sample --outdir R` then `sfvq fit --latents R/latents.npy --outdir R`: the new run replaces
    the folder whole, and the latents it was fitted to stay in it, stamped with the run's id."""
    from sfvq.runs import Run, run_ids

    out = tmp_path / "r"
    r = _run("sample", "--network", "builtin:faces-dcgan", "--space", "z", "--n", 300, "--outdir", out)
    assert r.exit_code == 0, r.output
    X = np.load(out / "latents.npy")
    for _ in range(2):  # the second time, the latents are those of the run being replaced
        r = _run(
            "fit", "--latents", out / "latents.npy", "--bits", 2, "--epochs", 1, "--quiet", "--outdir", out
        )
        assert r.exit_code == 0, r.output
        np.testing.assert_array_equal(np.load(out / "latents.npy"), X)
        ids = run_ids(out)
        assert set(ids) == {"model.safetensors", "options.json", "summary.json", "latents.json"}
        assert len(set(ids.values())) == 1
        assert json.loads((out / "latents.json").read_text())["space"] == "z"  # the sample's sidecar, stamped
        assert Run.open(out).latents.shape == X.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
