"""run_pipeline in-process: settings checks, stale files, the run-directory contract and its numbers."""

import json

import numpy as np
import pytest
import torch

from sfvq import SFVQ
from sfvq.pipeline import STEPS, ConfigError, RunConfig, clear_stale, run_pipeline, validate
from sfvq.spaces import LatentSpace


@pytest.fixture(scope="module")
def dcgan():
    from sfvq.generators.registry import load_generator

    return load_generator("builtin:faces-dcgan")


@pytest.fixture(scope="module")
def sg2(shared_dir):
    from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir

    return stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")


@pytest.mark.parametrize(
    "changes, option, message",
    [
        ({"space": "w"}, "--space", "no W space"),
        ({"space": "z", "layer": "block1"}, "--layer", "needs --space features"),
        ({"layer": "block9"}, "--layer", "unknown layer 'block9'"),
        ({"n": 7}, "--n", "too few for a 3-bit curve"),
        ({"edit_bits": 4}, "--edit-bits", r"\[2, 3\]"),
        ({"sigmas": ()}, "--sigmas", "at least one sigma"),
        ({"edit_seeds": ()}, "--edit-seeds", "at least one seed"),
        ({"walk_frames": 1}, "--walk-frames", "at least 2 frames"),
        ({"bits": 1}, "--bits", "bits must lie"),
    ],
)
def test_validate_names_the_option(dcgan, tmp_path, changes, option, message):
    settings = {"network": "builtin:faces-dcgan", "outdir": tmp_path, "bits": 3, "n": 100}
    config = RunConfig(**{**settings, **changes})
    with pytest.raises(ConfigError, match=message) as e:
        validate(config, dcgan)
    assert e.value.option == option
    assert not any(tmp_path.iterdir())  # nothing written


def test_validate_defaults(dcgan, sg2, tmp_path):
    assert validate(RunConfig(network="x", outdir=tmp_path), dcgan) == "features"
    assert validate(RunConfig(network="x", outdir=tmp_path), sg2) == "w"
    assert RunConfig(network="x", outdir=tmp_path, bits=3).resolved_edit_bits() == 3
    assert RunConfig(network="x", outdir=tmp_path, bits=6).resolved_edit_bits() == 4


def test_clear_stale_removes_only_the_pipelines_files(tmp_path):
    ours = ["report.html", "options.json", "summary.json", "maps/map_5bit.png", "maps/strip_2bit.png"]
    ours += ["walks/walk.gif", "walks/walk.mp4", "edits/4bit_seg012.png"]
    theirs = ["notes.txt", "maps/my_favourite.png", "edits/sketch.png", "model.safetensors"]
    for name in ours + theirs:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = clear_stale(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == sorted(ours)
    assert all((tmp_path / name).exists() for name in theirs)


def test_run_pipeline_writes_the_run_directory_contract(sg2, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(
        network="sg2-fixture",
        outdir=out,
        bits=3,
        n=256,
        seed=1,
        truncation_psi=0.7,
        edit_seeds=(0, 2),
        sigmas=(-2.0, 0.0, 2.0),
        walk_frames=6,
        progress=False,
    )
    result = run_pipeline(config, G=sg2)
    assert list(result.timings) == list(STEPS)

    model = SFVQ.load(out / "model.safetensors")
    assert sorted(model.codebooks_) == [2, 3]
    meta = model.metadata_
    assert meta["network"] == "sg2-fixture" and meta["space"]["kind"] == "w"
    assert meta["space"]["truncation_psi"] == 0.7 and meta["data"]["n"] == 256
    space = LatentSpace.load(out, sg2)
    assert space.describe() == result.space.describe()
    X = np.load(out / "latents.npy")
    np.testing.assert_array_equal(X, result.latents)
    assert X.shape == (256, 32)
    side = json.loads((out / "latents.json").read_text())
    assert side["space"]["kind"] == "w" and side["seed"] == 1

    # Segment statistics of the edit bitrate (3 = min(bits, 4)) recomputed by hand.
    C = model.codebooks_[3].double()
    assert [s["segment"] for s in result.segments] == list(range(7))
    for s in result.segments:
        d = C[s["segment"] + 1] - C[s["segment"]]
        assert s["length"] == pytest.approx(float(d.norm()), rel=1e-5)
        assert s["std"] == pytest.approx(
            float((torch.from_numpy(X).double() @ (d / d.norm())).std(unbiased=False)), rel=1e-4
        )
        assert s["edit"] == out / "edits" / f"3bit_seg{s['segment']:03d}.png" and s["edit"].is_file()
    assert sum(s["usage"] for s in result.segments) == pytest.approx(1.0)

    summary = json.loads((out / "summary.json").read_text())
    assert [r["bits"] for r in summary["smoothness"]] == [2, 3]
    assert set(summary["empty_corners"]) == {"2", "3"}
    assert summary["files"]["report"] == "report.html"
    for r in summary["smoothness"]:
        assert all(
            np.isfinite(r[k]) and r[k] > 0
            for k in ("sfvq_image", "kmeans_image", "sfvq_latent", "kmeans_latent")
        )
    options = json.loads((out / "options.json").read_text())
    assert options["command"] == "run" and options["options"]["edit_bits"] == 3
    assert options["options"]["truncation_psi"] == 0.7 and options["options"]["noise_mode"] == "const"


def test_rerun_with_fewer_bits_leaves_no_stale_pictures(sg2, tmp_path):
    out = tmp_path / "run"
    common = dict(
        network="sg2", outdir=out, n=64, edit_seeds=(0,), sigmas=(0.0,), walk_frames=3, progress=False
    )
    run_pipeline(RunConfig(bits=3, **common), G=sg2)
    assert (out / "maps" / "map_3bit.png").is_file() and (out / "edits" / "3bit_seg006.png").is_file()
    run_pipeline(RunConfig(bits=2, **common), G=sg2)
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["map_2bit.png", "strip_2bit.png"]
    assert sorted(p.name for p in (out / "edits").iterdir()) == [f"2bit_seg{i:03d}.png" for i in range(3)]
