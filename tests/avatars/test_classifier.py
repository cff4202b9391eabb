"""The factor classifier: it learns a few steps on renders, reports per-factor held-out accuracy, saves and
loads, reads generator-style inputs, and the CLI writes its table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sfvq.avatars import CLASSIFIER_FILE
from sfvq.avatars.classifier import (
    ClassifierError,
    FactorClassifier,
    evaluate,
    factor_confidence,
    load_avatars_classifier,
    load_classifier,
    save_classifier,
    split_indices,
    train_classifier,
)
from sfvq.avatars.dataset import build_dataset, load_dataset
from sfvq.cli import main


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clf") / "data"
    path, _ = build_dataset(out, count=48, seed=1, resolutions=(16,), workers=1, progress=False)
    return path


def _colour_world(n: int = 96, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Flat images whose colour channel that is bright is the label: a factor a CNN learns in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    other = rng.integers(0, 2, n)
    images = np.full((n, 16, 16, 3), 30, np.uint8)
    images[np.arange(n), :, :, labels] = 220
    images[other == 1, :8] //= 2  # a second factor: top half darker
    return images, {"colour": labels, "top": other}, {"colour": ("r", "g", "b"), "top": ("same", "dark")}


def test_learns_a_simple_world_and_reports_per_factor_accuracy() -> None:
    images, codes, vocab = _colour_world()
    model, report = train_classifier(images, codes, vocab, epochs=40, batch=16, lr=3e-3, seed=0, holdout=0.25)
    assert set(report["heldout"]) == {"colour", "top"}
    for k in vocab:
        row = report["heldout"][k]
        assert row["accuracy"] >= 0.9, report
        assert 0 < row["majority"] <= 1 and row["confidence"] > 0.5
    assert report["last_loss"] < report["first_loss"]
    assert report["train_images"] + report["heldout_images"] == 96
    want = np.bincount(codes["top"], minlength=2) / 96
    assert report["frequencies"]["top"] == pytest.approx(want, abs=1e-4)


def test_trains_a_few_steps_on_renders(faces: Path) -> None:
    ds = load_dataset(faces)
    model, report = train_classifier(ds.images, ds.codes, ds.vocab, epochs=2, batch=8, seed=0, max_steps=6)
    assert report["steps"] == 6
    assert set(report["heldout"]) == set(ds.vocab)
    for row in report["heldout"].values():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["majority"] <= 1
    probs = model.predict_proba(torch.zeros(3, 3, 32, 32))  # generator-style input at another size
    assert {k: tuple(v.shape) for k, v in probs.items()} == {k: (3, len(v)) for k, v in ds.vocab.items()}
    assert all(torch.allclose(p.sum(dim=1), torch.ones(3)) for p in probs.values())
    conf = factor_confidence(model, torch.zeros(2, 3, 16, 16))
    assert all(1 / len(ds.vocab[k]) - 1e-6 <= c <= 1 for k, c in conf.items())


def test_save_load_round_trip(tmp_path: Path) -> None:
    images, codes, vocab = _colour_world(32)
    model, report = train_classifier(images, codes, vocab, epochs=1, batch=8, seed=0)
    path = save_classifier(model, tmp_path / CLASSIFIER_FILE, {"report": report})
    back = load_classifier(path)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for k, p in model.predict_proba(x).items():
        torch.testing.assert_close(back.predict_proba(x)[k], p)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["vocab"] == {k: list(v) for k, v in vocab.items()} and "heldout" in side["report"]
    assert evaluate(back, images, codes).keys() == vocab.keys()
    path.with_suffix(".json").write_text("{}")
    with pytest.raises(ClassifierError, match="format"):
        load_classifier(path)


def test_bad_input_is_refused(monkeypatch, tmp_path: Path) -> None:
    images, codes, vocab = _colour_world(8)
    with pytest.raises(ClassifierError, match="codes outside"):
        train_classifier(images, {**codes, "colour": codes["colour"] + 5}, vocab)
    with pytest.raises(ClassifierError, match="one code per image"):
        train_classifier(images, {"colour": codes["colour"]}, vocab)
    with pytest.raises(ClassifierError, match="holdout"):
        split_indices(10, 1.5, 0)
    with pytest.raises(ClassifierError, match="power of two"):
        FactorClassifier(vocab, resolution=12)
    with pytest.raises(ClassifierError, match="square RGB"):
        FactorClassifier(vocab, 16).predict_proba(torch.zeros(1, 3, 16, 8))
    import sfvq.avatars as avatars

    monkeypatch.setattr(avatars, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ClassifierError, match="train-classifier"):
        load_avatars_classifier()


def test_cli_train_classifier(faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "clf"
    args = ["avatars", "train-classifier", "--data", faces, "--outdir", out, "--resolution", "16"]
    args += ["--max-steps", "3", "--batch", "8", "--quiet", "--device", "cpu"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "smile" in res.output and "mean held-out accuracy" in res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "avatars-classifier.json",
        "avatars-classifier.safetensors",
        "options.json",
    ]
    bad = CliRunner().invoke(main, [*map(str, args[:6]), "--resolution", "64"])
    assert bad.exit_code == 2 and "--resolution" in bad.output
