"""``sfvq edit`` end to end on a tiny StyleGAN2 (W, 8 style layers) and on the built-in DCGAN (features)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sfvq_runs import dcgan_test_run, invoke, sg2_test_run

from sfvq.generators.base import to_uint8
from sfvq.spaces import LatentSpace


@pytest.fixture(scope="module")
def sg2_run(shared_dir, tmp_path_factory):
    run, model, space, X = sg2_test_run(shared_dir, tmp_path_factory)
    return run, model, space


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    run, model, space, X = dcgan_test_run(tmp_path_factory)
    return run, model, space


def _png(path):
    return np.asarray(Image.open(path))


def test_w_space_edit_touches_only_the_named_layers(sg2_run, tmp_path):
    run, model, space = sg2_run
    out = tmp_path / "e"
    res = invoke("edit", "--model", run / "model.safetensors", "--direction", "4:3", "--layers", "2-4",
                 "--sigma", "-3,0,5", "--seeds", "0-2", "--images", "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "layers 2-4 of 0-7" in res.output
    edited = np.load(out / "latents.npy")  # (sigma, seed, layer, dim)
    assert edited.shape == (3, 3, 8, 32)
    base = space.encode_seeds([0, 1, 2]).numpy()  # the unedited W+ of the seeds
    assert np.array_equal(edited[1], base)  # sigma 0: exactly the unedited latents
    d = model.codebooks_[4][4] - model.codebooks_[4][3]
    d = (d / d.norm()).numpy()
    for k, s in ((0, -3.0), (2, 5.0)):
        delta = edited[k] - base
        assert np.array_equal(delta[:, :2], np.zeros_like(delta[:, :2]))  # layers 0-1 untouched
        assert np.array_equal(delta[:, 5:], np.zeros_like(delta[:, 5:]))  # layers 5-7 untouched
        np.testing.assert_allclose(delta[:, 2:5], np.broadcast_to(s * d, (3, 3, 32)), atol=1e-5)
    # Images: sigma 0 equals the unedited rendering, every other sigma differs from it.
    unedited = to_uint8(space.render_full(torch.from_numpy(base)))  # (3, H, W, C)
    for i, seed in enumerate([0, 1, 2]):
        assert np.array_equal(_png(out / f"images/seed{seed:04d}_sigma+0.png"), unedited[i])
        for tag in ("-3", "+5"):
            assert not np.array_equal(_png(out / f"images/seed{seed:04d}_sigma{tag}.png"), unedited[i])
    grid = Image.open(out / "grid.png")
    assert grid.size[0] >= 3 * 32 and grid.size[1] >= 3 * 32  # 3 columns (sigma) x 3 rows (seeds)
    opts = json.loads((out / "options.json").read_text())["options"]
    assert opts["layers"] == "2-4" and opts["layer_start"] == 2 and opts["layer_stop"] == 5
    assert opts["truncation_psi"] == 1.0 and opts["noise_mode"] == "const" and opts["num_ws"] == 8
    assert opts["resolved_direction"]["source"]["corners"] == [3, 4]


def test_saved_direction_brings_its_layers_and_sign(sg2_run, tmp_path):
    run, model, space = sg2_run
    res = invoke("directions", "--model", run, "--save", "pose", "--direction", "3:2", "--layers", "0-2",
                 "--negate", "--overwrite")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "layers 0-2" in res.output
    out = tmp_path / "e"
    res = invoke("edit", "--model", run, "--direction", "pose", "--sigma", "0,2", "--units", "std",
                 "--seeds", "4", "--trunc", "0.5", "--noise-mode", "random", "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "layers 0-2 of 0-7" in res.output and "truncation psi 0.5" in res.output
    edited = np.load(out / "latents.npy")
    space_half = LatentSpace.load(run, space.G)
    space_half.truncation_psi = 0.5
    base = space_half.encode_seeds([4]).numpy()
    assert np.array_equal(edited[0], base)
    from sfvq.directions import spec_direction

    d = spec_direction(model, "3:2", np.load(run / "latents.npy"))
    delta = edited[1] - base
    assert np.abs(delta[:, 3:]).max() == 0
    np.testing.assert_allclose(
        delta[0, :3], np.broadcast_to(-2 * d.std * d.vector.numpy(), (3, 32)), atol=1e-5
    )
    opts = json.loads((out / "options.json").read_text())["options"]
    assert opts["truncation_psi"] == 0.5 and opts["noise_mode"] == "random"
    assert opts["sigma_raw"] == pytest.approx([0.0, 2 * d.std])
    # An explicit --layers overrides the saved range.
    res = invoke(*"edit --direction pose --layers 7 --sigma 1 --seeds 0".split(), "--model", run,
                 "--outdir", tmp_path / "e2")  # fmt: skip
    assert res.exit_code == 0 and "layers 7 of 0-7" in res.output


def test_feature_space_edit_sigma_zero_is_the_unedited_image(dcgan_run, tmp_path):
    run, model, space = dcgan_run
    out = tmp_path / "e"
    res = invoke("edit", "--model", run, "--direction", "4:2-5", "--sigma", "0,6", "--seeds", "1,3",
                 "--images", "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "no style layers" in res.output
    full = space.encode_seeds([1, 3])
    unedited = to_uint8(space.render_full(full))
    edited = np.load(out / "latents.npy")
    assert np.array_equal(edited[0], full.numpy())
    for i, seed in enumerate([1, 3]):
        assert np.array_equal(_png(out / f"images/seed{seed:04d}_sigma+0.png"), unedited[i])
        assert not np.array_equal(_png(out / f"images/seed{seed:04d}_sigma+6.png"), unedited[i])
    assert json.loads((out / "options.json").read_text())["options"]["layers"] == "0"


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--direction", "nose"], "--direction", "unknown direction 'nose'"),
        (
            ["--direction", "4:15"],
            "--direction",
            "segment 15 is out of range: the 4-bit curve has segments 0-14",
        ),
        (["--direction", "7:1"], "--direction", "no 7-bit curve"),
        (["--direction", "4:1", "--layers", "6-9"], "--layers", "outside this space's layers 0-7"),
        (["--direction", "4:1", "--layers", "5-3"], "--layers", "reversed"),
        (["--direction", "4:1", "--layers", "x"], "--layers", "not a layer index"),
        (["--direction", "4:1", "--sigma", "1,nan"], "--sigma", "not a finite number"),
        (["--direction", "4:1", "--space", "z"], "--space", "fitted in space 'w'"),
    ],
)
def test_bad_edit_requests_are_usage_errors(sg2_run, tmp_path, args, option, message):
    run, _, _ = sg2_run
    res = invoke("edit", "--model", run, *args, "--outdir", tmp_path / "e")
    assert res.exit_code == 2, res.output
    assert option in res.output and message in res.output
    assert not (tmp_path / "e" / "options.json").exists()


def test_layers_on_a_space_without_layers(dcgan_run, tmp_path):
    run, _, _ = dcgan_run
    res = invoke("edit", "--model", run, "--direction", "4:1", "--layers", "0-1", "--outdir", tmp_path / "e")
    assert res.exit_code == 2 and "'--layers'" in res.output and "no style layers" in res.output


def test_missing_or_incomplete_runs(sg2_run, tmp_path):
    run, _, _ = sg2_run
    res = invoke(
        "edit", "--model", tmp_path / "nope.safetensors", "--direction", "4:1", "--outdir", tmp_path / "e"
    )
    assert res.exit_code == 2 and "'--model'" in res.output and "no such model file" in res.output
    res = invoke("edit", "--model", tmp_path, "--direction", "4:1", "--outdir", tmp_path / "e")
    assert res.exit_code == 2 and "without model.safetensors" in res.output
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    res = invoke(
        "edit", "--model", tmp_path / "x.safetensors", "--direction", "4:1", "--outdir", tmp_path / "e"
    )
    assert res.exit_code == 2 and "not an sfvq model" in res.output
    # A model alone (as `sfvq fit` makes it): no space.json, no latents.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "model.safetensors", bare / "model.safetensors")
    res = invoke("edit", "--model", bare, "--direction", "4:1", "--outdir", tmp_path / "e")
    assert res.exit_code == 2 and "pass --space w|z" in res.output
    res = invoke(
        "edit", "--model", bare, "--direction", "4:1", "--space", "features", "--outdir", tmp_path / "e"
    )
    assert res.exit_code == 2 and "defined by its PCA" in res.output
    res = invoke("edit", "--model", bare, "--direction", "4:1", "--space", "w", "--units", "std",
                 "--outdir", tmp_path / "e")  # fmt: skip
    assert res.exit_code == 2 and "'--units'" in res.output and "needs the latents" in res.output
    res = invoke(*"edit --direction 4:1 --space w --sigma 0 --seeds 0".split(), "--model", bare,
                 "--outdir", tmp_path / "ok")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = invoke(*"edit --direction 4:1 --space w --network builtin:faces-dcgan".split(), "--model", bare,
                 "--outdir", tmp_path / "e")  # fmt: skip
    assert res.exit_code == 2 and "no mapping network" in res.output


def test_a_model_without_a_recorded_network(sg2_run, tmp_path):
    from sfvq import SFVQ

    run, _, _ = sg2_run
    m = SFVQ.load(run / "model.safetensors")
    m.metadata_ = {}
    m.save(tmp_path / "model.safetensors")
    shutil.copy(run / "space.json", tmp_path / "space.json")
    res = invoke("edit", "--model", tmp_path, "--direction", "4:1", "--outdir", tmp_path / "e")
    assert res.exit_code == 2 and "pass --network" in res.output


def test_default_sigma_is_chosen_from_the_run_latents(sg2_run, tmp_path):
    from sfvq.directions import data_sigmas, spec_direction

    run, model, space = sg2_run
    d = spec_direction(model, "3:2", np.load(run / "latents.npy"))
    want = data_sigmas(np.load(run / "latents.npy"), d.vector)
    for units, scale in (("std", 1.0), ("raw", d.std)):
        out = tmp_path / units
        res = invoke("edit", "--model", run, "--direction", "3:2", "--units", units, "--seeds", "0",
                     "--outdir", out)  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "chosen from the data" in res.output
        opts = json.loads((out / "options.json").read_text())["options"]
        assert opts["sigma"] == pytest.approx([s * scale for s in want.sigmas], abs=1e-4)
        assert opts["sigma_raw"] == pytest.approx([s * d.std for s in want.sigmas], abs=1e-3)
        assert opts["sigma_choice"]["rule"] == "data" and max(opts["sigma"]) / scale < 6


@pytest.mark.parametrize("command", ["edit", "augment"])
def test_an_outdir_holding_the_run_is_refused_and_the_run_kept(sg2_run, command):
    """`--outdir RUN` once wrote the edit's latents.npy and options.json over the run's own."""
    run, model, space = sg2_run
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = {"edit": ["--direction", "4:3", "--seeds", "0"], "augment": ["--segment", "4:3", "--n", 2]}
    args = args[command]
    res = invoke(command, "--model", run / "model.safetensors", *args, "--outdir", run)
    assert res.exit_code == 2
    assert f"{run} holds a run (model.safetensors)" in res.output and "--outdir" in res.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
