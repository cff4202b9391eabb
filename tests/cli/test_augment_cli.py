"""``sfvq augment`` end to end: files, labels, determinism, errors (tiny StyleGAN2 W and DCGAN features)."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sfvq_runs import dcgan_test_run, invoke, sg2_test_run

from sfvq.generators.base import to_uint8


@pytest.fixture(scope="module")
def sg2_run(shared_dir, tmp_path_factory):
    run, model, space, X = sg2_test_run(shared_dir, tmp_path_factory)
    return run, model, space


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    run, model, space, X = dcgan_test_run(tmp_path_factory)
    return run, model, space


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("which", ["sg2", "dcgan"])
def test_augment_is_deterministic_and_labelled(which, sg2_run, dcgan_run, tmp_path):
    run, model, space = sg2_run if which == "sg2" else dcgan_run
    args = ["augment", "--model", run, "--segment", "4:5", "--n", "20", "--jitter", "0.1", "--seed", "3"]
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (first, second):
        res = invoke(*args, "--batch-size", "8", "--outdir", out)
        assert res.exit_code == 0, res.output
    a, b = _files(first), _files(second)
    a.pop("options.json"), b.pop("options.json")  # they name their own outdir
    assert a == b  # byte-identical images, latents, labels, preview
    assert len([k for k in a if k.startswith("images/")]) == 20
    res = invoke(*args[:-1], "4", "--outdir", other)
    assert res.exit_code == 0 and _files(other)["latents.npy"] != a["latents.npy"]

    with open(first / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and set(rows[0]) == {
        "index",
        "file",
        "segment",
        "bits",
        "t",
        "curve_t",
        "jitter",
        "seed",
    }
    assert {r["segment"] for r in rows} == {"4:5"} and {r["seed"] for r in rows} == {"3"}
    assert {r["jitter"] for r in rows} == {"0.1"}
    latents = np.load(first / "latents.npy")
    assert latents.shape == (20, model.n_features_in_) and latents.dtype == np.float32
    # each latent sits at its t on the segment, up to jitter orthogonal to it
    C = model.codebooks_[4].double().numpy()
    d = C[6] - C[5]
    t = np.array([float(r["t"]) for r in rows])
    np.testing.assert_allclose((latents - C[5]) @ d / (d @ d), t, atol=1e-4)
    # image k is the rendering of latent k
    for k in (0, 19):
        img = to_uint8(space.render(torch.from_numpy(latents[k : k + 1])))[0]
        assert np.array_equal(np.asarray(Image.open(first / rows[k]["file"])), img)
    opts = json.loads((first / "options.json").read_text())
    assert opts["command"] == "augment" and opts["options"]["segment"] == "4:5"
    assert opts["options"]["noise_mode"] == "const" and "truncation_psi" in opts["options"]
    side = json.loads((first / "latents.json").read_text())
    assert side["segment"] == "4:5" and side["shape"] == [20, model.n_features_in_]


def test_without_jitter_points_are_on_the_segment(sg2_run, tmp_path):
    run, model, _ = sg2_run
    res = invoke("augment", "--model", run, "--segment", "3:1", "--n", "5", "--outdir", tmp_path)
    assert res.exit_code == 0, res.output
    with open(tmp_path / "labels.csv", newline="") as f:
        t = np.array([float(r["t"]) for r in csv.DictReader(f)])
    C = model.codebooks_[3].double().numpy()
    expected = (1 - t)[:, None] * C[1] + t[:, None] * C[2]
    np.testing.assert_allclose(np.load(tmp_path / "latents.npy"), expected, atol=1e-5)


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--segment", "4:15"], "--segment", "segment 15 is out of range: the 4-bit curve has segments 0-14"),
        (["--segment", "4:1-3"], "--segment", "augmentation runs along one segment"),
        (["--segment", "9:0"], "--segment", "no 9-bit curve"),
        (["--segment", "4:1", "--n", "0"], "--n", "0 is not in the range"),
        (["--segment", "4:1", "--jitter", "-1"], "--jitter", "-1.0 is not in the range"),
    ],
)
def test_bad_augment_requests(sg2_run, tmp_path, args, option, message):
    run, _, _ = sg2_run
    res = invoke("augment", "--model", run, *args, "--outdir", tmp_path / "a")
    assert res.exit_code == 2, res.output
    assert option in res.output and message in res.output
    assert not (tmp_path / "a").exists()


def test_jitter_needs_the_latents_and_a_model_is_needed(sg2_run, tmp_path):
    run, _, _ = sg2_run
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "model.safetensors", bare / "model.safetensors")
    shutil.copy(run / "space.json", bare / "space.json")
    res = invoke(
        "augment", "--model", bare, "--segment", "4:1", "--jitter", "0.5", "--outdir", tmp_path / "a"
    )
    assert res.exit_code == 2 and "'--jitter'" in res.output and "needs the latents" in res.output
    res = invoke("augment", "--model", tmp_path / "none", "--segment", "4:1", "--outdir", tmp_path / "a")
    assert res.exit_code == 2 and "'--model'" in res.output
