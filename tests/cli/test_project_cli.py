"""``sfvq project`` and ``sfvq locate`` end to end on builtin:avatars-sg2 with a tiny run; their errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sfvq_runs import invoke, make_run

AVATARS = "builtin:avatars-sg2"
FAST = ["--steps", "20", "--starts", "4", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny W run of the avatars generator (bitrates 2-4) and a photo: a face it drew, as a PNG."""
    import torch

    from sfvq.generators.base import to_uint8

    base = tmp_path_factory.mktemp("project-cli")
    model, space, X = make_run(base / "run", AVATARS, "w", n=400, bits=4)
    with torch.no_grad():
        face = to_uint8(space.render_full(space.encode_seeds([4321])))[0]
    photo = base / "face.png"
    Image.fromarray(face).resize((96, 96), Image.Resampling.LANCZOS).save(photo)
    return {"base": base, "run": base / "run", "photo": photo, "model": model, "X": X}


def test_the_defaults_written_out_match_the_library() -> None:
    from sfvq.cli import project as cli
    from sfvq.project import DEFAULT_MAX_PIXELS, ProjectionSettings

    s = ProjectionSettings()
    assert (cli.DEFAULT_STEPS, cli.DEFAULT_LR, cli.DEFAULT_STARTS, cli.DEFAULT_LATENT_NOISE) == (
        s.steps, s.lr, s.starts, s.latent_noise,
    )  # fmt: skip
    assert cli.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS


def test_project_writes_the_latent_the_pictures_and_nvidias_npz(world: dict[str, Any]) -> None:
    out = world["base"] / "proj"
    r = invoke("project", "--network", AVATARS, "--image", world["photo"], "--outdir", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "projected into w in 20 steps" in r.output and "PSNR" in r.output
    for name in ("compare.png", "projection.png", "target.png", "photo.png", "loss.png", "projection.json"):
        assert (out / name).is_file(), name
    with np.load(out / "projected_w.npz") as data:
        assert data["w"].shape == (1, 8, 128)
    assert np.load(out / "projected.npy").shape == (1, 128)
    summary = json.loads((out / "projection.json").read_text())
    assert summary["space"] == "w" and summary["settings"]["steps"] == 20 and summary["psnr"] > 10
    assert json.loads((out / "options.json").read_text())["command"] == "project"


def test_project_into_a_runs_space_in_w_plus(world: dict[str, Any]) -> None:
    out = world["base"] / "proj-plus"
    r = invoke(
        "project", "--run", world["run"], "--space", "w+", "--image", world["photo"], "--outdir", out, *FAST
    )
    assert r.exit_code == 0, r.output
    assert "projected into w+" in r.output
    assert np.load(out / "projected.npy").shape == (1, 8, 128)


def test_locate_places_edits_and_walks_a_photo(world: dict[str, Any]) -> None:
    out = world["base"] / "loc"
    r = invoke(
        "locate", "--run", world["run"], "--image", world["photo"], "--outdir", out, "--nearest", "2", *FAST
    )
    assert r.exit_code == 0, r.output
    placement = json.loads((out / "placement.json").read_text())
    assert sorted(placement["bits"]) == ["2", "3", "4"]
    four = placement["bits"]["4"]
    assert 0 <= four["t"] <= 15 and len(four["nearest"]) == 2 and 0 <= four["percentile"] <= 100
    assert placement["outlier"]["bits"] == 4 and isinstance(placement["outlier"]["off_map"], bool)
    assert placement["reference"] == "the run's latents"
    # the segments around its place at the finest bitrate, in std units (the run has latents)
    segs = [e["direction"] for e in placement["edits"]]
    assert segs and all(s.startswith("4:") for s in segs) and placement["edits"][0]["units"] == "std"
    for name in ("placement.png", "edits.png", "walk.gif", "compare.png", "projected_w.npz"):
        assert (out / name).is_file(), name
    walk = Image.open(out / "walk.gif")
    assert walk.n_frames == 24 * len(segs)
    verdict = "OFF THE MAP" if placement["outlier"]["off_map"] else "on the map"
    assert "bits: t =" in r.output and f"{verdict}: at 4 bits" in r.output


def test_locate_a_latent_file_gives_the_same_place(world: dict[str, Any]) -> None:
    src = world["base"] / "proj"
    if not (src / "projected_w.npz").is_file():
        pytest.skip("needs the projection of the test above")
    out = world["base"] / "loc-latent"
    edit = ["--no-walk", "--direction", "3:2", "--layers", "0-3", "--sigma", "-1,1", "--units", "raw"]
    r = invoke("locate", "--run", world["run"], "--latent", src / "projected_w.npz", "--outdir", out, *edit)
    assert r.exit_code == 0, r.output
    placement = json.loads((out / "placement.json").read_text())
    from sfvq.locate import place

    want = place(world["model"], np.load(src / "projected.npy")[0])
    assert placement["bits"]["4"]["t"] == pytest.approx(want.bits[4]["t"], abs=1e-3)
    assert placement["edits"][-1]["direction"] == "3:2" and placement["edits"][-1]["layers"] == "0-3"
    assert placement["edits"][-1]["sigma_raw"] == [-1.0, 1.0]
    assert not (out / "walk.gif").exists()
    npy = invoke("locate", "--run", world["run"], "--latent", src / "projected.npy", "--outdir",
                 world["base"] / "loc-npy", "--no-walk")  # fmt: skip
    assert npy.exit_code == 0, npy.output


# ---------------------------------------------------------------------------------------------- errors
def test_bad_images_are_clear_errors(world: dict[str, Any]) -> None:
    base = world["base"]
    text = base / "notes.png"
    text.write_text("not a picture")
    r = invoke("project", "--network", AVATARS, "--image", text, "--outdir", base / "e1", *FAST)
    assert r.exit_code == 2 and "is not an image that can be read" in r.output
    r = invoke("project", "--network", AVATARS, "--image", world["photo"], "--outdir", base / "e2",
               "--max-pixels", "1000", *FAST)  # fmt: skip
    assert r.exit_code == 2 and "too large: 96x96 = 9,216 pixels, over the limit of 1,000 pixels" in r.output
    r = invoke("project", "--network", AVATARS, "--image", base / "missing.png", "--outdir", base / "e3")
    assert r.exit_code == 2 and "no such image file" in r.output


def test_no_face_found_for_a_face_generator(world: dict[str, Any]) -> None:
    pytest.importorskip("dlib")
    grey = world["base"] / "grey.png"
    Image.new("RGB", (128, 128), (120, 120, 120)).save(grey)
    r = invoke("project", "--network", "builtin:faces-dcgan", "--image", grey, "--outdir",
               world["base"] / "e4", *FAST)  # fmt: skip
    assert r.exit_code == 2 and "no face found" in r.output and "--align no" in r.output


def test_bad_latents_and_option_mixes_are_clear_errors(world: dict[str, Any]) -> None:
    base = world["base"]
    np.save(base / "short.npy", np.zeros(64, np.float32))
    r = invoke("locate", "--run", world["run"], "--latent", base / "short.npy", "--outdir", base / "e5")
    assert r.exit_code == 2 and "shape (64,); space 'w' needs (128,) or (1, 128)" in r.output
    r = invoke("locate", "--run", world["run"], "--outdir", base / "e6")
    assert r.exit_code == 2 and "exactly one of --image" in r.output
    r = invoke("locate", "--run", world["run"], "--image", world["photo"], "--latent", base / "short.npy",
               "--outdir", base / "e7")  # fmt: skip
    assert r.exit_code == 2 and "exactly one of --image" in r.output
    r = invoke("project", "--image", world["photo"], "--outdir", base / "e8")
    assert r.exit_code == 2 and "give --network" in r.output
    r = invoke("project", "--network", AVATARS, "--space", "features", "--image", world["photo"],
               "--outdir", base / "e9")  # fmt: skip
    assert r.exit_code == 2 and "a feature space is a run's" in r.output
    r = invoke("locate", "--run", world["run"], "--latent", base / "short.npy", "--bits", "9",
               "--outdir", base / "e10")  # fmt: skip
    assert r.exit_code == 2 and "bitrates [2, 3, 4], not 9" in r.output


def test_the_commands_are_registered() -> None:
    r = invoke("--help")
    assert "project" in r.output and "locate" in r.output
