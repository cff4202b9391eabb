"""run_pipeline in-process: settings checks, stale files, the run-directory contract and its numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq import SFVQ
from sfvq.pipeline import STEPS, ConfigError, RunConfig, clear_stale, run_pipeline, validate
from sfvq.runs import run_ids
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
        ({"n": 10**9}, "--n", "GiB of memory in space features"),
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
    ours += ["report.json", "maps/tiles_5bit.png"]
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
    # one run id in every stamped file; the paths returned are the run's, not the staging folder's
    ids = run_ids(out)
    assert set(ids) == {"model.safetensors", "options.json", "summary.json", "latents.json"}
    assert set(ids.values()) == {options["run_id"]} and result.model.metadata_["run_id"] == options["run_id"]
    assert all(Path(p).is_relative_to(out) and Path(p).exists() for p in result.files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert options["options"]["truncation_psi"] == 0.7 and options["options"]["noise_mode"] == "const"


def test_rerun_with_fewer_bits_leaves_no_stale_pictures(sg2, tmp_path):
    out = tmp_path / "run"
    common = dict(
        network="sg2", outdir=out, n=64, edit_seeds=(0,), sigmas=(0.0,), walk_frames=3, progress=False
    )
    run_pipeline(RunConfig(bits=3, **common), G=sg2)
    assert (out / "maps" / "map_3bit.png").is_file() and (out / "edits" / "3bit_seg006.png").is_file()
    (out / "maps" / "mine.png").write_text("kept")  # not a run's file: carried into the new run
    (out / "directions.json").write_text("{}")
    run_pipeline(RunConfig(bits=2, **common), G=sg2)
    assert (out / "maps" / "mine.png").read_text() == "kept" and (out / "directions.json").is_file()
    (out / "maps" / "mine.png").unlink()
    maps = sorted(p.name for p in (out / "maps").iterdir())
    assert maps == ["map_2bit.png", "strip_2bit.png", "tiles_2bit.png"]
    assert sorted(p.name for p in (out / "edits").iterdir()) == [f"2bit_seg{i:03d}.png" for i in range(3)]


# ---------------------------------------------------------------------------------------------- planning
def test_plan_renders_everything_that_fits():
    from sfvq.pipeline import plan_renders

    kw = dict(bits=3, segment_usage=[1 / 7] * 7, n_seeds=2, sigmas=(-2.0, 0.0, 2.0), walk_frames=8)
    plan = plan_renders(**kw, seconds_per_image=0.5, available=None)
    # Maps 8 (2 bits already rendered) + baseline 4 + 8 + edits 7 x 4 + the sigma-0 column 2 + walk 8.
    assert plan.full_images == plan.images == 58 and plan.seconds == 29.0
    assert plan.map_bits == plan.baseline_bits == [2, 3] and plan.edit_segments == list(range(7))
    assert plan.walk_frames == 8 and plan.left_out == []
    assert plan_renders(**kw, seconds_per_image=0.5, available=29.0).left_out == []


def test_plan_renders_cuts_deterministically_to_the_budget():
    from sfvq.pipeline import plan_renders

    usage = [0.1, 0.3, 0.05, 0.3, 0.1, 0.1, 0.05]
    kw = dict(bits=3, segment_usage=usage, n_seeds=2, sigmas=(-2.0, 0.0, 2.0), walk_frames=8)
    plan = plan_renders(**kw, seconds_per_image=10.0, available=205.0)  # room for 20.5 images
    # maps: 3 bits (8) in 0.6 x 20.5; baseline: 4 > 0.25 x 12.5; edits: one grid (4 + 2) in 6.25;
    # the walk: the 6 images left. Segment 1 and 3 tie on usage: the lower index wins.
    assert plan.map_bits == [2, 3] and plan.baseline_bits == [] and plan.edit_segments == [1]
    assert plan.walk_frames == 6 and plan.images == 8 + 6 + 6 and plan.seconds == 200.0
    assert plan.left_out == [
        "the k-means baseline of the image smoothness at 2-3 bits",
        "edit grids of 6 of 7 segments (the least used)",
        "2 of 8 walk frames",
    ]
    again = plan_renders(**kw, seconds_per_image=10.0, available=205.0)
    assert again == plan
    none = plan_renders(**kw, seconds_per_image=10.0, available=-5.0)  # the budget is already spent
    assert none.map_bits == [2] and none.edit_segments == [] and none.walk_frames == 0
    assert none.left_out == [
        "maps at 3 bits",
        "the k-means baseline of the image smoothness at 2-3 bits",
        "the edit grids (all 7 segments)",
        "the walk",
    ]
    big = plan_renders(**{**kw, "bits": 6, "segment_usage": [0.1] * 7}, seconds_per_image=1.0, available=80)
    assert big.map_bits == [2, 4, 5]  # in 0.6 x 80 = 48 images, finest first: not 64, then 32 and 16
    no_zero = plan_renders(**{**kw, "sigmas": (-1.0, 1.0)}, seconds_per_image=1.0, available=None)
    assert no_zero.full_images == 8 + 12 + 7 * 4 + 8  # no shared sigma-0 column


def test_plan_renders_finest_first_within_the_maps_share():
    from sfvq.pipeline import plan_renders

    kw = dict(bits=6, segment_usage=[0.1] * 15, n_seeds=1, sigmas=(1.0,), walk_frames=10)
    plan = plan_renders(**kw, seconds_per_image=1.0, available=100.0)  # maps may take 60 images
    assert plan.map_bits == [2, 3, 4, 5]  # 64 does not fit in 60; 32 + 16 + 8 = 56 do
    assert "maps at 6 bits" in plan.left_out


def test_run_with_a_small_budget_renders_the_plan(sg2, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(
        network="sg2",
        outdir=out,
        bits=3,
        n=128,
        edit_seeds=(0, 1),
        sigmas=(-2.0, 0.0, 2.0),
        walk_frames=8,
        progress=False,
        time_budget=22_800.0,  # 1000 s per image: 0.9 x 22.8 = 20.5 images, whatever the steps took
    )
    result = run_pipeline(config, G=sg2, seconds_per_image=1000.0)
    plan = result.plan
    most_used = max(range(7), key=lambda i: (result.segments[i]["usage"], -i))
    assert plan.map_bits == [2, 3] and plan.baseline_bits == [] and plan.walk_frames == 6
    assert plan.edit_segments == [most_used]
    assert sorted(p.name for p in (out / "edits").iterdir()) == [f"3bit_seg{most_used:03d}.png"]
    assert [s["edit"] is not None for s in result.segments] == [i == most_used for i in range(7)]
    from PIL import Image

    with Image.open(out / "walks" / "walk.gif") as im:
        assert im.n_frames == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["render"]["plan"]["walk_frames"] == 6 and summary["render"]["resolution"] == 32
    assert [r["kmeans_image"] for r in summary["smoothness"]] == [None, None]
    assert all(r["sfvq_image"] is not None and r["kmeans_latent"] > 0 for r in summary["smoothness"])
    page = (out / "report.html").read_text()
    assert "Left out to fit the time budget" in page and "2 of 8 walk frames" in page


def test_run_at_a_preview_resolution_with_full_size_corners(sg2, tmp_path):
    from PIL import Image

    out = tmp_path / "run"
    config = RunConfig(
        network="sg2",
        outdir=out,
        bits=2,
        n=64,
        edit_seeds=(0,),
        sigmas=(0.0, 1.0),
        walk_frames=3,
        progress=False,
        preview_res=16,
        full_res_corners=(0, 3),
    )
    result = run_pipeline(config, G=sg2)
    assert result.plan.left_out == [] and result.plan.walk_frames == 3
    with Image.open(out / "maps" / "strip_2bit.png") as im:
        assert 4 * 16 <= im.width < 4 * 32  # 16 px tiles
    for k in (0, 3):
        with Image.open(out / "maps" / f"corner_2bit_{k:03d}.png") as im:
            assert im.size == (32, 32)
    full = LatentSpace.load(out, sg2).render(result.model.codebooks_[2][[0, 3]].float())  # as one batch
    from sfvq.generators.base import to_uint8

    with Image.open(out / "maps" / "corner_2bit_003.png") as im:
        np.testing.assert_array_equal(np.asarray(im), to_uint8(full)[1])
    with Image.open(out / "walks" / "walk.gif") as im:
        assert im.size == (16, 16)
    page = (out / "report.html").read_text()
    assert "rendered at 16 px, a preview of the generator&#x27;s 32 px" in page
    assert f"sfvq edit --model {out} --direction 2:SEGMENT" in page  # the published folder, not staging
    summary = json.loads((out / "summary.json").read_text())
    assert summary["render"]["preview"] is True and summary["render"]["full_resolution"] == 32
    # --full-res renders everything at full size.
    run_pipeline(RunConfig(**{**config.__dict__, "full_res": True, "full_res_corners": ()}), G=sg2)
    with Image.open(out / "walks" / "walk.gif") as im:
        assert im.size == (32, 32)
    assert not (out / "maps" / "corner_2bit_000.png").exists()  # stale outputs of the earlier run removed


def test_run_with_a_rosinality_network_stops_at_the_preview_block(tmp_path, monkeypatch):
    from PIL import Image

    from sfvq.generators.base import to_uint8
    from sfvq.generators.rosinality import RosinalityGenerator

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "generators"))
    from test_rosinality import SMALL, make_g_ema

    G = RosinalityGenerator(make_g_ema(SMALL, style_dim=64, n_mlp=2, seed=1), torch.zeros(64), name="ros")
    stops: list[int] = []
    synthesis = G._synthesis
    G._synthesis = lambda ws, mode, stop: stops.append(stop) or synthesis(ws, mode, stop)  # a spy
    out = tmp_path / "run"
    config = RunConfig(
        network="ros",
        outdir=out,
        bits=2,
        n=64,
        edit_seeds=(0,),
        sigmas=(0.0, 1.0),
        walk_frames=3,
        progress=False,
        preview_res=16,
        full_res_corners=(1,),
    )
    result = run_pipeline(config, G=G)
    # Maps (and the plan's timed corners), walk and edits all stopped after the 16 px block; the one
    # corner asked for at full size ran the whole network.
    assert stops.count(32) == 1 and set(stops) == {16, 32}
    with Image.open(out / "walks" / "walk.gif") as im:
        assert im.size == (16, 16)
    del G._synthesis
    ws = LatentSpace.load(out, G).to_full(result.model.codebooks_[2][[1]].float())  # (1, num_ws, 64)
    with Image.open(out / "maps" / "corner_2bit_001.png") as im:
        np.testing.assert_array_equal(np.asarray(im), to_uint8(G.synthesis(ws))[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["render"]["resolution"] == 16 and summary["render"]["full_resolution"] == 32


@pytest.mark.parametrize(
    "changes, option, message",
    [
        ({"preview_res": 4}, "--preview-res", ">= 8 px"),
        ({"time_budget": -1.0}, "--time-budget", ">= 0"),
        ({"time_budget": float("nan")}, "--time-budget", ">= 0"),
        ({"full_res_corners": (0, 8)}, "--full-res-corners", "corner 8 does not exist"),
        ({"render_batch_size": 0}, "--render-batch-size", ">= 1"),
    ],
)
def test_validate_render_settings(sg2, tmp_path, changes, option, message):
    config = RunConfig(**{"network": "x", "outdir": tmp_path, "bits": 3, "n": 100, **changes})
    with pytest.raises(ConfigError, match=message) as e:
        validate(config, sg2)
    assert e.value.option == option


def test_validate_predicts_running_out_of_memory(sg2, tmp_path, monkeypatch):
    monkeypatch.setattr("sfvq.membudget.available_memory", lambda device: 1000)  # bytes
    with pytest.raises(ConfigError, match="needs about") as e:
        validate(RunConfig(network="x", outdir=tmp_path, bits=3, n=100), sg2)
    assert e.value.option == "--device"
    assert not any(tmp_path.iterdir())


def test_device_defaults_to_cuda_where_available(monkeypatch):
    from click.testing import CliRunner

    from sfvq.cli import main
    from sfvq.cli.options import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
    for command in ("run", "generate", "sample", "edit"):
        r = CliRunner().invoke(main, [command, "--help"])
        assert "cuda if available, else cpu" in " ".join(r.output.split()), command


def test_steps_stop_at_the_deadline_and_say_so(sg2, tmp_path, monkeypatch):
    # A first estimate that was too low: every check against the deadline fails from the start. The edits
    # still render the most used segment, the k-means baseline renders nothing; the plan says so.
    from sfvq import pipeline

    monkeypatch.setattr(pipeline._Job, "_fits", lambda self, images: False)
    out = tmp_path / "run"
    config = RunConfig(
        network="sg2",
        outdir=out,
        bits=3,
        n=128,
        edit_seeds=(0,),
        sigmas=(0.0, 2.0),
        walk_frames=4,
        progress=False,
    )
    result = run_pipeline(config, G=sg2)
    most_used = max(range(7), key=lambda i: (result.segments[i]["usage"], -i))
    assert result.plan.edit_segments == [most_used] and result.plan.baseline_bits == []
    assert [p.name for p in (out / "edits").iterdir()] == [f"3bit_seg{most_used:03d}.png"]
    assert result.plan.left_out == [
        "the k-means baseline of the image smoothness at 2-3 bits",
        "edit grids of 6 of 7 segments (the least used)",
    ]
    assert all(r["kmeans_image"] is None for r in result.smoothness)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["render"]["plan"]["edit_segments"] == [most_used]
    assert summary["render"]["first_plan"]["edit_segments"] == list(range(7))  # what was planned
    assert "6 of 7 segments" in (out / "report.html").read_text()


def test_default_sigmas_are_chosen_from_the_data_and_recorded(sg2, tmp_path):
    from sfvq.directions import data_sigmas
    from sfvq.report import load_report_data, render_html

    out = tmp_path / "run"
    config = RunConfig(
        network="sg2", outdir=out, bits=2, n=128, edit_seeds=(0,), walk_frames=2, progress=False
    )
    assert config.sigmas is None and config.options()["sigmas"] is None
    run_pipeline(config, G=sg2)
    X = np.load(out / "latents.npy")
    C = SFVQ.load(out / "model.safetensors").codebooks_[2]
    want = data_sigmas(X, C[1:] - C[:-1])
    assert 0 < want.limit < 6  # within the data, not the old fixed +-6 std
    options = json.loads((out / "options.json").read_text())["options"]
    summary = json.loads((out / "summary.json").read_text())
    for record in (options, summary):
        assert record["sigmas"] == pytest.approx(list(want.sigmas))
        assert record["sigma_choice"]["rule"] == "data" and record["sigma_choice"]["quantile"] == 0.99
    page = (out / "report.html").read_text()
    assert "chosen from the data" in page and f"{want.limit:g} std" in page
    # report.json holds what the page was drawn from: drawn again, the same page.
    again = load_report_data(out, run_label=str(out))
    assert render_html(again) == page
    # --sigmas given: used as they are.
    run_pipeline(RunConfig(**{**config.__dict__, "sigmas": (0.0, 1.5)}), G=sg2)
    options = json.loads((out / "options.json").read_text())["options"]
    assert options["sigmas"] == [0.0, 1.5]
    assert options["sigma_choice"] == {"rule": "given", "sigmas": [0.0, 1.5]}
