"""StyleSpace (``--space s``): the style codes of every style layer of a StyleGAN2/StyleGAN3, rendered
exactly, layer groups, edits in S, the saved space description and the commands end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import sfvq.generators.stylegan2 as sg2_module
import sfvq.generators.stylegan3 as sg3_module
from sfvq.cli import main
from sfvq.generators.stylegan import stylegan_from_fixture_dir
from sfvq.latents import sample_latents
from sfvq.parsing import check_space_name, split_space_name, style_group_range
from sfvq.spaces import LatentSpace

sys.path.insert(0, str(Path(__file__).resolve().parent / "cli"))

FIXTURES = ("sg2ada_uncond", "sg2ada_cond", "sg3_t", "sg3_r")
AVATARS = "builtin:avatars-sg2"
TOL = 1e-5  # the S path runs the same layer maths after each affine: equal up to float rounding


@pytest.fixture(scope="module")
def fixture_generators(shared_dir: Path) -> dict[str, object]:
    return {name: stylegan_from_fixture_dir(shared_dir / "fixtures" / "stylegan" / name) for name in FIXTURES}


@pytest.fixture(scope="module")
def avatars() -> object:
    from sfvq.generators.registry import load_generator

    return load_generator(AVATARS)


def _class(G: object) -> int | None:
    return 1 if G.c_dim else None


def _ws(G: object, n: int, seed: int, cutoff: int | None = None) -> torch.Tensor:
    z = torch.from_numpy(np.random.RandomState(seed).randn(n, G.z_dim).astype(np.float32))
    c = [_class(G)] * n if G.c_dim else None
    return G.mapping(z, c, 0.7, cutoff)  # (n, num_ws, w_dim)


# ---------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", FIXTURES)
def test_rendering_the_style_codes_of_ws_equals_rendering_the_ws(fixture_generators: dict, name: str) -> None:
    G = fixture_generators[name]
    ws = _ws(G, 3, seed=5, cutoff=2)  # truncation cutoff: the layers read different ws
    s = G.styles(ws)  # (3, style_dim)
    assert s.shape == (3, G.style_dim) and G.style_dim == sum(ch for _, _, ch in G.style_layers)
    ref = G.synthesis(ws)
    out = G.synthesis_from_styles_at(s)
    assert out.shape == ref.shape and (out - ref).abs().max().item() <= TOL * max(1.0, ref.abs().max().item())
    # Through the space: a seed's S code renders as its w does.
    space_s, space_w = LatentSpace(G, "s", class_idx=_class(G)), LatentSpace(G, "w", class_idx=_class(G))
    a = space_s.render_full(space_s.encode_seeds([3, 11]))
    b = space_w.render_full(space_w.encode_seeds([3, 11]))
    assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())


def test_exact_on_the_avatars_generator_also_in_previews(avatars: object) -> None:
    G = avatars
    ws = _ws(G, 4, seed=1)
    s = G.styles(ws)
    for res in (None, 16, 8):
        ref = G.synthesis_at(ws, res)
        out = G.synthesis_from_styles_at(s, res)
        assert out.shape == ref.shape and (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("shared", [True, False])
def test_shared_weight_and_per_sample_modulated_convs_agree_in_s(
    fixture_generators: dict, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    monkeypatch.setattr(sg2_module, "SHARED_WEIGHT_BATCHES", shared)
    monkeypatch.setattr(sg3_module, "SHARED_WEIGHT_BATCHES", shared)
    for name in ("sg2ada_uncond", "sg3_t"):
        G = fixture_generators[name]
        ws = _ws(G, 3, seed=2)
        ref, out = G.synthesis(ws), G.synthesis_from_styles_at(G.styles(ws))
        assert (out - ref).abs().max().item() <= TOL * max(1.0, ref.abs().max().item())


def test_fp16_flagged_blocks_in_reduced_precision_give_the_same_image_from_s(
    fixture_generators: dict,
) -> None:
    G = fixture_generators["sg2ada_cond"]  # num_fp16_res 4: blocks 8-32 are flagged
    assert any(b.use_fp16 for b in G.network.synthesis.blocks())
    ws = _ws(G, 3, seed=4)
    try:
        G.fp16_dtype = torch.bfloat16
        ref, out = G.synthesis(ws), G.synthesis_from_styles_at(G.styles(ws))
    finally:
        G.fp16_dtype = None
    assert (out - ref).abs().max().item() <= TOL * max(1.0, ref.abs().max().item())
    assert (out - G.synthesis(ws)).abs().max().item() > 0  # the reduced precision really ran


def test_style_layout_each_layer_reads_its_own_ws_entry(fixture_generators: dict) -> None:
    G = fixture_generators["sg2ada_uncond"]
    names = [name for name, _, _ in G.style_layers]
    assert names[:5] == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]
    idx = [i for _, i, _ in G.style_layers]
    assert idx == sorted(idx) and idx[0] == 0 and idx[-1] == G.num_ws - 1
    ws = _ws(G, 2, seed=0)
    moved = ws.clone()
    moved[:, 3] += 1.0  # read by b8.torgb and b16.conv0 only
    changed = (G.styles(moved) - G.styles(ws)).abs().amax(0)  # (style_dim,)
    start = 0
    for name, i, ch in G.style_layers:
        block = changed[start : start + ch]
        assert bool((block > 0).any()) == (i == 3), name
        start += ch
    b8 = G.network.synthesis.b8
    c0 = sum(ch for _, _, ch in G.style_layers[:2])
    assert torch.equal(G.styles(ws)[:, c0 : c0 + 64], b8.conv0.affine(ws[:, 1]))
    sg3 = fixture_generators["sg3_t"]
    assert sg3.style_layers[0] == ("input", 0, 4) and sg3.style_layers[-1][1] == sg3.num_ws - 1
    with pytest.raises(ValueError, match="style codes must have shape"):
        G.synthesis_from_styles_at(torch.zeros(1, G.style_dim + 1))


# ---------------------------------------------------------------------------------------------- groups
def test_group_syntax_and_ranges() -> None:
    assert split_space_name("s:Coarse") == ("s", "coarse") and split_space_name("w") == ("w", None)
    assert split_space_name("s: 4-7") == ("s", "4-7") and split_space_name("s:5-5") == ("s", "5")
    assert [style_group_range(g, 18) for g in ("coarse", "middle", "fine")] == [(0, 4), (4, 8), (8, 18)]
    assert [style_group_range(g, 8) for g in ("coarse", "middle", "fine")] == [(0, 3), (3, 6), (6, 8)]
    assert [style_group_range(g, 16) for g in ("coarse", "middle", "fine")] == [(0, 4), (4, 8), (8, 16)]
    assert style_group_range(None, 8) == (0, 8) and style_group_range("2-5", 8) == (2, 6)
    with pytest.raises(ValueError, match="outside the W\\+ layers 0-7"):
        style_group_range("6-9", 8)
    with pytest.raises(ValueError, match="not a style group"):
        split_space_name("s:top")
    with pytest.raises(ValueError, match="only StyleSpace"):
        split_space_name("w:coarse")
    assert check_space_name("s:Fine", ("w", "s"), "sfvq run") == "s:fine"
    with pytest.raises(ValueError, match="does not support space 's:fine'"):
        check_space_name("s:fine", ("w", "z"), "sfvq edit")
    with pytest.raises(ValueError, match="only StyleSpace"):
        check_space_name("w:fine", ("w", "s"), "sfvq run")


def test_a_group_is_its_layers_columns_and_the_rest_keep_the_mean_ws_codes(avatars: object) -> None:
    G = avatars
    full_space = LatentSpace(G, "s")
    middle = LatentSpace(G, "s:middle")
    assert middle.name == "s:middle" and middle.style_range == (3, 6)
    c0, c1 = middle.style_columns
    expected = [ch for _, i, ch in G.style_layers if 3 <= i < 6]
    assert middle.dim == c1 - c0 == sum(expected) and middle.full_dim == full_space.dim == G.style_dim
    assert LatentSpace(G, "s", group="2-5").name == "s:2-5"
    # Samples: the group's columns of the full S samples (the same seeded z stream as W).
    X_all = full_space.sample(24, seed=3, progress=False)
    X_mid = middle.sample(24, seed=3, progress=False)
    assert np.array_equal(X_mid, X_all[:, c0:c1])
    assert np.allclose(sample_latents(G, 24, "s:middle", seed=3, progress=False), X_mid, atol=1e-6)
    ws = sample_latents(G, 24, "w+", seed=3, progress=False).reshape(24, G.num_ws, G.w_dim)
    assert np.allclose(G.styles(torch.from_numpy(ws)).numpy(), X_all, atol=1e-5)
    # A curve point: the group's codes, the mean w's codes elsewhere; the mean w's own codes render as w_avg.
    mean = middle.mean_styles()
    full = middle.to_full(torch.from_numpy(X_mid[:2]))  # (2, 1, style_dim)
    assert full.shape == (2, 1, G.style_dim)
    assert torch.equal(full[:, 0, :c0], mean[:c0].expand(2, -1)) and torch.equal(
        full[:, 0, c1:], mean[c1:].expand(2, -1)
    )
    assert torch.equal(full[:, 0, c0:c1], torch.from_numpy(X_mid[:2]))
    w_avg = G.mean_w()[None, None].expand(1, G.num_ws, -1)
    assert (middle.render(mean[None, c0:c1]) - G.synthesis(w_avg)).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="only StyleSpace"):
        LatentSpace(G, "w", group="coarse")


def test_generators_without_style_layers_have_no_stylespace() -> None:
    from sfvq.generators.registry import load_generator

    G = load_generator("builtin:faces-dcgan")
    with pytest.raises(ValueError, match="no StyleSpace"):
        LatentSpace(G, "s")


# ---------------------------------------------------------------------------------------------- edits
def test_a_direction_edit_in_s_moves_only_the_groups_codes(avatars: object) -> None:
    space = LatentSpace(avatars, "s:coarse")
    c0, c1 = space.style_columns
    X = space.sample(64, seed=0, progress=False)
    codebook = torch.from_numpy(X[:4])  # (K, dim) stand-in corners
    direction = codebook[2] - codebook[1]  # a segment of the curve
    seeds = space.encode_seeds([0, 7])  # (2, 1, style_dim): the seeds' own codes on every layer
    edited = space.edit(seeds, direction, 2.0)
    delta = edited - seeds
    assert torch.allclose(delta[:, 0, c0:c1], 2.0 * direction.expand(2, -1))
    assert torch.equal(delta[:, 0, :c0], torch.zeros_like(delta[:, 0, :c0]))
    assert torch.equal(delta[:, 0, c1:], torch.zeros_like(delta[:, 0, c1:]))  # the latent's own codes stay
    images = space.render_edits(seeds, [direction], [-2.0, 0.0, 2.0])  # (S, M, T, C, H, W)
    assert images.shape[:3] == (2, 1, 3)
    plain = space.render_full(seeds)
    assert (images[:, 0, 1] - plain).abs().max().item() <= TOL  # sigma 0: the unedited image
    assert (images[:, 0, 2] - space.render_full(edited)).abs().max().item() <= TOL
    assert (images[:, 0, 2] - plain).abs().max().item() > 1e-3  # the edit changes the image
    with pytest.raises(ValueError, match="outside this space's layers"):
        space.edit(seeds, direction, 1.0, (0, 2))


# ---------------------------------------------------------------------------------------------- persistence
def test_save_and_load_keep_the_group(avatars: object, fixture_generators: dict, tmp_path: Path) -> None:
    space = LatentSpace(avatars, "s:1-4", truncation_psi=0.8)
    space.save(tmp_path)
    d = json.loads((tmp_path / "space.json").read_text())
    assert (d["kind"], d["group"], d["style_range"], d["style_columns"]) == (
        "s", "1-4", [1, 5], list(space.style_columns),
    )  # fmt: skip
    back = LatentSpace.load(tmp_path, avatars)
    assert back.name == "s:1-4" and back.describe() == space.describe()
    v = torch.from_numpy(space.sample(2, seed=1, progress=False))
    assert torch.equal(back.render(v), space.render(v))
    with pytest.raises(ValueError, match="wrong generator"):
        LatentSpace.load(tmp_path, fixture_generators["sg3_t"])


# ---------------------------------------------------------------------------------------------- commands
def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def s_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s-run") / "run"
    r = _cli(
        "run", "--network", AVATARS, "--space", "s:middle", "--bits", "3", "--n", "64", "--epochs", "1",
        "--walk-frames", "4", "--edit-seeds", "0", "--sigmas", "-2,0,2", "--quiet", "--outdir", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow  # the run itself takes 2-8 s on 2 busy cores
def test_sfvq_run_fits_a_curve_in_stylespace(s_run: Path) -> None:
    from sfvq import SFVQ

    space = json.loads((s_run / "space.json").read_text())
    assert space["kind"] == "s" and space["group"] == "middle" and space["style_range"] == [3, 6]
    model = SFVQ.load(s_run / "model.safetensors")
    assert model.codebooks_[3].shape == (8, space["dim"])
    assert np.load(s_run / "latents.npy").shape == (64, space["dim"])
    assert (s_run / "report.html").is_file() and any((s_run / "edits").iterdir())


@pytest.mark.slow  # the run itself takes 2-8 s on 2 busy cores
def test_sfvq_edit_and_augment_on_a_stylespace_run(s_run: Path, tmp_path: Path) -> None:
    r = _cli("edit", "--model", s_run, "--direction", "3:2", "--seeds", "0-1", "--sigma", "-2,0,2",
             "--outdir", tmp_path / "edit")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "space s:middle" in r.output and (tmp_path / "edit" / "grid.png").is_file()
    r = _cli("augment", "--model", s_run, "--segment", "3:1", "--n", "4", "--outdir", tmp_path / "aug")
    assert r.exit_code == 0, r.output
    dim = json.loads((s_run / "space.json").read_text())["dim"]
    assert np.load(tmp_path / "aug" / "latents.npy").shape == (4, dim)
    r = CliRunner().invoke(
        main, ["edit", "--model", str(s_run), "--direction", "3:2", "--layers", "0-3", "--outdir",
               str(tmp_path / "bad")],
    )  # fmt: skip
    assert r.exit_code == 2 and "'--layers'" in r.output


def test_sfvq_sample_writes_style_codes(tmp_path: Path) -> None:
    r = _cli("sample", "--network", AVATARS, "--space", "s:fine", "--n", "5", "--outdir", tmp_path)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "latents.json").read_text())
    assert meta["space"] == "s:fine" and "G.styles(ws)" in meta["layout"]
    assert np.load(tmp_path / "latents.npy").shape == (5, 64)
    r = CliRunner().invoke(
        main, ["sample", "--network", AVATARS, "--space", "s:9", "--outdir", str(tmp_path)]
    )
    assert r.exit_code == 2 and "outside the W+ layers 0-7" in r.output


def test_a_curve_fitted_on_sampled_style_codes_edits_with_space_given(tmp_path: Path) -> None:
    """``sfvq sample --space s:GROUP`` -> ``sfvq fit`` (no space.json) -> ``sfvq edit --space s:GROUP``."""
    r = _cli("sample", "--network", AVATARS, "--space", "s:coarse", "--n", "64", "--outdir", tmp_path / "lat")
    assert r.exit_code == 0, r.output
    r = _cli("fit", "--latents", tmp_path / "lat" / "latents.npy", "--bits", "2", "--epochs", "1",
             "--outdir", tmp_path / "fit")  # fmt: skip
    assert r.exit_code == 0, r.output
    edit = [
        "edit",
        "--model",
        str(tmp_path / "fit"),
        "--network",
        AVATARS,
        "--direction",
        "2:1",
        "--seeds",
        "0",
    ]
    r = _cli(*edit, "--space", "s:coarse", "--outdir", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert "space s:coarse (its style group)" in r.output and (tmp_path / "e" / "grid.png").is_file()
    r = CliRunner().invoke(main, [*edit, "--space", "s", "--outdir", str(tmp_path / "e2")])
    assert r.exit_code != 0 and "256-D" in r.output and "640-D" in r.output


# ---------------------------------------------------------------------------------------------- benchmark
def test_the_ground_truth_benchmark_measures_stylespace_curves(avatars: object, tmp_path: Path) -> None:
    from sfvq.avatars.benchmark import GroundTruthConfig, markdown_report, run_ground_truth
    from sfvq.avatars.classifier import load_avatars_classifier

    clf = load_avatars_classifier()
    config = GroundTruthConfig(n=3, steps=(1.0,), k=2, bits=(2,), methods=("random",), fit_n=200, mi_n=32,
                               shuffles=2, random_k=2, style_spaces=("s:Coarse", "s"))  # fmt: skip
    d = run_ground_truth(avatars, clf, config).to_dict()
    assert list(d["methods"]) == ["sfvq-2bit", "sfvq-s:coarse-2bit", "sfvq-s-2bit", "random"]
    for name in ("sfvq-s:coarse-2bit", "sfvq-s-2bit"):
        s = d["methods"][name]
        assert 1 <= s["directions"] <= 3 and np.asarray(d["effects"][name]).shape == (
            s["directions"],
            1,
            len(d["groups"]),
        )
        assert max(s["main_shift"]) > 0  # the S edits move the faces' factors
    assert "| sfvq-s:coarse-2bit |" in markdown_report(d)
    with pytest.raises(ValueError, match="listed twice"):
        GroundTruthConfig(style_spaces=("s:coarse", "s:Coarse")).check()
    with pytest.raises(ValueError, match="style spaces are s or s:GROUP"):
        GroundTruthConfig(style_spaces=("w",)).check()
    with pytest.raises(ValueError, match="outside the W\\+ layers"):
        run_ground_truth(avatars, clf, GroundTruthConfig(style_spaces=("s:6-9",)))
    r = CliRunner().invoke(
        main, ["avatars", "benchmark", "--style-spaces", "s:top", "--outdir", str(tmp_path / "b"), "--quiet"]
    )
    assert r.exit_code == 2 and "not a style group" in r.output
