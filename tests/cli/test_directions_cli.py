"""``sfvq directions`` (list, export, save) and ``sfvq import`` / ``sfvq export`` through the CLI."""

import json

import numpy as np
import pytest
import torch
from sfvq_runs import dcgan_test_run, invoke, sg2_test_run

from sfvq.directions import DirectionSet, load_run_directions, spec_direction


@pytest.fixture(scope="module")
def sg2_run(shared_dir, tmp_path_factory):
    run, model, space, X = sg2_test_run(shared_dir, tmp_path_factory)
    return run, model, X


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    run, model, space, X = dcgan_test_run(tmp_path_factory)
    return run, model, X


def test_list_as_json_and_table(sg2_run, tmp_path):
    run, model, X = sg2_run
    res = invoke("directions", "--model", run, "--bits", "3", "--format", "json")
    assert res.exit_code == 0, res.output
    listing = json.loads(res.output)
    rows = listing["segments"]
    assert listing["bits"] == 3 and [r["name"] for r in rows] == [f"3:{i}" for i in range(7)]
    C = model.codebooks_[3].double().numpy()
    for i, r in enumerate(rows):
        raw = C[i + 1] - C[i]
        assert r["bits"] == 3 and r["segment"] == str(i) and r["layers"] == "0-7"  # all 8 layers, inclusive
        assert r["length"] == pytest.approx(np.linalg.norm(raw))
        assert r["std"] == pytest.approx((X.astype(np.float64) @ (raw / np.linalg.norm(raw))).std(), rel=1e-5)
    res = invoke("directions", "--model", run / "model.safetensors", "--out", tmp_path / "seg3")
    assert res.exit_code == 0, res.output
    assert "15 segment directions at 4 bits" in res.output  # default: the final bitrate
    for col in ("name", "bits", "segment", "layers", "length", "std"):
        assert col in res.output
    ds = DirectionSet.load(tmp_path / "seg3.safetensors")
    assert len(ds) == 15 and ds.meta["num_ws"] == 8 and (tmp_path / "seg3.json").is_file()
    torch.testing.assert_close(ds["4:2"].vector, spec_direction(model, "4:2").vector)


def test_save_named_directions(sg2_run):
    run, model, _ = sg2_run
    res = invoke("directions", "--model", run, "--save", "smile", "--direction", "4:1-3", "--layers", "4-6")
    assert res.exit_code == 0, res.output
    assert "layers 4-6" in res.output
    saved = load_run_directions(run)
    assert saved["smile"].layers == (4, 7) and saved["smile"].source["corners"] == [1, 3]
    res = invoke("directions", "--model", run, "--save", "smile", "--direction", "4:2")
    assert res.exit_code == 2 and "already saved" in res.output and "'--save'" in res.output
    res = invoke("directions", "--model", run, "--save", "smile", "--direction", "4:2", "--overwrite")
    assert res.exit_code == 0 and load_run_directions(run)["smile"].layers is None
    res = invoke("directions", "--model", run, "--format", "json")
    assert [r["name"] for r in json.loads(res.output)["saved"]] == ["smile"]


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--save", "../up", "--direction", "4:1"], "--save", "looks like a path"),
        (["--save", "", "--direction", "4:1"], "--save", "non-empty"),
        (["--save", "4:1", "--direction", "4:1"], "--save", "kept for segment specs"),
        (["--save", "ok"], "--direction", "needs --direction"),
        (["--save", "ok", "--direction", "4:99"], "--direction", "segment 99 is out of range"),
        (
            ["--save", "ok", "--direction", "4:1", "--layers", "3-8"],
            "--layers",
            "outside this space's layers 0-7",
        ),
        (["--direction", "4:1"], "--save", "go with --save NAME"),
        (["--bits", "6"], "--bits", "no 6-bit curve"),
    ],
)
def test_bad_directions_requests(sg2_run, args, option, message):
    run, _, _ = sg2_run
    res = invoke("directions", "--model", run, *args)
    assert res.exit_code == 2, res.output
    assert option in res.output and message in res.output


def test_save_with_layers_on_a_feature_space_is_refused(dcgan_run):
    run, _, _ = dcgan_run
    res = invoke("directions", "--model", run, "--save", "x", "--direction", "4:1", "--layers", "0")
    assert res.exit_code == 2 and "'--layers'" in res.output and "no style layers" in res.output
    assert load_run_directions(run) is None


def test_import_and_export_the_papers_files(shared_dir, tmp_path):
    release = shared_dir / "fixtures/paper-release/stylegan2-ffhq"
    run = tmp_path / "paper"
    res = invoke("import", "codebooks", release / "codebooks", "--outdir", run)
    assert res.exit_code == 0, res.output
    assert (run / "model.safetensors").is_file() and (run / "options.json").is_file()
    res = invoke("import", "directions", release / "directions", "--from", "paper", "--run", run)
    assert res.exit_code == 0, res.output
    saved = load_run_directions(run)
    assert len(saved) == 11 and saved["hat"].layers == (0, 4)
    res = invoke("import", "directions", release / "directions", "--from", "paper", "--run", run)
    assert res.exit_code == 2 and "already saved" in res.output
    # Export both formats, then read them back.
    out = tmp_path / "export"
    assert invoke("export", "codebooks", "--model", run, "--outdir", out).exit_code == 0
    assert invoke("export", "directions", "--model", run, "--outdir", out).exit_code == 0
    for b in range(2, 7):
        ref = np.load(release / f"codebooks/codebook_{b}bit.npy")
        assert np.array_equal(np.load(out / f"codebook_{b}bit.npy"), ref)
    for name in saved.names:
        assert np.array_equal(np.load(out / f"{name}.npy"), np.load(release / f"directions/{name}.npy"))
    assert "rotation: W0-W2" in (out / "Layers.txt").read_text()
    res = invoke("import", "directions", out, "--from", "paper", "--out", tmp_path / "again")
    assert res.exit_code == 0, res.output
    again = DirectionSet.load(tmp_path / "again")
    assert {d.name: d.layers for d in again} == {d.name: d.layers for d in saved}
    # Segment directions export under file-safe names ("2:1" -> "2_1").
    res = invoke("export", "directions", "--model", run, "--bits", "2", "--outdir", tmp_path / "seg")
    assert res.exit_code == 0 and sorted(p.name for p in (tmp_path / "seg").glob("*.npy")) == [
        "2_0.npy",
        "2_1.npy",
        "2_2.npy",
    ]


def test_import_other_tools(tmp_path):
    rng = np.random.default_rng(0)
    b = rng.standard_normal((1, 8)).astype(np.float32)
    np.save(tmp_path / "smile_boundary.npy", b / np.linalg.norm(b))
    comp = np.linalg.qr(rng.standard_normal((8, 3)))[0].T.reshape(3, 1, 8).astype(np.float32)
    np.savez_compressed(
        tmp_path / "gs.npz",
        lat_comp=comp,
        lat_mean=np.zeros((1, 8), np.float32),
        lat_stdev=np.ones(3, np.float32),
    )
    res = invoke(
        "import",
        "directions",
        tmp_path / "smile_boundary.npy",
        "--from",
        "interfacegan",
        "--out",
        tmp_path / "i",
    )
    assert res.exit_code == 0, res.output
    assert DirectionSet.load(tmp_path / "i").names == ["smile_boundary"]
    res = invoke(
        "import",
        "directions",
        tmp_path / "gs.npz",
        "--from",
        "ganspace",
        "--count",
        "2",
        "--out",
        tmp_path / "g",
    )
    assert res.exit_code == 0, res.output
    assert DirectionSet.load(tmp_path / "g").names == ["pc0", "pc1"]
    res = invoke(
        "import", "directions", tmp_path / "gs.npz", "--from", "interfacegan", "--out", tmp_path / "x"
    )
    assert res.exit_code == 2 and "'SOURCES'" in res.output and "archive" in res.output
    res = invoke("import", "directions", tmp_path / "gs.npz", "--from", "ganspace")
    assert res.exit_code == 2 and "exactly one of --run" in res.output
    res = invoke("import", "codebooks", tmp_path, "--outdir", tmp_path / "m")
    assert res.exit_code == 2 and "holds no codebook_" in res.output


def test_imported_curves_drive_edits(sg2_run, shared_dir, tmp_path):
    """Curves in the paper's format for a generator -> a run that `sfvq edit` uses like a fitted one."""
    run, model, X = sg2_run
    pkl = run.parent / "sg2.pkl"
    assert invoke("export", "codebooks", "--model", run, "--outdir", tmp_path / "cb").exit_code == 0
    res = invoke("import", "codebooks", tmp_path / "cb", "--network", pkl, "--latents", run / "latents.npy",
                 "--outdir", tmp_path / "imp")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "imp/space.json").read_text())["num_ws"] == 8
    listing = json.loads(invoke("directions", "--model", tmp_path / "imp", "--format", "json").output)
    ref = json.loads(invoke("directions", "--model", run, "--format", "json").output)
    assert [r["std"] for r in listing["segments"]] == pytest.approx([r["std"] for r in ref["segments"]])
    for out, model_dir in ((tmp_path / "e_imp", tmp_path / "imp"), (tmp_path / "e_ref", run)):
        res = invoke(*"edit --direction 4:2 --layers 1-3 --units std --sigma -2,0,2 --seeds 0,1".split(),
                     "--model", model_dir, "--outdir", out)  # fmt: skip
        assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "e_imp/latents.npy"), np.load(tmp_path / "e_ref/latents.npy"))
    assert (tmp_path / "e_imp/grid.png").read_bytes() == (tmp_path / "e_ref/grid.png").read_bytes()
    # The paper's 512-D curves do not fit this 32-D generator.
    release = shared_dir / "fixtures/paper-release/stylegan2-ffhq"
    res = invoke("import", "codebooks", release / "codebooks", "--network", pkl, "--outdir", tmp_path / "bad")
    assert res.exit_code == 2 and "512-D" in res.output and "32-D" in res.output
    assert not (tmp_path / "bad" / "model.safetensors").exists()
