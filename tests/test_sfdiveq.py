"""SF-DiVeQ (the optional diveq package) as a fitter: the same kind of model as sfvq's own fitter."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sfvq import SFVQ
from sfvq.cli import main
from sfvq.datasets import make_spiral
from sfvq.fitting import fit_curve
from sfvq.sfdiveq import fit_sfdiveq, require_diveq

needs_diveq = pytest.mark.skipif(
    importlib.util.find_spec("diveq") is None, reason="the optional diveq package is not installed"
)

X = make_spiral(800, noise=0.02, turns=2.0, seed=0).astype(np.float32)  # (800, 2)


@needs_diveq
def test_fit_sfdiveq_gives_an_sfvq_with_every_bitrate() -> None:
    state = torch.get_rng_state()
    model = fit_sfdiveq(X, 4, epochs=2, batch_size=200, lr=0.02, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    assert isinstance(model, SFVQ) and sorted(model.codebooks_) == [2, 3, 4]
    assert all(model.codebooks_[b].shape == (2**b, 2) for b in (2, 3, 4))
    assert [len(h["loss"]) for h in model.history_] == [2, 2, 2]
    assert all(h["seconds"] > 0 for h in model.history_)
    mse = [h["mse"] for h in model.history_]
    assert mse[2] < mse[0] < model.total_variance_  # the curve fits, and better with more corners
    again = fit_sfdiveq(X, 4, epochs=2, batch_size=200, lr=0.02, seed=1)
    assert torch.equal(again.codebooks_[4], model.codebooks_[4])  # seeded


@needs_diveq
def test_fit_curve_dispatches_and_records_the_fitter() -> None:
    model = fit_curve(X, 3, epochs=2, batch_size=128, fitter="sfdiveq", metadata={"data": "spiral"})
    assert model.metadata_ == {"data": "spiral", "fitter": "sfdiveq"}
    with pytest.raises(ValueError, match="fitter must be"):
        fit_curve(X, 3, fitter="kmeans")
    with pytest.raises(ValueError, match="too few samples"):
        fit_sfdiveq(X[:5], 3, epochs=1, batch_size=4, lr=0.01)


@needs_diveq
def test_fit_cli_with_sfdiveq(tmp_path) -> None:
    np.save(tmp_path / "X.npy", X)
    r = CliRunner().invoke(
        main,
        ["fit", "--latents", str(tmp_path / "X.npy"), "--bits", "3", "--epochs", "2", "--batch-size", "128",
         "--fitter", "sfdiveq", "--quiet", "--outdir", str(tmp_path / "run")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    model = SFVQ.load(tmp_path / "run" / "model.safetensors")
    assert sorted(model.codebooks_) == [2, 3] and model.metadata_["fitter"] == "sfdiveq"
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    r = CliRunner().invoke(
        main, ["fit", "--latents", str(tmp_path / "X.npy"), "--fitter", "sfdiveq", "--resume",
               "--outdir", str(tmp_path / "run2")],
    )  # fmt: skip
    assert r.exit_code == 2 and "--resume needs --fitter sfvq" in r.output


def test_missing_diveq_names_the_install_command(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diveq", None)  # import diveq now raises ImportError
    with pytest.raises(ImportError, match="pip install diveq"):
        require_diveq()
    np.save(tmp_path / "X.npy", X)
    for args in (
        ["fit", "--latents", str(tmp_path / "X.npy"), "--fitter", "sfdiveq", "--outdir", str(tmp_path / "r")],
        ["run", "--network", "builtin:avatars-sg2", "--fitter", "sfdiveq", "--outdir", str(tmp_path / "r")],
    ):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "pip install diveq" in r.output, r.output
    assert not (tmp_path / "r").exists()
